#!/usr/bin/env bash
# The guide's steps 3, 4 and 6 (../shared/reference/
# multicluster-zone-region-failover-guide.txt) against the stack that
# scripts/compose.sh brought up from envoy/docker-compose.yaml. Run by that
# script only: it needs `dc` (docker compose on the run's copy of envoy/) on
# PATH, ENVOY_CID and COMPOSE_RUN.
#
# Same steps and expectations as `make demo` (host-harness/src/bin/demo.rs),
# with what a compose user has to act with:
#   scaling a deployment  = the CDS file rewritten and renamed onto
#                           demo/cds.yaml (the compose file's header says so);
#   an app answering 503  = the pod's container recreated with
#                           http-echo's -status-code=503 (an override file,
#                           docker compose up -d --no-deps <pod>), and back
#                           with the compose file alone;
#   a pod going away      = docker compose stop / start <pod>.
# One difference in order from `make demo`: a stopped container's address
# does not refuse connections, it does not answer (each attempt takes the
# cluster's 1 s connect_timeout), so the connect-failure check runs on its
# own, with us-east-1a scaled away, instead of inside the 3 s ejection of
# the us-east-1a pod.
#
# Requests go to the published 127.0.0.1 ports, one at a time, ~2 ms apart,
# like the guide's curl loop. A response names its pod: http-echo answers
# with the pod's name, also with 503; Envoy's own replies (connect failures)
# are matched to the attempted address through the access log (`D` lines,
# Envoy's stdout), by x-request-id.
# Exit status: 0 all checks passed, 1 one failed, 2 a step could not be played.
set -euo pipefail

ADMIN=http://127.0.0.1:9901
HOST=in-ambient.httpbin.mesh.internal:8000
PATH_=/hostname
ABC=in-ambient-7d8f9b6c54-abc12   # cluster1-network us-east-1 us-east-1a
DEF=in-ambient-7d8f9b6c54-def34   # cluster1-network us-east-1 us-east-1b
XYZ=in-ambient-8e9f0c7d65-xyz98   # cluster2-network us-west-2 us-west-2a
UVW=in-ambient-8e9f0c7d65-uvw56   # cluster2-network us-west-2 us-west-2b
PODS=("$ABC" "$DEF" "$XYZ" "$UVW")
DEMO=$COMPOSE_RUN/envoy/demo
METRIC=wasmcustom.locality_failover

