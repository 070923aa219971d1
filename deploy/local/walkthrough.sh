#!/usr/bin/env bash
# walkthrough.sh - the KServe ModelMesh Serving "deploying models" walkthrough, step by step, on
# the local cluster (deploy/local/cluster.sh up): each command printed as `$ ...` with its
# output, and what it shows checked. A step whose output is not what the walkthrough shows ends
# the run (exit 1) saying which step, what was expected, what came, and where the logs are.
#   MM_LOCAL_DIR   the cluster's state dir (default <repo>/.cluster); its env file is sourced
#   MM_WALK_WAIT   bound of each wait, in seconds (default 60)
# Reruns start clean: an existing example-mnist-isvc is deleted first (said so).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
state=${MM_LOCAL_DIR:-$top/.cluster}
wait_s=${MM_WALK_WAIT:-60}
name=example-mnist-isvc
grpc_url=grpc://modelmesh-serving.modelmesh-serving:8033

die() {
  echo "walkthrough: $*" >&2
  exit 1
}

if [ ! -f "$state/env" ]; then
  die "no local cluster in $state (no env file there): start one with deploy/local/cluster.sh up"
fi
# shellcheck source=/dev/null
. "$state/env"
build=${MM_BUILD_DIR:-$top/build}
mmctl_bin=$build/cli/mmctl
[ -x "$mmctl_bin" ] || die "$mmctl_bin is missing: build first (scripts/setup.sh)"
command -v etcdctl >/dev/null 2>&1 || die "etcdctl is missing (Debian package etcd-client)"
: "${MM_ETCD_ENDPOINTS:?$state/env sets no MM_ETCD_ENDPOINTS}"
: "${MM_GRPC_ADDRESS:?$state/env sets no MM_GRPC_ADDRESS}"
export MM_ETCD_ENDPOINTS MM_CLUSTER MM_NAMESPACE
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$MM_ETCD_ENDPOINTS
if [ -x "$top/deploy/local/cluster.sh" ] && ! "$top/deploy/local/cluster.sh" status >/dev/null 2>&1; then
  "$top/deploy/local/cluster.sh" status >&2 || true
  die "the local cluster in $state is not (wholly) running: see the status above; run deploy/local/cluster.sh down, then up"
fi

# The commands as a user types them: mmctl on PATH-less machines is the build's.
mmctl() { "$mmctl_bin" "$@"; }
step="" # the step running, for failures
out=""  # the last command's output
work=$(mktemp -d "${TMPDIR:-/tmp}/mm-walkthrough.XXXXXX")
bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# fail WHAT-WAS-EXPECTED: what came is the last output.
fail() {
  {
    echo
    echo "walkthrough: FAILED at step $step"
    echo "  expected: $1"
    echo "  got:"
    while IFS= read -r line; do echo "    $line"; done <<<"$out"
    echo "  logs: $state/logs/ (the controllers: controller-*.log, the nodes: node-*.log, the runtimes: runtime-*.log)"
  } >&2
  exit 1
}

section() {
  step=$1
  echo
  echo "=== $1"
}

# show DISPLAY CMD...: prints `$ DISPLAY`, runs CMD, prints and keeps its output; exit code in rc.
rc=0
show() {
  local display=$1
  shift
  echo "\$ $display"
  rc=0
  out=$("$@" 2>&1) || rc=$?
  [ -z "$out" ] || printf '%s\n' "$out"
}

# the same, quietly (for polls): output in out, exit code in rc.
quiet() {
  rc=0
  out=$("$@" 2>&1) || rc=$?
}

# has LABEL VALUE: a line of the last output is "LABEL VALUE" (describe pads the label).
has() {
  grep -Eq "^[[:space:]]*$1[[:space:]]+$2[[:space:]]*\$" <<<"$out"
}

expect() { # expect LABEL VALUE
  has "$1" "$2" || fail "\"$1 $2\" in the output"
}

