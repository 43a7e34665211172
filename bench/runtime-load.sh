#!/usr/bin/env bash
# The runtime's POST path at 2,000 concurrent clients against a bare axum handler measured in
# the same run by the same load generator; worker throughput; end-to-end latency; memory.
# (runtime/benches/load.rs; figures in docs/performance.md and runtime/PERFORMANCE-NOTES.md.)
set -euo pipefail
exec "$(dirname "$0")/../runtime/bench/run.sh" "$@"
