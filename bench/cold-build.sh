#!/usr/bin/env bash
# The first builds a new user meets, cold: a fresh clone, an empty cargo home (every crate
# downloaded) and an empty target folder. For each REV (default: HEAD), in one run so the
# figures compare (the machine is shared):
#   1. the README's run command, `cargo run --no-default-features -- up --local` (it also builds
#      aira-runtime; before the feature `aws` existed the flag changed nothing), timed, with the
#      number of AWS SDK crates (aws-*) it compiles, then `down --local --purge`;
#   2. the build of the test command that follows it, `cargo test --workspace --no-run`, timed,
#      with the number of aws-* crates it compiles that the run command had compiled already;
#   3. an incremental `cargo build` after touching src/output.rs.
# Prints one Markdown row per REV for docs/performance.md.
#   bench/cold-build.sh [REV...]      e.g. bench/cold-build.sh HEAD~1 HEAD
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
revs=("$@")
if [ ${#revs[@]} -eq 0 ]; then revs=(HEAD); fi
work=$(mktemp -d /var/tmp/aira-cold.XXXXXX)
trap 'rm -rf "$work"' EXIT
secs() { echo "$2 - $1" | bc; }
# The aws-* crates (name and version) a build log shows compiled.
aws_crates() { grep -oE '^ *Compiling aws-[^ ]+ v[^ ]+' "$1" | awk '{print $2, $3}' | sort -u; }
# shellcheck disable=SC2016 # Markdown's backticks, not shell
printf '| revision | run command (s) | aws-* crates it compiles | then `cargo test --workspace --no-run` (s) | aws-* crates compiled again | incremental after touching src/output.rs (s) |\n|---|---|---|---|---|---|\n'
for rev in "${revs[@]}"; do
  sha=$(git -C "$repo" rev-parse --short "$rev")
  dir="$work/$sha"
  git clone -q "$repo" "$dir"
  git -C "$dir" checkout -q "$sha"
  export CARGO_HOME="$work/cargo-home-$sha" CARGO_TARGET_DIR="$work/target-$sha"
  # The toolchain stays rustup's; only the registry and its downloads start empty.
  cd "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  t0=$(date +%s.%N)
  cargo run --locked --no-default-features -- up --local --listen "127.0.0.1:$port" >"$work/up-$sha.log" 2>&1 </dev/null
  t1=$(date +%s.%N)
  "$CARGO_TARGET_DIR/debug/aira" down --local --purge >/dev/null 2>&1 || true
  cargo test --workspace --locked --no-run >"$work/test-$sha.log" 2>&1
  t2=$(date +%s.%N)
  built=$(aws_crates "$work/up-$sha.log" | wc -l)
  again=$(comm -12 <(aws_crates "$work/up-$sha.log") <(aws_crates "$work/test-$sha.log") | wc -l)
  touch src/output.rs
  t3=$(date +%s.%N)
  cargo build --locked -q
  t4=$(date +%s.%N)
  printf '| %s | %.0f | %s | %.0f | %s | %.1f |\n' "$sha" "$(secs "$t0" "$t1")" "$built" "$(secs "$t1" "$t2")" "$again" "$(secs "$t3" "$t4")"
  cd "$repo"
  rm -rf "$CARGO_TARGET_DIR" "$CARGO_HOME" "$dir"
done
