#!/usr/bin/env bash
# What aira-runtime asks of DynamoDB and SQS: requests per answered message, per open event
# stream per minute and per idle task per minute, counted by the test proxy in front of the moto
# server (bench/runtime_cost.rs, the `cost` bench of aira-runtime). Request counts do not depend
# on the machine or the build, so it runs in the dev profile. Settings: COST_USERS (200),
# COST_MESSAGES (2), COST_STREAMS (50), COST_IDLE_SECS / COST_STREAM_SECS (60), COST_PROMPT_BYTES
# (0: each message padded to that size, and echoed as its answer), COST_STREAMED (20 answers of 500
# tokens streamed at 50 a second, each followed on its event stream, whole then streamed),
# COST_FLUSH_MS (400: the worker's AIRA_STREAM_FLUSH_MS); the output is
# also written to BENCH_OUT (default $TMPDIR/aira-cost-last-run.txt). Figures go to
# docs/performance.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
out=${BENCH_OUT:-${TMPDIR:-/tmp}/aira-cost-last-run.txt}
cargo bench --profile dev -p aira-runtime --bench cost | tee "$out"
