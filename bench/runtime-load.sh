#!/usr/bin/env bash
# The runtime's POST path at 2,000 concurrent clients against a bare axum handler measured in
# the same run by the same load generator; worker throughput; end-to-end latency; memory.
# Runs the load generator (bench/runtime_load.rs, the `load` bench of aira-runtime) in an
# optimised build and keeps its output. Not a timed test: figures go to docs/performance.md
# by hand. Settings: BENCH_CLIENTS, BENCH_SECS, … (see bench/runtime_load.rs); the output is
# also written to BENCH_OUT (default $TMPDIR/aira-bench-last-run.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# Thin LTO over the AWS SDK takes long to link; the figures do not need it.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
out=${BENCH_OUT:-${TMPDIR:-/tmp}/aira-bench-last-run.txt}
cargo bench -p aira-runtime --bench load | tee "$out"
