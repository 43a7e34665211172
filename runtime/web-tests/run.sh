#!/usr/bin/env bash
# Browser tests of the aira-runtime web page, in headless Debian chromium driven by
# playwright-core. Works on a fresh machine as root with CI=true and no stdin:
#   1. installs Debian's chromium if /usr/bin/chromium is missing (scripts/apt.sh: sudo when not root);
#   2. installs playwright-core (npm ci from package-lock.json) into runtime/web-tests/node_modules;
#   3. builds aira-runtime (cargo, honouring CARGO_TARGET_DIR);
#   4. starts `aira-runtime serve` on a free loopback port with a temporary data folder;
#   5. runs tests/*.test.js (node:test); screenshots go to tests/artifacts/ at the repo root;
#   6. stops the server and exits with the tests' status.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export DEBIAN_FRONTEND=noninteractive

if [[ ! -x /usr/bin/chromium ]]; then
  # shellcheck source=scripts/apt.sh
  source "$ROOT/scripts/apt.sh"
  apt_install chromium
fi

cd "$HERE"
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error </dev/null
else
  npm install --no-audit --no-fund --loglevel=error </dev/null
fi

cd "$ROOT"
if [[ -n "${AIRA_RUNTIME_BIN:-}" && -x "${AIRA_RUNTIME_BIN}" ]]; then
  # The caller (scripts/test) built it already.
  BIN="$AIRA_RUNTIME_BIN"
else
echo "web-tests: building aira-runtime" >&2
# WEB_TESTS_CARGO_ARGS: extra cargo flags (e.g. --release), split on spaces.
# shellcheck disable=SC2086
BIN="$(cargo build ${WEB_TESTS_CARGO_ARGS:-} -p aira-runtime --bin aira-runtime --message-format=json </dev/null \
  | node -e '
      let last = "";
      require("readline").createInterface({ input: process.stdin }).on("line", (l) => {
        try {
          const m = JSON.parse(l);
          if (m.reason === "compiler-artifact" && m.executable && m.target.name === "aira-runtime") last = m.executable;
        } catch {}
      }).on("close", () => console.log(last));
    ')"
fi
if [[ -z "$BIN" || ! -x "$BIN" ]]; then
  echo "web-tests: could not find the aira-runtime binary after cargo build" >&2
  exit 2
fi

DATA="$(mktemp -d)"
LOG="$DATA/server.log"
PORT="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
AIRA_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data "$DATA/data" >"$LOG" 2>&1 </dev/null &
SERVER=$!
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

export AIRA_WEB_URL="http://127.0.0.1:$PORT"
export AIRA_RUNTIME_BIN="$BIN"
export AIRA_ARTIFACTS="$ROOT/tests/artifacts"
mkdir -p "$AIRA_ARTIFACTS"

node -e '
  const url = process.env.AIRA_WEB_URL + "/healthz";
  const deadline = Date.now() + 30000;
  (async () => {
    for (;;) {
      try { if ((await fetch(url)).ok) return; } catch {}
      if (Date.now() > deadline) { console.error("web-tests: server did not start"); process.exit(1); }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
' || { cat "$LOG" >&2; exit 2; }

cd "$HERE"
status=0
node --test --test-concurrency=1 tests/*.test.js </dev/null || status=$?
if [[ $status -ne 0 ]]; then
  echo "web-tests: failed; server log follows" >&2
  tail -n 50 "$LOG" >&2 || true
fi
exit $status