tmp=$(mktemp -d "${TMPDIR:-/tmp}/locality-failover-steps.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$DEMO/cds.yaml" "$tmp/cds.orig.yaml"
passed=0
failed=0
revision=0
summary=()

# Every engine call is bounded (dc, the compose wrapper, bounds itself).
PODMAN=$(type -P podman)
podman() { timeout 60 "$PODMAN" "$@"; }
abort() { printf 'compose: ERROR: %s\n' "$*" >&2; exit 2; }
short() { echo "${1##*-}"; }

# address -> pod, from the CDS file (JSON after its comment lines)
declare -A POD_OF
while read -r addr name; do POD_OF[$addr]=$name; done < <(python3 - "$tmp/cds.orig.yaml" <<'PY'
import json, sys
doc = json.loads("".join(l for l in open(sys.argv[1]) if not l.lstrip().startswith("#")))
for e in doc["resources"][0]["metadata"]["filter_metadata"]["locality-failover"]["endpoints"]:
    print(e["address"], e["name"])
PY
)
[ ${#POD_OF[@]} -eq 4 ] || abort "expected 4 pods in $DEMO/cds.yaml, found ${#POD_OF[@]}"
addr_of() { local a; for a in "${!POD_OF[@]}"; do if [ "${POD_OF[$a]}" = "$1" ]; then echo "$a"; fi; done; }

stat_of() { # exact stat name -> value (0 when absent)
  curl -s -m 5 "$ADMIN/stats?filter=^$(printf '%s' "$1" | sed 's/[.|]/\\&/g')\$" | awk -F': ' 'NR==1{print $2+0; f=1} END{if(!f) print 0}'
}

record() { # PASS|FAIL text
  if [ "$1" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  echo "    $1  $2"
  summary+=("$1  $2")
}

heading() { printf '\n%s\n%s\n%s\n' "$(printf '=%.0s' {1..100})" "$1" "$(printf '=%.0s' {1..100})"; }
say() { printf '\n    %s\n' "$@"; }

# scale POD... : the cluster (endpoints and the filter's inventory) holds
# exactly these pods; written next to cds.yaml and renamed onto it.
scale() {
  revision=$((revision + 1))
  local before; before=$(stat_of cluster_manager.cds.update_success)
  python3 - "$tmp/cds.orig.yaml" "$DEMO" "$revision" "$@" <<'PY'
import json, os, sys
orig, d, rev, *present = sys.argv[1:]
doc = json.loads("".join(l for l in open(orig) if not l.lstrip().startswith("#")))
c = doc["resources"][0]
groups = c["load_assignment"]["endpoints"]
for g in groups:
    g["lb_endpoints"] = [e for e in g["lb_endpoints"] if e["endpoint"].get("hostname") in present]
c["load_assignment"]["endpoints"] = [g for g in groups if g["lb_endpoints"]]
inv = c["metadata"]["filter_metadata"]["locality-failover"]
inv["revision"] = "compose-" + rev
inv["endpoints"] = [e for e in inv["endpoints"] if e["name"] in present]
doc["version_info"] = "compose-" + rev
tmp = os.path.join(d, ".cds.yaml.next")
with open(tmp, "w") as f:
    json.dump(doc, f, indent=1)
os.chmod(tmp, 0o644)
os.rename(tmp, os.path.join(d, "cds.yaml"))
PY
  local want got p
  want=$(for p in "$@"; do addr_of "$p"; done | sort | tr '\n' ' ')
  for _ in $(seq 1 100); do
    got=$(curl -s -m 5 "$ADMIN/clusters" | awk -F'::' '/^inbound-vip\|8000\|http\|in-ambient.*::cx_active::/{print $2}' | sort | tr '\n' ' ')
    [ "$(stat_of cluster_manager.cds.update_success)" -gt "$before" ] && [ "$got" = "$want" ] && break
    sleep 0.1
  done
  [ "$got" = "$want" ] || abort "CDS update $revision not applied within 10 s (Envoy has: $got; want: $want)"
  # Each filter worker re-reads the inventory's revision at most every 10 ms.
  sleep 0.02
  say "-> CDS update (demo/cds.yaml renamed into place): endpoints {$(for p in "$@"; do printf '%s ' "$(short "$p")"; done | sed 's/ $//')}"
}

# wait_listening POD N: the pod's container logged its N-th "server is listening".
wait_listening() {
  local cid n=0
  for _ in $(seq 1 100); do
    cid=$(dc ps -q "$1" 2>/dev/null || true)
    if [ -n "$cid" ]; then
      n=$(podman logs "$cid" 2>&1 | grep -c 'server is listening' || true)
      [ "$n" -ge "$2" ] && { sleep 0.3; return 0; }
    fi
    sleep 0.1
  done
  abort "$1 did not start listening within 10 s"
}

# A recreated or restarted container gets a new MAC address at the same IP.
# Docker announces it (unsolicited ARP, moby#48808; before that it derived
# the MAC from the IP); podman 4.3 / netavark 1.4 do not, and Envoy's kernel
# keeps sending to the old MAC until its neighbour entry expires (~10 s of
# connect timeouts, measured). So, as Docker's announcement would, drop
# that one entry in Envoy's network namespace.
renew_neighbour() {
  local pid; pid=$(podman inspect -f '{{.State.Pid}}' "$ENVOY_CID")
  nsenter -t "$pid" -n ip neigh flush to "${1%:*}" 2>/dev/null || true
}

# pod POD healthy|503|stop|start
pod() {
  local t0=$SECONDS
  case $2 in
    503)
      printf 'services:\n  %s:\n    command: ["-listen=:8080", "-text=%s", "-status-code=503"]\n' "$1" "$1" >"$tmp/fail.yaml"
      dc -f "$COMPOSE_RUN/envoy/docker-compose.yaml" -f "$tmp/fail.yaml" up -d --no-deps "$1" >"$tmp/dc.log" 2>&1 \
        || abort "docker compose up $1 (-status-code=503): $(tail -1 "$tmp/dc.log")"
      wait_listening "$1" 1; renew_neighbour "$(addr_of "$1")"
      say "\$ docker compose up -d --no-deps $1   (+ override: -status-code=503)" "-> $1 answers 503" ;;
    healthy)
      dc up -d --no-deps "$1" >"$tmp/dc.log" 2>&1 || abort "docker compose up $1: $(tail -1 "$tmp/dc.log")"
      wait_listening "$1" 1; renew_neighbour "$(addr_of "$1")"
      say "\$ docker compose up -d --no-deps $1   (the compose file's command again)" "-> $1 answers 200" ;;
    stop)
      dc stop -t 3 "$1" >"$tmp/dc.log" 2>&1 || abort "docker compose stop $1: $(tail -1 "$tmp/dc.log")"
      say "\$ docker compose stop $1" "-> its address $(addr_of "$1") does not answer (connect timeout 1 s)" ;;
    start)
      local n; n=$(podman logs "$(dc ps -a -q "$1")" 2>&1 | grep -c 'server is listening' || true)
      dc start "$1" >"$tmp/dc.log" 2>&1 || abort "docker compose start $1: $(tail -1 "$tmp/dc.log")"
      wait_listening "$1" $((n + 1)); renew_neighbour "$(addr_of "$1")"
      say "\$ docker compose start $1" "-> $1 answers 200 again" ;;
  esac
  echo "       ($((SECONDS - t0)) s)"
}

