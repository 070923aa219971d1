#!/usr/bin/env bash
# demo.sh - README command 1: install what is missing, build, start a local etcd, write the
# registry records a cluster keeps (instance, model, copy, vmodel) through mmctl, and read them
# back with mmctl and with etcd's own etcdctl. Then build the example models, start both model
# runtimes, load the examples through the runtime SPI and ask each for a prediction (KServe V2)
# with mmctl. Then start an mm-node beside each runtime: each registers its instance under an
# etcd lease; register both models through the model API (each lands on the node that serves
# its type, Loaded, its copy in etcd), ask for the digit through the node that does not hold
# it (forwarded one hop) and by a vmodel's name; SIGTERM the nodes. Everything is stopped by its pid at the end, unless
# MM_DEMO_KEEP=1 (then the script prints how to use and stop etcd; the runtimes are stopped
# either way).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/setup.sh build

# shellcheck source=scripts/lib-etcd.sh
. scripts/lib-etcd.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/modelmesh-demo.XXXXXX")
runtime_pids=()
stop() {
  local pid
  for pid in "${runtime_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${runtime_pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${MM_DEMO_KEEP:-0}" != 1 ]; then
    etcd_stop "$work" || true
    rm -rf "$work"
  fi
}
trap stop EXIT
etcd_start "$work"
endpoint=$ETCD_ENDPOINT
etcd_pid=$ETCD_PID
echo "== etcd $(etcd --version | head -1 | awk '{print $3}') on $endpoint (pid $etcd_pid)"

export MM_ETCD_ENDPOINTS=$endpoint MM_CLUSTER=demo
mmctl=build/cli/mmctl
now=$(($(date +%s) * 1000))
echo "== writing the records of a small cluster"
$mmctl registry put instances/node-0 "{\"v\":1,\"address\":\"127.0.0.1:8080\",\"runtime\":\"mm-runtime\",\"zone\":\"local\",\"capacity_bytes\":1073741824,\"used_bytes\":1228800,\"loaded_count\":1,\"lru_oldest_ms\":$now,\"start_ms\":$now}"
$mmctl registry put models/example-mnist-isvc__isvc-6b2eb0b8bf "{\"v\":1,\"type\":\"sklearn\",\"storage_key\":\"localMinIO\",\"storage_path\":\"sklearn/mnist-svm.joblib\",\"size_bytes\":1000000,\"last_used_ms\":$now}"
$mmctl registry put copies/example-mnist-isvc__isvc-6b2eb0b8bf/node-0 "{\"v\":1,\"state\":\"Loaded\",\"since_ms\":$now,\"size_bytes\":1228800}"
$mmctl registry put vmodels/example-mnist-isvc '{"v":1,"active_model_id":"example-mnist-isvc__isvc-6b2eb0b8bf","target_model_id":"example-mnist-isvc__isvc-6b2eb0b8bf"}'
echo "== a malformed record is refused, nothing is written"
$mmctl registry put copies/example-mnist-isvc__isvc-6b2eb0b8bf/node-1 '{"v":1,"state":"Ready"}' || true
echo "== mmctl registry dump"
$mmctl registry dump
echo "== the same through etcdctl: plain JSON values"
ETCDCTL_API=3 etcdctl --endpoints "$endpoint" get --prefix /modelmesh/
# Start a runtime (command in "$@") on a free port; sets RUNTIME_PORT once it prints LISTENING.
start_runtime() {
  local name=$1 out
  shift
  out="$work/$name.out"
  "$@" --listen 127.0.0.1:0 >"$out" 2>"$work/$name.log" </dev/null &
  runtime_pids+=($!)
  for _ in $(seq 1 600); do
    RUNTIME_PORT=$(awk '/^LISTENING /{print $2; exit}' "$out")
    [ -n "$RUNTIME_PORT" ] && return 0
    kill -0 "$!" 2>/dev/null || break
    sleep 0.1
  done
  echo "demo: $name did not start; its log:" >&2
  tail -20 "$work/$name.log" >&2
  return 1
}

echo "== the example models, made from data Debian ships"
build/examples/xgboost/make-breast-cancer "$work/models"
/usr/bin/python3 examples/sklearn/make_mnist_svm.py "$work/models"

echo "== mm-runtime (XGBoost): status, load, and the sample request"
start_runtime mm-runtime build/runtimes/xgboost/mm-runtime --models-dir "$work"
xgb=127.0.0.1:$RUNTIME_PORT
$mmctl --address "$xgb" runtime status --purge   # runtimeStatus unloads all: nothing loaded yet
$mmctl --address "$xgb" runtime load breast-cancer "$work/models/xgboost/breast-cancer.json" --type xgboost
$mmctl --address "$xgb" infer breast-cancer --file "$work/models/xgboost/breast-cancer-request.json"