# wait_for WHAT PREDICATE...: polls PREDICATE (a function; its rc) every 0.2 s up to wait_s,
# printing progress every 2 s.
wait_for() {
  local what=$1
  shift
  local t0 last=0 t
  t0=$(now_ms)
  while :; do
    if "$@"; then
      return 0
    fi
    t=$(( ($(now_ms) - t0) / 1000 ))
    if [ "$t" -ge "$wait_s" ]; then
      [ -n "${wait_got:-}" ] && out=$("$wait_got" 2>&1)
      fail "$what within $wait_s s"
    fi
    if [ $((t / 2)) -gt "$last" ]; then
      last=$((t / 2))
      echo "  ... waiting for $what (${t} s)"
    fi
    sleep 0.2
  done
}

# The walkthrough's ModelInfer request (gRPC-JSON, as sent with grpcurl): an 8x8 image of an 8.
request='{"inputs": [{"name": "predict", "shape": [1, 64], "datatype": "FP32", "contents": {"fp32_contents":
  [0.0, 0.0, 1.0, 11.0, 14.0, 15.0, 3.0, 0.0, 0.0, 1.0, 13.0, 16.0, 12.0, 16.0, 8.0, 0.0, 0.0, 8.0,
   16.0, 4.0, 6.0, 16.0, 5.0, 0.0, 0.0, 5.0, 15.0, 11.0, 13.0, 14.0, 0.0, 0.0, 0.0, 0.0, 2.0, 12.0,
   16.0, 13.0, 0.0, 0.0, 0.0, 0.0, 0.0, 13.0, 16.0, 16.0, 6.0, 0.0, 0.0, 0.0, 0.0, 16.0, 16.0, 16.0,
   7.0, 0.0, 0.0, 0.0, 0.0, 11.0, 13.0, 12.0, 1.0, 0.0]}}]}'
infer() { mmctl --address "$MM_GRPC_ADDRESS" infer "$name" <<<"$request"; }
infer_display="mmctl --address $MM_GRPC_ADDRESS infer $name <<< '{\"inputs\": [{\"name\": \"predict\", \"shape\": [1, 64], \"datatype\": \"FP32\", \"contents\": {\"fp32_contents\": [0.0, 0.0, 1.0, 11.0, ...]}}]}'"

# The answer in out: predict = 8, by a revision of the InferenceService; the revision in answered.
answered=""
expect_eight() {
  local compact
  compact=$(tr -d ' \n' <<<"$out")
  [ "$rc" -eq 0 ] || fail "ModelInfer to answer (mmctl exit 0; got exit $rc)"
  grep -q '"name":"predict"' <<<"$compact" || fail "an output named predict"
  grep -q '"shape":\[1\]' <<<"$compact" || fail "the output's shape [1]"
  grep -Eq '"data":\[8(\.0*)?\]' <<<"$compact" || fail "the value 8 (the image is an 8)"
  answered=$(sed -n 's/.*"model_name":"\('"$name"'__isvc-[0-9a-f]*\)".*/\1/p' <<<"$compact")
  [ -n "$answered" ] || fail "model_name = the concrete revision ($name""__isvc-...)"
}

# ---------------------------------------------------------------------------------------------
echo "The KServe ModelMesh Serving walkthrough on the local cluster (state $state)"
echo "etcd $MM_ETCD_ENDPOINTS, cluster ${MM_CLUSTER:-}, namespace ${MM_NAMESPACE:-modelmesh-serving}, the modelmesh-serving Service on $MM_GRPC_ADDRESS"

quiet mmctl get isvc "$name" -o name
if [ "$rc" -eq 0 ] && [ -n "$out" ]; then
  step="cleanup"
  echo
  echo "$name exists from an earlier run: deleting it to start clean"
  show "mmctl delete isvc $name" mmctl delete isvc "$name"
  [ "$rc" -eq 0 ] || fail "the delete to succeed"
  gone() {
    quiet etcdctl get --prefix "/modelmesh/$MM_CLUSTER/" --keys-only
    ! grep -q "$name" <<<"$out"
  }
  wait_for "every record of $name (vmodel, models, copies) to be gone" gone
fi