# phase ID TITLE PORT N EXPECT...: N requests, then the check. EXPECT words:
#   POD=COUNT      exactly COUNT attempts reached POD
#   spread:P1,P2=T each of P1,P2 got at least one, T in all
#   errors=E:pod   E responses were 5xx, all answered by the pod (its 503)
#   errors=E:envoy E responses were 5xx, all Envoy's (connect failures)
#   (no errors= word: no 5xx)
#   ejections=J    the filter's ejections counter rose by J
# Any pod not named must get nothing.
phase() {
  local id=$1 title=$2 port=$3 n=$4; shift 4
  declare -A got=()
  local errors=0 errors_pod=0 i code rid body pod lines=() unmatched=()
  local ej0; ej0=$(stat_of "$METRIC.ejections")
  for ((i = 0; i < n; i++)); do
    code=$(curl -s -m 15 -o "$tmp/body" -D "$tmp/hdr" -w '%{http_code}' -H "host: $HOST" "http://127.0.0.1:$port$PATH_" || true)
    rid=$(awk 'tolower($1)=="x-request-id:"{print $2}' "$tmp/hdr" | tr -d '\r')
    body=$(tr -d '\r\n' <"$tmp/body" 2>/dev/null | cut -c1-120)
    [ "$code" -ge 500 ] 2>/dev/null && errors=$((errors + 1))
    [ "$code" = 000 ] && errors=$((errors + 1))
    if [[ " ${PODS[*]} " == *" $body "* ]]; then
      got[$body]=$(( ${got[$body]:-0} + 1 ))
      [ "$code" -ge 500 ] 2>/dev/null && errors_pod=$((errors_pod + 1))
      if [ "$code" = 200 ]; then lines+=("$body"); else lines+=("$body  <- HTTP $code from the pod"); fi
    else
      unmatched+=("$rid")
      lines+=("HTTP $code from Envoy: $body  [$rid]")
    fi
    sleep 0.002
  done
  # Envoy's own replies: which address did the attempt go to? (access log)
  if [ ${#unmatched[@]} -gt 0 ]; then
    local log_ok=
    # Up to 20 s: Envoy flushes its access log about once a second, and
    # podman's log file can lag behind that under load (a CI run once missed
    # a line after 5 s).
    for _ in $(seq 1 200); do
      podman logs "$ENVOY_CID" >"$tmp/envoy.log" 2>&1 || true
      log_ok=1
      for rid in "${unmatched[@]}"; do grep -q "^D .* $rid\$" "$tmp/envoy.log" || { log_ok=; break; }; done
      [ -n "$log_ok" ] && break
      sleep 0.1
    done
    local host flags
    for rid in "${unmatched[@]}"; do
      host=; flags=; pod=
      read -r _ _ flags host _ < <(grep "^D .* $rid\$" "$tmp/envoy.log" | tail -1) || true
      [ -z "$host" ] || pod=${POD_OF[$host]:-}
      [ -n "$pod" ] || echo "    (request $rid: no access-log line naming a pod: '$(grep -c . "$tmp/envoy.log") lines, $(grep -- "$rid" "$tmp/envoy.log" | head -2)')"
      for i in "${!lines[@]}"; do
        if [[ ${lines[$i]} == *"[$rid]" ]]; then
          lines[$i]="${pod:-?}  <- ${lines[$i]%% \[*} (flags ${flags:-?})"
        fi
      done
      [ -n "$pod" ] && got[$pod]=$(( ${got[$pod]:-0} + 1 ))
    done
  fi
  local ej=$(( $(stat_of "$METRIC.ejections") - ej0 ))

  printf '\n%s  %s\n    $ for i in $(seq 1 %s); do curl -s %s%s; done | sort | uniq -c      (127.0.0.1:%s)\n' \
    "$id" "$title" "$n" "$HOST" "$PATH_" "$port"
  printf '%s\n' "${lines[@]}" | sed 's/  \[[^]]*\]$//' | sort | uniq -c | sed 's/^/    /'
  echo "    filter metrics: ejections +$ej"

  # the check
  local ok=1 named=() w p c total spread_sum
  local expected=() observed=()
  for w in "$@"; do
    case $w in
      errors=*:pod) c=${w#errors=}; c=${c%:pod}
        [ "$errors" -eq "$c" ] && [ "$errors_pod" -eq "$c" ] || ok=; expected+=("5xx x$c (all from the pod)") ;;
      errors=*:envoy) c=${w#errors=}; c=${c%:envoy}
        [ "$errors" -eq "$c" ] && [ "$errors_pod" -eq 0 ] || ok=; expected+=("5xx x$c (all from Envoy: connect failures)") ;;
      ejections=*) [ "$ej" -eq "${w#ejections=}" ] || ok=; expected+=("ejections +${w#ejections=}") ;;
      spread:*)
        total=${w##*=}; spread_sum=0
        IFS=, read -ra sp <<<"${w#spread:}"; sp[-1]=${sp[-1]%=*}
        for p in "${sp[@]}"; do
          named+=("$p"); c=${got[$p]:-0}; spread_sum=$((spread_sum + c)); [ "$c" -ge 1 ] || ok=
        done
        [ "$spread_sum" -eq "$total" ] || ok=
        expected+=("$(for p in "${sp[@]}"; do printf '%s+' "$(short "$p")"; done | sed 's/+$//') $total (each >= 1)") ;;
      *=*) p=${w%=*}; named+=("$p"); [ "${got[$p]:-0}" -eq "${w#*=}" ] || ok=; expected+=("$(short "$p") ${w#*=}") ;;
    esac
  done
  [[ " $* " == *" errors="* ]] || { [ "$errors" -eq 0 ] || ok=; expected+=("5xx x0"); }
  for p in "${PODS[@]}"; do
    [[ " ${named[*]} " == *" $p "* ]] || [ "${got[$p]:-0}" -eq 0 ] || ok=
    [ "${got[$p]:-0}" -eq 0 ] || observed+=("$(short "$p") ${got[$p]}")
  done
  observed+=("5xx x$errors ($errors_pod from the pod)" "ejections +$ej")
  local IFS=,
  if [ -n "$ok" ]; then
    record PASS "$id $title: expected ${expected[*]}; observed ${observed[*]}"
  else
    record FAIL "$id $title: expected ${expected[*]}; observed ${observed[*]}"
    echo "    Envoy log tail:"; podman logs --tail 15 "$ENVOY_CID" 2>&1 | grep -v '^[DU] ' | sed 's/^/      /' || true
  fi
}

