#!/usr/bin/env bash
# Wall time of `aira plan` of the canonical stack once it is up (moto through the conforming
# proxy, as the tests run aira), ROUNDS times (default 5), interleaved with a baseline binary when
# one is given, each plan's JSON compared byte for byte with the baseline's:
#
#   bench/plan.sh [BASELINE_BIN]
#
# The baseline brings the stack up; then both binaries plan the same state, and the plan of a
# changed stack (an endpoint more, a bigger task, a higher maximum). Then this binary plans a
# first `up` of the canonical stack without `--image` from a folder that never built the image
# (`cold`: it decides from the fingerprint of the runtime's sources, builds nothing, and says
# so), beside the same plan with `--image` (`cold-image`) measured in the same rounds. Rows are
# Markdown for docs/performance.md. The machine is shared: only ratios measured together mean
# something.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=${1:-}
rounds=${ROUNDS:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/aira-target}
cargo build --locked -q --bin aira
cargo build --locked -q -p aira-testkit --example proxy
bin="$CARGO_TARGET_DIR/debug/aira"
source scripts/moto.sh
work=$(mktemp -d)
"$CARGO_TARGET_DIR/debug/examples/proxy" "$AIRA_TEST_ENDPOINT" >"$work/proxy.url" &
proxy_pid=$!
trap 'kill $proxy_pid 2>/dev/null || true; stop_moto; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do [ -s "$work/proxy.url" ] && break; sleep 0.1; done
proxy=$(cat "$work/proxy.url")

export AWS_REGION=us-east-1 AIRA_DNS_RESOLVER=127.0.0.1:9 NO_COLOR=1
"$CACHE/venv/bin/python" - "$AIRA_TEST_ENDPOINT" <<'EOF'
import sys, boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1")
boto3.client("route53", **kw).create_hosted_zone(Name="example.com", CallerReference="bench-plan")
boto3.client("secretsmanager", **kw).create_secret(Name="aira/openai", SecretString="sk-bench")
EOF
# moto's ECS reports one running task a service: a count of 1 lets the deployment complete.
sed 's/count: 2, port/count: 1, port/' stacks/aira.yaml >"$work/stack.yaml"
sed -e 's/endpoints: \[sqs,/endpoints: [sqs, monitoring,/' -e 's/cpu: 256, memory: 512, count: 1, port/cpu: 512, memory: 1024, count: 1, port/' \
  -e 's/max: 10,/max: 12,/' "$work/stack.yaml" >"$work/changed.yaml"
image=127.0.0.1:5999/aira/runtime@sha256:$(printf '2%.0s' $(seq 1 64))
plan() { "$1" plan "$2" --image "$image" --endpoint-url "$proxy" --output json 2>"$work/plan.err" || { cat "$work/plan.err" >&2; return 2; }; }
"${baseline:-$bin}" up "$work/stack.yaml" --image "$image" --endpoint-url "$proxy" --yes >/dev/null 2>"$work/up.err" ||
  { cat "$work/up.err" >&2; exit 2; }

echo "| binary | stack | round | seconds |"
echo "|---|---|---|---|"
binaries=("this:$bin")
[ -n "$baseline" ] && binaries+=("baseline:$baseline")
for round in $(seq 1 "$rounds"); do
  for file in stack changed; do
    for entry in "${binaries[@]}"; do
      label=${entry%%:*} b=${entry#*:}
      start=$(date +%s.%N)
      plan "$b" "$work/$file.yaml" >"$work/$file-$label.json" || { cat "$work/$file-$label.json" >&2; exit 2; }
      end=$(date +%s.%N)
      printf '| %s | %s | %d | %.2f |\n' "$label" "$file" "$round" "$(echo "$end - $start" | bc)"
    done
  done
done
sed 's/^stack: aira/stack: cold/' "$work/stack.yaml" >"$work/cold.yaml"
fresh=$(mktemp -d -p "$work")
for round in $(seq 1 "$rounds"); do
  for variant in cold cold-image; do
    args=()
    [ "$variant" = cold-image ] && args=(--image "$image")
    start=$(date +%s.%N)
    (cd "$fresh" && "$bin" plan "$work/cold.yaml" "${args[@]}" --endpoint-url "$proxy" --output json) \
      >"$work/$variant.json" 2>"$work/$variant.err" || { cat "$work/$variant.err" >&2; exit 2; }
    end=$(date +%s.%N)
    printf '| this | %s | %d | %.2f |\n' "$variant" "$round" "$(echo "$end - $start" | bc)"
  done
done
jq -e '.image.build == true' "$work/cold.json" >/dev/null || { echo "the cold plan does not say it builds" >&2; exit 1; }
[ ! -e "$fresh/.aira" ] || { echo "the cold plan built something in $fresh" >&2; exit 1; }
echo "cold: $(jq -r .image.reason "$work/cold.json")"
if [ -n "$baseline" ]; then
  for file in stack changed; do
    cmp -s "$work/$file-this.json" "$work/$file-baseline.json" ||
      { echo "the plans of $file.yaml differ between the binaries" >&2; exit 1; }
  done
  echo "the plans of both stacks are byte for byte the same for both binaries"
fi
