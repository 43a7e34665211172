#!/usr/bin/env bash
# What one change to the runtime costs in the build that ships it: the static `aira-runtime`
# in cargo profile PROFILE (default `image`, the command `aira image build` runs; `release`
# for trees from before that profile existed), rebuilt after touching its crate root,
# for TREE (default: this checkout) and BASE_TREE, interleaved ROUNDS times into one target directory (the
# dependencies are shared, so each figure is the runtime crate's own compile and link), with
# the binary's size. Prints Markdown rows for docs/performance.md; compare the two trees of one
# run only (the machine is shared).
#
#   bench/runtime-build.sh BASE_TREE [TREE]   e.g. worktrees of a commit and of the one before it
set -euo pipefail
base=${1:?usage: bench/runtime-build.sh BASE_TREE [TREE]}
here=${2:-$(cd "$(dirname "$0")/.." && pwd)}
rounds=${ROUNDS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/aira-target}
export RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'
profile=${PROFILE:-image}
build() { (cd "$1" && cargo build --locked --profile "$profile" --target x86_64-unknown-linux-gnu -p aira-runtime --bin aira-runtime -q); }
bin=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/$profile/aira-runtime
for tree in "$base" "$here"; do build "$tree"; done # warm-up: the dependencies of both
for round in $(seq 1 "$rounds"); do
  for tree in "$base" "$here"; do
    touch "$tree/runtime/src/lib.rs"
    start=$(date +%s.%N)
    build "$tree"
    end=$(date +%s.%N)
    printf '| %s | %d | %.1f | %d |\n' "$(cd "$tree" && git rev-parse --short HEAD)" "$round" \
      "$(echo "$end - $start" | bc)" "$(stat -c %s "$bin")"
  done
done
