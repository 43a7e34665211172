# shellcheck shell=bash
# Sourced by scripts/test after scripts/moto.sh: installs the pinned llm-katan (an LLM server for
# tests that speaks the OpenAI API and Bedrock's Converse API) into the same venv under
# $AIRA_CACHE and exports AIRA_LLM_KATAN, its executable. The runtime's tests start one per test.

LLM_KATAN_VERSION=0.22.0
CACHE=${AIRA_CACHE:-/var/tmp/aira-cache}
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("llm-katan"))' 2>/dev/null || true)" != "$LLM_KATAN_VERSION" ]; then
  printf '[%s] installing llm-katan==%s\n' "$(basename "$0")" "$LLM_KATAN_VERSION" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "llm-katan==$LLM_KATAN_VERSION"
fi
export AIRA_LLM_KATAN="$VENV/bin/llm-katan"
