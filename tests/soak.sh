#!/usr/bin/env bash
# The long version of the load-under-failure test (host-harness/tests/soak.rs):
# Envoy 1.40 at concurrency 2, upstreams killed/restarted and the inventory
# changed under load; fails on any client-visible error.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
SOAK_SECONDS="${SOAK_SECONDS:-60}" SOAK_CLIENTS="${SOAK_CLIENTS:-6}" \
  cargo test --release -p host-harness --test soak -- --nocapture
