#!/usr/bin/env bash
# test_local_cluster.sh BUILD_DIR - deploy/local/cluster.sh end to end, with real processes in a
# temp state dir (ports 0, MM_LOCAL_SETUP=0):
#   - up with a broken mm-node: fails naming node-mm-runtime-0 and its log, stops what it had
#     started (nothing left whose command line names the state dir), status 3;
#   - up: every part alive, the env file, the storage-config Secret pointing at s3rver;
#   - up again: says so, exit 0, starts nothing (the same pids, no process more);
#   - a second cluster asking for the first one's etcd port: refused naming the port;
#   - status 0 (nodes, gateway and controllers ready through their probes when they have them);
#   - requests through the gateway's port: the walkthrough's InferenceService (sklearn from the
#     bucket through the localMinIO key) answers 8 with its concrete revision; an xgboost model
#     registered through the gateway's model API answers;
#   - a part killed: status 1 naming it, up refuses (run down first);
#   - down: status 3, every recorded pid gone, every port free, no process naming the state dir;
#     down again: nothing to stop, exit 0.
set -euo pipefail
build=$(cd "${1:?usage: test_local_cluster.sh BUILD_DIR}" && pwd)
top=$(cd "$(dirname "$0")/../.." && pwd)
cluster=$top/deploy/local/cluster.sh
mmctl=$build/cli/mmctl
work=$(mktemp -d "${TMPDIR:-/tmp}/mm-local-test.XXXXXX")
dir=$work/state
fails=0

export MM_LOCAL_DIR=$dir MM_BUILD_DIR=$build MM_LOCAL_SETUP=0
export MM_LOCAL_GRPC_PORT=0 MM_LOCAL_ETCD_PORT=0 MM_LOCAL_S3_PORT=0
unset MM_ETCD_ENDPOINTS MM_CLUSTER MM_NAMESPACE MM_NODE_ADDRESS

say() { printf '%s\n' "$*" >&2; }
check() { # check WHAT COMMAND...: a failure is counted and named, the test goes on
  local what=$1
  shift
  if "$@"; then say "ok: $what"; else say "FAIL: $what"; fails=$((fails + 1)); fi
}
require() { # as check, but the test cannot go on without it
  local what=$1
  shift
  if "$@"; then say "ok: $what"; else say "FAIL: $what (cannot go on)"; exit 1; fi
}

# Processes whose command line names DIR (this script's own children included).
procs_naming() {
  local f pid cmd found=()
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    [ "$pid" = $$ ] && continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"$f") || continue
    [ -n "$cmd" ] || continue # a kernel thread or a zombie
    [[ "$cmd" == *"$1"* ]] && found+=("$pid")
  done
  echo "${found[*]:-}"
}