section "0. The storage secret"
show "mmctl get secret storage-config -o json" mmctl get secret storage-config -o json
[ "$rc" -eq 0 ] || fail "the storage-config Secret (cluster.sh up applies it)"
grep -q '"localMinIO"' <<<"$out" || fail "a key localMinIO in its data"
show "mmctl get secret storage-config -o jsonpath='{.data.localMinIO}' | base64 -d" \
  bash -c "'$mmctl_bin' get secret storage-config -o jsonpath='{.data.localMinIO}' | base64 -d"
[ "$rc" -eq 0 ] || fail "the localMinIO entry, base64"
for field in '"type": *"s3"' '"bucket": *"modelmesh-example-models"' \
             "\"endpoint_url\": *\"${MM_S3_ENDPOINT:-http}" '"secret_access_key"' '"access_key(_id)?"'; do
  grep -Eq "$field" <<<"$out" || fail "$field in the localMinIO entry"
done

section "1. Apply the InferenceService"
manifest="apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: $name
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storage:
        key: localMinIO
        path: sklearn/mnist-svm.joblib"
apply() { mmctl apply -f - <<<"$manifest"; }
show "mmctl apply -f - <<EOF
$manifest
EOF" apply
if [ "$rc" -ne 0 ] || [ "$out" != "inferenceservice.serving.kserve.io/$name created" ]; then
  fail "inferenceservice.serving.kserve.io/$name created"
fi
t_applied=$(now_ms)

section "2. Describe while it loads"
# Sent now, before anything is Loaded: the request waits in the mesh until the load completes.
infer_start=$(now_ms)
( r=0; infer >"$work/first.out" 2>&1 || r=$?; echo "$r $(now_ms)" >"$work/first.rc" ) &
bg_pids+=($!)
has_status() {
  quiet mmctl describe isvc "$name"
  has "Transition Status:" "[A-Za-z]+"
}
wait_for "the controller to write the first status" has_status
show "mmctl describe isvc $name" mmctl describe isvc "$name"
[ "$rc" -eq 0 ] || fail "describe to succeed"
if has "Active Model State:" "Loaded"; then
  echo "(already Loaded: the load was faster than describe)"
  expect "Status:" "True"
else
  has "Active Model State:" "(Pending|Loading)" || fail "Active Model State: Pending or Loading"
  has "Status:" "False" || fail "Ready and PredictorReady False while loading"
  has "Status:" "True" && fail "no condition True while loading"
fi
expect "Type:" "PredictorReady"
expect "Type:" "Ready"
expect "Transition Status:" "UpToDate"
expect "Total Copies:" "[0-9]+"
show "mmctl get isvc $name -o=jsonpath='{.status.components.predictor.grpcUrl}'" \
  mmctl get isvc "$name" "-o=jsonpath={.status.components.predictor.grpcUrl}"
[ "$out" = "$grpc_url" ] || fail "$grpc_url"

section "3. Infer (sent at once: it waited for the load)"
echo "\$ $infer_display"
first_done() { [ -s "$work/first.rc" ]; }
wait_for "the first ModelInfer to answer" first_done
out=$(cat "$work/first.out")
printf '%s\n' "$out"
read -r rc t_done <"$work/first.rc"
echo "(answered $((t_done - infer_start)) ms after it was sent, $((t_done - t_applied)) ms after apply)"
expect_eight
rev1=$answered
loaded() {
  quiet mmctl describe isvc "$name"
  has "Active Model State:" "Loaded" && has "Transition Status:" "UpToDate" &&
    ! has "Status:" "False"
}
wait_for "Ready True, Active Model State Loaded" loaded
show "mmctl describe isvc $name" mmctl describe isvc "$name"
expect "Active Model State:" "Loaded"
expect "Transition Status:" "UpToDate"
expect "Status:" "True"
expect "Failed Copies:" "0"
expect "Total Copies:" "[1-9][0-9]*"

