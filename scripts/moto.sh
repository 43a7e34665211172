# shellcheck shell=bash
# Sourced by scripts/test and bench/*.sh: installs the pinned moto server in a venv under
# $AIRA_CACHE and starts it on a free loopback port; exports AIRA_TEST_ENDPOINT and test
# credentials; stops it on exit.

MOTO_VERSION=5.1.22
CACHE=${AIRA_CACHE:-/var/tmp/aira-cache}
mkdir -p "$CACHE"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating a Python venv in $VENV"
  python3 -m venv "$VENV"
fi
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)" != "$MOTO_VERSION" ]; then
  log "installing moto[server]==$MOTO_VERSION"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# ACM issues a DNS-validated certificate after this many seconds (moto's default: 60).
export MOTO_ACM_VALIDATION_WAIT="${MOTO_ACM_VALIDATION_WAIT:-6}"
MOTO_PORT=$(free_port)
MOTO_LOG="$CACHE/moto-$MOTO_PORT.log"
# ACM issues a certificate 6 s after its request (so that the wait is seen even on a loaded machine); every ECS service
# reports 1 running task (moto runs none): a service of count 1 completes its deployment, a
# larger one never does (the failed-deployment test).
# scripts/moto_server.py is moto's server with the resources IAM authorizes named as AWS names
# them (for the IAM-enforced run of scripts/deployed).
MOTO_ACM_VALIDATION_WAIT=$MOTO_ACM_VALIDATION_WAIT MOTO_ECS_SERVICE_RUNNING=1 \
  "$VENV/bin/python" "$(dirname "${BASH_SOURCE[0]}")/moto_server.py" -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
stop_moto() { kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; rm -f "$MOTO_LOG"; }
trap stop_moto EXIT
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$MOTO_PID" 2>/dev/null; then log "the moto server exited:"; cat "$MOTO_LOG" >&2; exit 2; fi
  sleep 0.2
done
log "moto server $MOTO_VERSION on 127.0.0.1:$MOTO_PORT (pid $MOTO_PID)"

export AIRA_TEST_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
# Nothing from the developer's own AWS set-up may leak in.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_DEFAULT_PROFILE
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
