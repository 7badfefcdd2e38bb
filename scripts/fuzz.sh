#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets of fuzz/ for SECONDS each.
#
#   scripts/fuzz.sh SECONDS            all targets (make fuzz: 60, make fuzz-short: 10)
#   FUZZ_TARGETS="engine filter" scripts/fuzz.sh 300
#
# Works on the stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# -Z flags). Builds every target once, in one cargo invocation, into
# fuzz/target (kept between runs, so a rerun only rebuilds what changed).
# Each target starts from its committed seeds (fuzz/seeds/<target>/) copied
# into fuzz/corpus/<target>/ (git-ignored; it grows from run to run).
# Crashing inputs land in fuzz/artifacts/<target>/; the script exits
# non-zero if any target crashed. It prints, per target, the number of
# inputs tried (libFuzzer's stat::number_of_executed_units).
#
# Environment: FUZZ_TARGETS (default: all), FUZZ_JOBS (targets run at the
# same time; default: the number of CPUs, at most 4), FUZZ_ARGS (extra
# libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-}
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -eq 0 ]; then
  echo "usage: $0 SECONDS" >&2
  exit 2
fi
read -r -a TARGETS <<< "${FUZZ_TARGETS:-config metadata engine filter}"
JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$JOBS" -gt 4 ] && JOBS=4
[ "$JOBS" -lt 1 ] && JOBS=1

log() { printf '==> %s\n' "$*" >&2; }

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  log "cargo install --locked cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# No sanitizer: the filter is safe Rust, and libFuzzer's coverage with
# debug assertions and overflow checks (cargo-fuzz's defaults) is what
# finds panics; ASan would halve the executions per second. 16 codegen
# units: a rebuild after a filter change takes seconds instead of a minute,
# for no measurable loss of executions per second.
log "cargo fuzz build (release, debug assertions, overflow checks) for ${TRIPLE}"
cargo fuzz build --fuzz-dir fuzz --sanitizer none --codegen-units 16 --target "$TRIPLE"
BIN=fuzz/target/$TRIPLE/release

declare -A EXTRA=(
  [config]="-dict=fuzz/dicts/config.dict -max_len=8192"
  [metadata]="-max_len=4096"
  [engine]="-max_len=4096"
  [filter]="-max_len=8192"
)

run_target() {
  local t=$1
  local corpus=fuzz/corpus/$t artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  if [ -d "fuzz/seeds/$t" ]; then
    cp -f fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  fi
  # shellcheck disable=SC2086
  "$BIN/$t" "$corpus" \
    -max_total_time="$SECS" \
    -timeout=20 \
    -rss_limit_mb=2048 \
    -print_final_stats=1 \
    -artifact_prefix="$artifacts/" \
    ${EXTRA[$t]:-} ${FUZZ_ARGS:-} \
    > "$artifacts/fuzz.log" 2>&1
  echo $? > "$artifacts/exit-code"
}

log "running ${TARGETS[*]} for ${SECS}s each, ${JOBS} at a time"
declare -A RC=()
running=0
for t in "${TARGETS[@]}"; do
  if [ ! -x "$BIN/$t" ]; then
    echo "unknown fuzz target: $t" >&2
    exit 2
  fi
  rm -f fuzz/artifacts/"$t"/fuzz.log fuzz/artifacts/"$t"/exit-code
  (set +e; run_target "$t") &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait
for t in "${TARGETS[@]}"; do
  RC[$t]=$(cat "fuzz/artifacts/$t/exit-code" 2>/dev/null || echo 99)
done

failed=0
printf '\n%-10s %12s %8s %8s  %s\n' target inputs "exec/s" corpus result
for t in "${TARGETS[@]}"; do
  logf=fuzz/artifacts/$t/fuzz.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logf" | tail -1)
  [ -z "$execs" ] && execs=$(sed -n 's/^#\([0-9]*\).*DONE.*/\1/p' "$logf" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logf" | tail -1)
  size=$(find "fuzz/corpus/$t" -type f | wc -l)
  if [ "${RC[$t]}" -eq 0 ]; then
    result=ok
  else
    result="CRASH (libFuzzer exit ${RC[$t]})"
    failed=1
  fi
  printf '%-10s %12s %8s %8s  %s\n' "$t" "${execs:-?}" "${speed:-?}" "$size" "$result"
done
echo

if [ "$failed" -ne 0 ]; then
  for t in "${TARGETS[@]}"; do
    [ "${RC[$t]}" -eq 0 ] && continue
    logf=fuzz/artifacts/$t/fuzz.log
    echo "---- $t: $logf"
    grep -E "panicked at|^thread '|ERROR: libFuzzer|SUMMARY|Test unit written|Base64" -A2 "$logf" | head -40 || tail -40 "$logf"
    echo
  done
  cat >&2 <<'EOF'
A target crashed. Replay the input with
  fuzz/target/<triple>/release/<target> fuzz/artifacts/<target>/crash-<sha1>
then save it under fuzz/regressions/<target>/ so that
fuzz-drivers/tests/regressions.rs replays it on every `cargo test`.
EOF
  exit 1
fi
echo "fuzz: all targets ran ${SECS}s without a crash"
