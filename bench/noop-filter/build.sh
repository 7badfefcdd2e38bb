#!/usr/bin/env bash
# Builds the no-op filter exactly like the Makefile builds the real one:
# wasm32-wasip1 release (opt-level z, lto, codegen-units 1, panic abort),
# then the same wasm-opt flags. Output: build/noop_filter.wasm (repo root).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
cargo build --quiet --release --target wasm32-wasip1 --target-dir "$root/target/bench-wasm"
mkdir -p "$root/build"
src="$root/target/bench-wasm/wasm32-wasip1/release/noop_filter.wasm"
out="$root/build/noop_filter.wasm"
if command -v wasm-opt >/dev/null 2>&1; then
  wasm-opt -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext \
    --enable-nontrapping-float-to-int --enable-mutable-globals --enable-multivalue --enable-reference-types \
    "$src" -o "$out"
else
  cp "$src" "$out"
fi
echo "$out"