# Every port a part of the cluster in DIR announced (LISTENING, PROBES, METRICS, REST) or etcd's.
ports_of() {
  cat "$1"/pids/*.port "$1"/pids/*.probe "$1"/pids/*.metrics "$1"/pids/*.rest 2>/dev/null |
    sort -un | tr '\n' ' '
}

# A pid that runs nothing any more: no such process, or a zombie its new parent has not reaped
# yet (the parts outlive the cluster.sh that started them; some inits reap late).
gone() {
  local stat
  stat=$(cat 2>/dev/null "/proc/$1/stat") || return 0
  stat=${stat##*) }
  [ "${stat%% *}" = Z ]
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# No part of this cluster listens on PORT: it is free, or a process outside the cluster took it
# since (tests run side by side: an ephemeral port freed by down may be handed out again).
port_not_ours() {
  port_free "$1" && return 0
  local pid holders
  holders=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -oE 'pid=[0-9]+' | cut -d= -f2)
  [ -n "$holders" ] || return 1 # taken, by whom unknown (ss shows pids to root only)
  for pid in $holders; do
    grep -qF -- "$dir" "/proc/$pid/cmdline" 2>/dev/null && return 1
    [[ " $pids " == *" $pid "* ]] && return 1
  done
  return 0
}

cleanup() {
  local rc=$?
  "$cluster" down >/dev/null 2>&1 || true
  MM_LOCAL_DIR=$work/broken "$cluster" down >/dev/null 2>&1 || true
  MM_LOCAL_DIR=$work/second "$cluster" down >/dev/null 2>&1 || true
  local left
  left=$(procs_naming "$work")
  if [ -n "$left" ]; then
    say "FAIL: left running after the test: $left"
    # shellcheck disable=SC2086 # a list of pids
    kill -KILL $left 2>/dev/null || true
    rc=1
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

t_start=$SECONDS

# ---------------------------------------------------------------- a part that fails
# A build dir like the real one whose mm-node exits at once: up must fail at the first node,
# name it and its log, and stop etcd, s3rver and the runtimes it had started.
broken=$work/broken-build
mkdir -p "$broken/node"
for d in cli gateway controller runtimes examples; do ln -s "$build/$d" "$broken/$d"; done
cat >"$broken/node/mm-node" <<'EOF'
#!/bin/sh
echo "mm-node: broken on purpose for the test" >&2
exit 1
EOF
chmod +x "$broken/node/mm-node"
out=$(MM_LOCAL_DIR=$work/broken MM_BUILD_DIR=$broken "$cluster" up 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/  | /' >&2
check "up with a broken mm-node exits 1 (got $rc)" test "$rc" = 1
check "it names the part that failed" grep -q "node-mm-runtime-0 failed: exited while" <<<"$out"
check "it names that part's log" grep -qF "$work/broken/logs/node-mm-runtime-0.log" <<<"$out"
check "it shows the log's tail" grep -q "broken on purpose" <<<"$out"
check "it stops what it started" grep -q "stopped etcd" <<<"$out"
check "nothing left naming the broken cluster's dir" test -z "$(procs_naming "$work/broken")"
MM_LOCAL_DIR=$work/broken "$cluster" status >/dev/null 2>&1 && rc=0 || rc=$?
check "status of the failed cluster: 3 (got $rc)" test "$rc" = 3

# ---------------------------------------------------------------- up
t0=$SECONDS
out=$("$cluster" up 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/  | /' >&2
require "up exits 0 (got $rc, $((SECONDS - t0)) s)" test "$rc" = 0
say "up took $((SECONDS - t0)) s"
parts=(etcd s3 runtime-mm-runtime-0 node-mm-runtime-0 runtime-mm-runtime-1 node-mm-runtime-1
  runtime-mm-sklearn-0 node-mm-sklearn-0 runtime-mm-sklearn-1 node-mm-sklearn-1
  controller-0 controller-1 gateway)
for p in "${parts[@]}"; do
  check "up shows a progress line for $p" grep -q "^\[$p\]" <<<"$out"
  check "$p has a pid file and a log" test -s "$dir/pids/$p.pid" -a -f "$dir/logs/$p.log"
done
require "the env file" test -f "$dir/env"
# shellcheck source=/dev/null
. "$dir/env"
for v in MM_ETCD_ENDPOINTS MM_CLUSTER MM_NAMESPACE MM_GRPC_ADDRESS MM_S3_ENDPOINT MM_LOCAL_DIR \
  MM_BUILD_DIR; do
  check "env sets $v (${!v:-})" test -n "${!v:-}"
done
check "MM_CLUSTER=local" test "$MM_CLUSTER" = local
check "MM_NAMESPACE=modelmesh-serving" test "$MM_NAMESPACE" = modelmesh-serving
check "MM_LOCAL_DIR is the state dir" test "$MM_LOCAL_DIR" = "$dir"
grpc=$MM_GRPC_ADDRESS
check "the gateway's port is in the env ($grpc)" \
  test "$grpc" = "127.0.0.1:$(cat "$dir/pids/gateway.port")"
secret=$(ETCDCTL_API=3 etcdctl --endpoints "$MM_ETCD_ENDPOINTS" get --print-value-only \
  /modelmesh/local/storage-config/localMinIO 2>&1) || true
say "storage-config/localMinIO: $secret"
check "the Secret's localMinIO points at s3rver" grep -qE "\"endpoint_url\": *\"$MM_S3_ENDPOINT\"" <<<"$secret"
check "the Secret's localMinIO has the walkthrough's key id" grep -qE '"access_key": *"AKIAIOSFODNN7EXAMPLE"' <<<"$secret"
check "the bucket holds the walkthrough's model" \
  curl -fsS -o /dev/null -m 5 -I "$MM_S3_ENDPOINT/modelmesh-example-models/sklearn/mnist-svm.joblib"
rts=$("$mmctl" get servingruntimes 2>&1 || true)
check "both ServingRuntimes applied" grep -q "mm-sklearn" <<<"$rts"

# ---------------------------------------------------------------- up again
pids_before=$(cat "$dir"/pids/*.pid | sort -n | tr '\n' ' ')
procs_before=$(procs_naming "$dir")
out=$("$cluster" up 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/  | /' >&2
check "up again exits 0 (got $rc)" test "$rc" = 0
check "up again says it already runs" grep -q "already runs" <<<"$out"
check "up again starts nothing: same pids" test "$pids_before" = "$(cat "$dir"/pids/*.pid | sort -n | tr '\n' ' ')"
check "up again starts nothing: same processes" test "$procs_before" = "$(procs_naming "$dir")"

# ---------------------------------------------------------------- a second cluster
etcd_port=$(cat "$dir/pids/etcd.port")
out=$(MM_LOCAL_DIR=$work/second MM_LOCAL_ETCD_PORT=$etcd_port "$cluster" up 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/  | /' >&2
check "a second cluster on the first one's etcd port is refused (exit $rc)" test "$rc" != 0
check "the refusal names the port" grep -q "127.0.0.1:$etcd_port is taken" <<<"$out"
check "the second cluster started nothing" test -z "$(procs_naming "$work/second")"

# ---------------------------------------------------------------- status
out=$("$cluster" status 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/  | /' >&2
check "status exits 0 (got $rc)" test "$rc" = 0
check "status: 13 parts alive" test "$(grep -c ' yes ' <<<"$out")" = 13
if "$build/node/mm-node" --help 2>&1 | grep -q -- --probe-listen; then
  for p in node-mm-runtime-0 node-mm-runtime-1 node-mm-sklearn-0 node-mm-sklearn-1 \
    controller-0 controller-1 gateway; do
    check "status: $p ready through its probe" grep -qE "^$p +[0-9]+ +[-0-9]+ +yes +ready " <<<"$out"
  done
fi

# ---------------------------------------------------------------- requests through the gateway
request=$dir/models/sklearn/mnist-svm-request.json
out=$("$mmctl" apply -f - 2>&1 <<'EOF'
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: example-mnist-isvc
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storage:
        key: localMinIO
        path: sklearn/mnist-svm.joblib
EOF
) || true
say "$out"
check "the walkthrough's InferenceService is created" \
  grep -q "inferenceservice.serving.kserve.io/example-mnist-isvc created" <<<"$out"
t0=$SECONDS
out=$("$mmctl" --address "$grpc" --timeout 60s infer example-mnist-isvc --file "$request" 2>&1) || true
say "$out"
say "first inference (blocks while it loads from s3rver): $((SECONDS - t0)) s"
check "the gateway answers predict 8" grep -qE '"data": *\[8\]' <<<"$out"
check "by the concrete revision" grep -q '"model_name": "example-mnist-isvc__isvc-' <<<"$out"
out=$("$mmctl" model register bc --type xgboost --key localMinIO --path xgboost/breast-cancer.json \
  --load-now --sync --node "$grpc" 2>&1) || true
say "$out"
out=$("$mmctl" --address "$grpc" infer bc --file "$dir/models/xgboost/breast-cancer-request.json" 2>&1) || true
say "$out"
check "an xgboost model registered through the gateway answers" grep -q '"outputs"' <<<"$out"
out=$("$mmctl" get isvc example-mnist-isvc 2>&1) || true
say "$out"
check "the InferenceService is Ready" grep -qE "example-mnist-isvc +grpc://[^ ]+ +True" <<<"$out"

# ---------------------------------------------------------------- a part dies
victim_pid=$(cat "$dir/pids/runtime-mm-sklearn-1.pid")
kill -KILL "$victim_pid"
for _ in $(seq 1 50); do [ -d "/proc/$victim_pid" ] || break; sleep 0.1; done
out=$("$cluster" status 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/  | /' >&2
check "status with a part killed exits 1 (got $rc)" test "$rc" = 1
check "status shows it dead" grep -qE "^runtime-mm-sklearn-1 +$victim_pid .*DEAD" <<<"$out"
out=$("$cluster" up 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/  | /' >&2
check "up on a partly running cluster exits 1 (got $rc)" test "$rc" = 1
check "it names the dead part" grep -q "gone: runtime-mm-sklearn-1" <<<"$out"
check "it says to run down first" grep -q "down' first" <<<"$out"

# ---------------------------------------------------------------- down
pids=$(cat "$dir"/pids/*.pid | tr '\n' ' ')
ports=$(ports_of "$dir")
t0=$SECONDS
out=$("$cluster" down 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/  | /' >&2
check "down exits 0 (got $rc, $((SECONDS - t0)) s)" test "$rc" = 0
check "down says where the logs are" grep -qF "logs kept in $dir/logs/" <<<"$out"
check "the logs are kept" test -s "$dir/logs/gateway.log"
out=$("$cluster" status 2>&1) && rc=0 || rc=$?
check "status after down exits 3 (got $rc)" test "$rc" = 3
for pid in $pids; do
  check "pid $pid is gone" gone "$pid"
done
for port in $ports; do
  check "port $port is free (of this cluster)" port_not_ours "$port"
done
check "no process names the state dir" test -z "$(procs_naming "$dir")"
check "the env file is gone" test ! -e "$dir/env"
# A sanitizer build's report lands in the part's log (the parts are not the test's children).
reports=$(grep -lE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$dir"/logs/*.log || true)
check "no sanitizer report in the logs (${reports:-none})" test -z "$reports"
out=$("$cluster" down 2>&1) && rc=0 || rc=$?
check "down again exits 0 (got $rc)" test "$rc" = 0
check "down again: nothing to stop" grep -q "nothing to stop" <<<"$out"

say "test_local_cluster: $fails failed, $((SECONDS - t_start)) s"
[ "$fails" = 0 ]
