#!/usr/bin/env bash
# A long life of the deployed shape with hostile traffic alongside (bench/soak.rs, the `soak`
# bench of aira-runtime): the real `aira-runtime api` and `aira-runtime worker` binaries (release
# profile, as deployed; AIRA_RUNTIME_BIN to run another) on SQS and DynamoDB of the moto server through the
# test proxy, a fake model served by the driver. Legitimate users post SOAK_MESSAGES (100000)
# messages and follow each to its answer while a sign-in flood, slow/huge/empty prompts, a deep
# conversation read in pages and exported, hoarded event streams and account deletions racing
# sign-ins run alongside. Says whether anything is lost, how /healthz latency, the api's memory
# and its rate limiters behave over the run, and the messages per second the shape sustains.
# Settings (environment, defaults): SOAK_MESSAGES (100000; e.g. 2000 for a quick run),
# SOAK_USERS (200), SOAK_CONCURRENCY (64 messages in flight), SOAK_TURNS_PER_CONVERSATION (50),
# SOAK_MAX_SECS (5400, the whole run), SOAK_DRAIN_SECS (120), SOAK_STALL_SECS (300 without an
# accepted message ends the load), SOAK_MAX_BACKLOG (2000, the api's AIRA_MAX_BACKLOG),
# SOAK_HOSTILE (1; 0 for none), SOAK_FLOOD_PER_SEC (10), SOAK_SLOW_EVERY_SECS (60),
# SOAK_HUGE_EVERY_SECS (30), SOAK_EMPTY_EVERY_SECS (10), SOAK_DEEP_MESSAGES (500),
# SOAK_DEEP_EVERY_MS (1500), SOAK_PAGE_EVERY_MS (2000), SOAK_EXPORT_EVERY_SECS (10),
# SOAK_HOARD_STREAMS (200), SOAK_HOARD_CYCLE_SECS (60), SOAK_DELETE_EVERY_SECS (15),
# SOAK_POLL_MAX_MS (3000, the longest pause between two reads of a message). Progress on
# stderr every 10 s; the last line of stdout is a JSON object, also written to BENCH_OUT
# (default $TMPDIR/aira-soak-last-run.txt); every second's sample goes to SOAK_SAMPLES_OUT
# (default $TMPDIR/aira-soak-samples.csv), the children's logs to SOAK_LOG_DIR (default
# $TMPDIR/aira-soak-logs). Figures go to docs/performance.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
# The driver reports the CPU time moto used (it bounds the rate on one machine).
export SOAK_MOTO_PID=$MOTO_PID
out=${BENCH_OUT:-${TMPDIR:-/tmp}/aira-soak-last-run.txt}
if [ -z "${AIRA_RUNTIME_BIN:-}" ]; then
  cargo build --release -p aira-runtime --bin aira-runtime
  target_dir=$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  export AIRA_RUNTIME_BIN="$target_dir/release/aira-runtime"
fi
cargo bench --profile dev -p aira-runtime --bench soak | tee "$out"
