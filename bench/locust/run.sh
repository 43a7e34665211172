#!/usr/bin/env bash
# Locust against the local target (`aira-runtime serve`, as `aira up --local` runs it):
#   bench/locust/run.sh USERS [RUN_TIME] [PROCESSES]
# SIGNUP_SECS (default 40): the users arrive over this many seconds (sign-ups hash with argon2id).
# A ramp (40 s) measures the sign-up burst; spread over the run (e.g. 180 of 240 s), the chat path.
# Builds the release runtime, starts it on a fresh data folder, runs the scenario headless, and
# prints one JSON line: users, requests/s, p50/p95/p99 per endpoint, failures, message counts,
# peak resident memory (VmHWM) of the server. Exit 1 when a message was lost or failed.
set -euo pipefail
USERS=${1:?users}
RUN_TIME=${2:-3m}
PROCESSES=${3:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${AIRA_CACHE:-/var/tmp/aira-cache}
VENV="$CACHE/locust-venv"
if [ ! -x "$VENV/bin/locust" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check locust==2.47.0
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/aira-target}
cargo build --quiet --release -p aira-runtime --manifest-path "$ROOT/Cargo.toml"
ulimit -n 65536 2>/dev/null || ulimit -n 16384 || true

OUT=$(mktemp -d /tmp/aira-locust.XXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Every simulated user signs up from this one address: no per-address sign-up limit here.
AIRA_AUTH_ADDRESS_RATE_PER_MINUTE=1000000000 AIRA_AUTH_ADDRESS_RATE_BURST=1000000000 \
AIRA_LOG=warn "$CARGO_TARGET_DIR/release/aira-runtime" serve --listen "127.0.0.1:$PORT" --data "$OUT/data" \
  >"$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

SIGNUP_SECS=${SIGNUP_SECS:-40}
SPAWN=$(python3 -c "print(max($USERS / $SIGNUP_SECS, 1))")
set +e
AIRA_SUMMARY="$OUT/messages.json" "$VENV/bin/locust" -f "$ROOT/bench/locust/locustfile.py" \
  --host "http://127.0.0.1:$PORT" --headless --users "$USERS" --spawn-rate "$SPAWN" --run-time "$RUN_TIME" \
  --stop-timeout 130 --processes "$PROCESSES" --csv "$OUT/locust" --only-summary >"$OUT/locust.log" 2>&1
STATUS=$?
set -e
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")
python3 - "$OUT" "$USERS" "$HWM" "$STATUS" <<'PY'
import csv, json, sys
out, users, hwm, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = {}
for r in csv.DictReader(open(f"{out}/locust_stats.csv")):
    rows[f"{r['Type']} {r['Name']}".strip()] = {
        "count": int(r["Request Count"]), "failures": int(r["Failure Count"]),
        "rps": round(float(r["Requests/s"]), 1),
        "p50": r["50%"], "p95": r["95%"], "p99": r["99%"],
    }
messages = json.load(open(f"{out}/messages.json"))
print(json.dumps({"users": users, "requests": rows, "messages": messages,
                  "server_peak_rss_mib": round(hwm / 1024), "locust_exit": status, "out": out}))
PY
exit "$STATUS"
