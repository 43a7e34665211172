#!/usr/bin/env bash
# Time from `aira up --local` to the first answered chat message, on a fresh data folder:
# up (the runtime already built), sign up, token, conversation, post, poll until answered.
#   bench/local-first-answer.sh [RUNS]   → one JSON line per run and the medians
set -euo pipefail
RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/aira-target}
cargo build --quiet --workspace --manifest-path "$ROOT/Cargo.toml"
AIRA="$CARGO_TARGET_DIR/debug/aira"
export AIRA_RUNTIME_BIN="$CARGO_TARGET_DIR/debug/aira-runtime"
WORK=$(mktemp -d /tmp/aira-first.XXXX)
printf 'stack: firstanswer\nservices:\n  api: { role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }\n  worker: { role: worker, cpu: 256, memory: 512 }\n' >"$WORK/stack.yaml"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cd "$WORK"
trap '"$AIRA" down --local stack.yaml --purge >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 "$RUNS"); do
  "$AIRA" down --local stack.yaml --purge >/dev/null 2>&1 || true
  python3 - "$AIRA" "$PORT" <<'PY'
import json, subprocess, sys, time, urllib.request
aira, port = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
def call(method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    req.add_header("Origin", base)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")
t0 = time.perf_counter()
subprocess.run([aira, "up", "--local", "stack.yaml", "--listen", f"127.0.0.1:{port}"], check=True, capture_output=True)
t_up = time.perf_counter()
creds = {"email": "first@example.com", "password": "correct horse battery staple", "keep_history": True}
call("POST", "/v1/auth/signup", creds)
token = call("POST", "/v1/auth/tokens", creds)["token"]
conv = call("POST", "/v1/conversations", {}, token)["id"]
t_post = time.perf_counter()
msg = call("POST", f"/v1/conversations/{conv}/messages", {"content": "hello"}, token)["id"]
while call("GET", f"/v1/messages/{msg}", None, token).get("status") != "answered":
    time.sleep(0.005)
t_end = time.perf_counter()
print(json.dumps({"up_ms": round((t_up - t0) * 1000), "post_to_answer_ms": round((t_end - t_post) * 1000),
                  "up_to_first_answer_ms": round((t_end - t0) * 1000)}))
PY
done