echo "== the sklearn runtime: load the MNIST SVM, and KServe's sample digit (expect 8)"
start_runtime sklearn /usr/bin/python3 runtimes/sklearn/server.py --models-dir "$work"
skl=127.0.0.1:$RUNTIME_PORT
$mmctl --address "$skl" runtime load mnist-svm "$work/models/sklearn/mnist-svm.joblib" --type sklearn
$mmctl --address "$skl" infer mnist-svm --file "$work/models/sklearn/mnist-svm-request.json"
echo "== a request that does not fit the model is refused with the reason"
echo '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}' |
  $mmctl --address "$skl" infer mnist-svm || true

echo "== mm-node beside each runtime: the pods become one mesh"
echo "   (a node starts with runtimeStatus, which unloads what its runtime held: the mesh owns it;
   each node links models from the models root into its own cache dir, both inside the
   runtime's --models-dir, and serves the model API; routing inference through the nodes comes next)"
# A cluster of its own, so that the hand-written records above do not mix with the mesh's.
export MM_CLUSTER=mesh
node_pids=()
declare -A node_api
for spec in "node-xgb $xgb mm-runtime xgboost" "node-skl $skl mm-sklearn sklearn"; do
  set -- $spec
  build/node/mm-node --instance-id "$1" --runtime "$2" --runtime-name "$3" --model-types "$4" \
    --zone local --internal-listen 127.0.0.1:0 --listen 127.0.0.1:0 --probe-listen 127.0.0.1:0 \
    --models-root "$work/models" --cache-dir "$work/cache/$1" \
    >"$work/$1.out" 2>"$work/$1.log" </dev/null &
  node_pids+=($!)
  port=
  for _ in $(seq 1 300); do
    port=$(awk '/^LISTENING /{print $2; exit}' "$work/$1.out")
    [ -n "$port" ] && break
    kill -0 "$!" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "demo: $1 did not start; its log:" >&2
    tail -20 "$work/$1.log" >&2
    exit 1
  fi
  node_api[$1]=127.0.0.1:$port
done
$mmctl registry dump --prefix instances/
echo "== register both models through one node's model API: each is placed on the node whose"
echo "   runtime serves its type, loaded, and its copy published in etcd"
$mmctl model register breast-cancer --type xgboost --path xgboost/breast-cancer.json \
  --load-now --sync --node "${node_api[node-xgb]}"
$mmctl model register mnist-svm --type sklearn --path sklearn/mnist-svm.joblib \
  --load-now --sync --node "${node_api[node-xgb]}"
$mmctl model status mnist-svm --node "${node_api[node-skl]}"
$mmctl registry dump --prefix copies/
echo "== inference through the mesh: node-xgb does not hold mnist-svm, so it forwards the request"
echo "   untouched to node-skl, whose runtime answers (expect 8)"
$mmctl --address "${node_api[node-xgb]}" infer mnist-svm \
  --file "$work/models/sklearn/mnist-svm-request.json"
echo "== a vmodel (an InferenceService's name) pointing at it: the same request by that name"
$mmctl vmodel set example-mnist-isvc mnist-svm --sync --node "${node_api[node-skl]}"
$mmctl --address "${node_api[node-skl]}" infer example-mnist-isvc \
  --file "$work/models/sklearn/mnist-svm-request.json"
echo "== a model nobody registered: NOT_FOUND, naming it"
$mmctl --address "${node_api[node-xgb]}" infer no-such-model \
  --file "$work/models/sklearn/mnist-svm-request.json" || true
echo "== a model whose file is not in storage: tried, and reported failed with the reason"
$mmctl model register missing --type xgboost --path xgboost/no-such-model.json \
  --load-now --sync --node "${node_api[node-skl]}" || true
echo "== SIGTERM the nodes: each unloads, revokes its lease, and is gone with its copies"
kill -TERM "${node_pids[@]}"
for pid in "${node_pids[@]}"; do wait "$pid" || echo "demo: node $pid exited $?" >&2; done
$mmctl registry dump --prefix instances/
$mmctl registry dump --prefix copies/

if [ "${MM_DEMO_KEEP:-0}" = 1 ]; then
  echo "== etcd keeps running: export MM_ETCD_ENDPOINTS=$endpoint MM_CLUSTER=demo"
  echo "   stop it with: (. scripts/lib-etcd.sh; etcd_stop $work) or kill $etcd_pid"
fi
echo "== demo done"