section "4. Change the model without interruption (sklearn -> xgboost)"
# Every status the InferenceService goes through, recorded from before the apply: the new
# revision may load faster than describe can look (tens of milliseconds for this model).
watch_tmpl='{.metadata.generation} Ready={.status.conditions[1].status} active={.status.modelStatus.states.activeModelState} target={.status.modelStatus.states.targetModelState} {.status.modelStatus.transitionStatus} copies={.status.modelStatus.copies.totalCopies}{"\n"}'
timeout "$((wait_s * 3))" "$mmctl_bin" get isvc "$name" -w -o "jsonpath=$watch_tmpl" >"$work/watch.out" 2>&1 &
bg_pids+=($!)
watching() { [ -s "$work/watch.out" ]; }
wait_for "mmctl get -w to list the InferenceService" watching
# Requests keep coming during the change: every answer must be 8, by the old revision until the
# new one is active.
( i=0
  while [ ! -e "$work/stop" ] && [ "$i" -lt 2000 ]; do
    r=0; a=$(infer 2>&1) || r=$?
    printf '%s %s\n' "$r" "$(tr -d ' \n' <<<"$a")" >>"$work/during.log"
    i=$((i + 1)); sleep 0.05
  done ) &
bg_pids+=($!)
load_pid=$!
answering() { [ -s "$work/during.log" ]; }
wait_for "the requests to be answering" answering
# describe, from before the apply, by three pollers in turn (one describe takes tens of
# milliseconds, about as long as this model's load): the first output showing the new revision
# loading is kept. (For the few milliseconds between the new revision's copy Loaded and the
# switch to it, describe shows Target Model State Loaded, still InProgress: not this step's.)
poll_describe() {
  local k=$1 i=0 d
  sleep "0.0$((k * 3))"
  while [ ! -e "$work/stop-describe" ] && [ "$i" -lt 3000 ]; do
    d=$("$mmctl_bin" describe isvc "$name" 2>&1) || true
    if grep -Eq '^[[:space:]]*Transition Status:[[:space:]]+InProgress' <<<"$d" &&
      grep -Eq '^[[:space:]]*Target Model State:[[:space:]]+Loading' <<<"$d"; then
      printf '%s\n' "$d" >"$work/describe.$k.tmp" && mv "$work/describe.$k.tmp" "$work/describe.$k"
      touch "$work/stop-describe"
    fi
    i=$((i + 1))
  done
}
for k in 0 1 2; do
  poll_describe "$k" &
  bg_pids+=($!)
done
manifest=${manifest/name: sklearn/name: xgboost}
manifest=${manifest/path: sklearn\/mnist-svm.joblib/path: xgboost/mnist.json}
show "mmctl apply -f - <<EOF
$manifest
EOF" apply
if [ "$rc" -ne 0 ] || [ "$out" != "inferenceservice.serving.kserve.io/$name configured" ]; then
  fail "inferenceservice.serving.kserve.io/$name configured"
fi
# The change is over when, at generation 2, an UpToDate status follows an InProgress one (the
# watch's first row at generation 2 is the spec's, with the status from before).
changed() {
  awk '$1 == 2 && / InProgress / { p = 1 } $1 == 2 && p && / UpToDate / { done = 1 }
       END { exit !done }' "$work/watch.out"
}
stuck() { grep -Eq '^2 .* (InvalidSpec|BlockedByFailedLoad) ' "$work/watch.out"; }
caught() { compgen -G "$work/describe.[0-9]" >/dev/null; }
over() { caught || changed || stuck; }
# what a step that waits too long shows: the watch, and describe now
watch_now() {
  echo "\$ mmctl get isvc $name -w -o jsonpath='$watch_tmpl'    # started before the apply"
  cat "$work/watch.out"
  echo "\$ mmctl describe isvc $name"
  "$mmctl_bin" describe isvc "$name"
}
wait_got=watch_now
wait_for "describe to show InProgress, or the change to be over" over
if stuck; then
  out=$(cat "$work/watch.out")
  fail "Transition Status: InProgress, then UpToDate"
fi
touch "$work/stop-describe"
if caught; then
  echo "\$ mmctl describe isvc $name"
  out=$(cat "$(compgen -G "$work/describe.[0-9]" | head -n 1)")
  printf '%s\n' "$out"
  expect "Active Model State:" "Loaded"
  expect "Target Model State:" "Loading"
  expect "Transition Status:" "InProgress"
  expect "Status:" "True"
  has "Status:" "False" && fail "Ready and PredictorReady True while the new revision loads"
