#!/usr/bin/env bash
# `aira up` of the network layer with 200 ms injected per AWS call, at the default concurrency
# and at concurrency 1, against its critical path. ROUNDS=N repeats (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/moto.sh
# The dev profile: the figures are dominated by the injected latency, and it is already built.
cargo bench --bench network --locked --profile dev
