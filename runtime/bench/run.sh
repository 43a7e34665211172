#!/usr/bin/env bash
# Runs the load generator (runtime/benches/load.rs) in an optimised build and keeps its output.
# Not a timed test: figures go to runtime/PERFORMANCE-NOTES.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# Thin LTO over the AWS SDK takes long to link; the figures do not need it.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
out=${BENCH_OUT:-${TMPDIR:-/tmp}/aira-bench-last-run.txt}
cargo bench -p aira-runtime --bench load | tee "$out"