# wait_return POD BEFORE: the filter returns the pod it ejected: its
# unejections counter rises above BEFORE (read before the phase that ejected
# it: the access-log wait after a phase can outlast the 3 s ejection) within
# 10 s (baseEjectionTime 3 s + the 1 s interval sweep). The time between the
# two comes from the filter's own log lines ("ejected", "returns from
# ejection"), on Envoy's clock.
wait_return() {
  local addr; addr=$(addr_of "$1")
  say "waiting for baseEjectionTime (3s here; 3m in the guide) and the next interval sweep (1s) ..."
  for _ in $(seq 1 100); do
    [ "$(stat_of "$METRIC.unejections")" -gt "$2" ] && break
    sleep 0.1
  done
  if [ "$(stat_of "$METRIC.unejections")" -gt "$2" ]; then
    local el
    el=$(podman logs "$ENVOY_CID" 2>&1 | python3 -c '
import re, sys, datetime
addr = sys.argv[1]; out = {}
for l in sys.stdin:
    m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]", l)
    if not m: continue
    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
    if ": ejected " + addr + " " in l: out["e"] = t
    elif addr + " returns from ejection" in l: out["r"] = t
print("%.1f s" % (out["r"] - out["e"]).total_seconds() if len(out) == 2 else "? s")
' "$addr" 2>/dev/null || echo "? s")
    record PASS "$1 returned (filter unejections +1) $el after its ejection (baseEjectionTime 3 s)"
  else
    record FAIL "$1 was not returned within 10 s"
    echo "    the filter's log lines of the last 20 s:"
    podman logs --since 20s "$ENVOY_CID" 2>&1 | grep 'locality-failover:' | sed 's/^.*locality-failover: /      /' || true
  fi
}

echo
echo "The guide's steps 3, 4 and 6 against the compose stack (waypoint of cluster 1 = the envoy"
echo "service, us-east-1a; pods = the four http-echo services on cluster1-network and cluster2-network)"