else
  echo "(the new revision loaded before describe could look: the watch below saw it)"
fi
settled() { changed || stuck; }
wait_for "the new revision to be active (UpToDate at generation 2)" settled
wait_got=
echo "\$ mmctl get isvc $name -w -o jsonpath='$watch_tmpl'    # started before the apply"
out=$(cat "$work/watch.out")
printf '%s\n' "$out"
stuck && fail "Transition Status: InProgress, then UpToDate"
grep -q '^2 Ready=True active=Loaded target=Loading InProgress ' <<<"$out" ||
  fail "a status at generation 2: Ready True, active Loaded, target Loading, InProgress"
grep -q '^2 Ready=False' <<<"$out" && fail "Ready True throughout the change"
show "mmctl describe isvc $name" mmctl describe isvc "$name"
expect "Transition Status:" "UpToDate"
expect "Active Model State:" "Loaded"
expect "Status:" "True"
show "$infer_display" infer
expect_eight
rev2=$answered
[ "$rev2" != "$rev1" ] || fail "the answer from the new revision (not $rev1)"
touch "$work/stop"
wait "$load_pid" 2>/dev/null || true
n_during=$(wc -l <"$work/during.log")
n_bad=$(grep -vcE '^0 .*"data":\[8(\.0*)?\]' "$work/during.log" || true)
n_old=$(grep -c "\"model_name\":\"$rev1\"" "$work/during.log" || true)
n_new=$(grep -c "\"model_name\":\"$rev2\"" "$work/during.log" || true)
echo "while it changed: $n_during requests, $n_old answered by $rev1, $n_new by $rev2, $n_bad not 8 or failed"
out=$(cat "$work/during.log")
[ "$n_bad" -eq 0 ] || fail "every request during the change answered 8"
[ "$n_old" -gt 0 ] || fail "requests answered by $rev1 while $rev2 loaded"

section "5. A failed load leaves the service available"
manifest=${manifest/path: xgboost\/mnist.json/path: xgboost/no-such-model.json}
show "mmctl apply -f - <<EOF
$manifest
EOF" apply
if [ "$rc" -ne 0 ] || [ "$out" != "inferenceservice.serving.kserve.io/$name configured" ]; then
  fail "inferenceservice.serving.kserve.io/$name configured"
fi
blocked() {
  quiet mmctl describe isvc "$name"
  has "Transition Status:" "BlockedByFailedLoad"
}
wait_for "Transition Status BlockedByFailedLoad (the load fails on every runtime pod)" blocked
show "mmctl describe isvc $name" mmctl describe isvc "$name"
expect "Transition Status:" "BlockedByFailedLoad"
expect "Active Model State:" "Loaded"
expect "Target Model State:" "FailedToLoad"
expect "Reason:" "ModelLoadFailed"
expect "Status:" "True"
has "Status:" "False" && fail "Ready and PredictorReady still True"
show "$infer_display" infer
expect_eight
[ "$answered" = "$rev2" ] || fail "the answer from $rev2 (the revision still active)"
show "mmctl get isvc" mmctl get isvc
grep -Eq "^${name}[[:space:]]+${grpc_url}[[:space:]]+True" <<<"$out" ||
  fail "a row \"$name $grpc_url True ...\""
show "etcdctl get --prefix /modelmesh/" etcdctl get --prefix /modelmesh/
for key in "isvcs/${MM_NAMESPACE:-modelmesh-serving}/$name" "vmodels/$name" "models/$rev2" \
           "instances/"; do
  grep -q "^/modelmesh/$MM_CLUSTER/$key" <<<"$out" || fail "the key /modelmesh/$MM_CLUSTER/$key"
done

echo
echo "The walkthrough is done: $name stays deployed ($rev2 serving; the revision with the"
echo "missing path stays blocked). Keep using the cluster:"
echo "  . $state/env"
echo "  $mmctl_bin get isvc"
echo "  $mmctl_bin --address \$MM_GRPC_ADDRESS infer $name --file REQUEST.json"
echo "  deploy/local/cluster.sh down     # stops it"
