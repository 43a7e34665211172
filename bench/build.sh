#!/usr/bin/env bash
# Incremental build times of the `aira` binary after touching one file, ROUNDS times each,
# interleaved, printed as Markdown rows for docs/performance.md. Compare two trees in one run
# (the machine is shared: only ratios measured together mean something):
#
#   bench/build.sh [TREE] [FILE...]
#
# TREE defaults to this checkout; FILEs default to one engine file and one kind of the AWS
# provider. For a tree of before the crate split (one package), name its files, e.g.
#   bench/build.sh /tmp/old src/plan.rs src/provider/aws/sqs.rs
# Each tree builds into its own target directory under /var/tmp, warmed up first.
set -euo pipefail
tree=${1:-$(cd "$(dirname "$0")/.." && pwd)}
shift || true
files=("$@")
if [ ${#files[@]} -eq 0 ]; then files=(crates/engine/src/plan.rs crates/aws/src/sqs.rs src/output.rs); fi
rounds=${ROUNDS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/aira-target}
cd "$tree"
cargo build --locked --bin aira -q
for round in $(seq 1 "$rounds"); do
  for f in "${files[@]}"; do
    touch "$f"
    start=$(date +%s.%N)
    cargo build --locked --bin aira -q
    end=$(date +%s.%N)
    printf '| %s | %s | %d | %.1f |\n' "$(basename "$tree")" "$f" "$round" "$(echo "$end - $start" | bc)"
  done
done