# ------------------------------------------------------------------ step 3
heading "Step 3: default multicluster L4 failover (PreferNetwork), listener 10003"
say "cluster 1 runs in-ambient with 1 replica (us-east-1a), cluster 2 with 1 (us-west-2a)"
scale "$ABC" "$XYZ"
phase 3a "cluster 1 healthy: responses from the local cluster" 10003 10 "$ABC=10"
say "\$ kubectl --context=\${context1} scale deployment in-ambient -n httpbin --replicas=0"
scale "$XYZ"
phase 3b "cluster 1 scaled to 0: failover to cluster 2" 10003 5 "$XYZ=5"
say "\$ kubectl --context=\${context1} scale deployment in-ambient -n httpbin --replicas=1"
scale "$ABC" "$XYZ"
phase 3c "scaled back to 1: traffic returns to cluster 1" 10003 10 "$ABC=10"

# ------------------------------------------------------------------ step 4
heading "Step 4: zone-aware traffic distribution (PreferClose), listener 10004"
say "\$ kubectl --context=\${context1} scale deployment in-ambient -n httpbin --replicas=2"
scale "$ABC" "$DEF" "$XYZ"
phase 4a "all healthy: the pod in the client's zone" 10004 10 "$ABC=10"
say "\$ kubectl --context=\${context1} delete pod -n httpbin $ABC"
scale "$DEF" "$XYZ"
phase 4b "same-zone pod deleted: same region, other zone" 10004 10 "$DEF=10"
say "\$ kubectl --context=\${context1} scale deployment in-ambient -n httpbin --replicas=0"
scale "$XYZ"
phase 4c "region empty: other region (cluster 2)" 10004 10 "$XYZ=10"
say "\$ kubectl --context=\${context1} scale deployment in-ambient -n httpbin --replicas=2"
scale "$ABC" "$DEF" "$XYZ"
phase 4d "scaled back to 2: the same zone again" 10004 10 "$ABC=10"

# ------------------------------------------------------------------ step 6
heading "Step 6: DestinationRule failoverPriority [zone, region] as the guide writes it, listener 10005"
say "cluster 2 runs 2 replicas, in us-west-2a and us-west-2b"
scale "${PODS[@]}"
phase 6a "all healthy: same zone" 10005 5 "$ABC=5"
say "\$ kubectl --context=\${context1} scale deployment in-ambient -n httpbin --replicas=0"
scale "$XYZ" "$UVW"
phase 6b "cluster 1 scaled to 0: failover to cluster 2, by the failover priority" 10005 5 "spread:$XYZ,$UVW=5"
say "\$ kubectl --context=\${context1} scale deployment in-ambient -n httpbin --replicas=2"
scale "${PODS[@]}"
pod "$ABC" 503
unej=$(stat_of "$METRIC.unejections")
phase 6c "THE PITFALL: same-zone pod fails; ejected after 5 x 503; us-east-1b ranks WITH cluster 2" 10005 10 \
  "$ABC=5" "spread:$DEF,$XYZ,$UVW=5" errors=5:pod ejections=1
pod "$ABC" healthy
wait_return "$ABC" "$unej"

heading "Step 6, fixed: failoverPriority [network, region, zone], listener 10006"
phase 6d "all healthy: same zone" 10006 4 "$ABC=4"
pod "$ABC" 503
unej=$(stat_of "$METRIC.unejections")
phase 6e "same-zone pod fails: ejected after 5 x 503, then the same region" 10006 10 \
  "$ABC=5" "$DEF=5" errors=5:pod ejections=1
phase 6f "inside baseEjectionTime the ejected pod gets nothing: same region" 10006 6 "$DEF=6"
pod "$ABC" healthy
wait_return "$ABC" "$unej"
phase 6g "after baseEjectionTime the same-zone pod (healthy again) takes the traffic again" 10006 6 "$ABC=6"
say "us-east-1a has no pod (deleted, as in step 4); then the us-east-1b pod goes away"
scale "$DEF" "$XYZ" "$UVW"
pod "$DEF" stop
unej=$(stat_of "$METRIC.unejections")
phase 6h "us-east-1b down: 5 connect failures eject it, the traffic leaves the region" 10006 9 \
  "$DEF=5" "spread:$XYZ,$UVW=4" errors=5:envoy ejections=1
pod "$DEF" start
wait_return "$DEF" "$unej"
phase 6i "us-east-1b back: after baseEjectionTime it takes the traffic again" 10006 6 "$DEF=6"

heading "Summary (docker compose stack; expected = the guide's outcome, 6c: Istio's with the guide's DR)"
printf '%s\n' "${summary[@]}"
echo
echo "$passed of $((passed + failed)) checks passed"
[ "$failed" -eq 0 ]
