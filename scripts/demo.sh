#!/usr/bin/env bash
# demo.sh - README command 1: install what is missing, build, start a local etcd, write the
# registry records a cluster keeps (instance, model, copy, vmodel) through mmctl, and read them
# back with mmctl and with etcd's own etcdctl. etcd is stopped by its pid at the end, unless
# MM_DEMO_KEEP=1 (then the script prints how to use and stop it).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/setup.sh build

# shellcheck source=scripts/lib-etcd.sh
. scripts/lib-etcd.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/modelmesh-demo.XXXXXX")
stop() {
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
if [ "${MM_DEMO_KEEP:-0}" = 1 ]; then
  echo "== etcd keeps running: export MM_ETCD_ENDPOINTS=$endpoint MM_CLUSTER=demo"
  echo "   stop it with: (. scripts/lib-etcd.sh; etcd_stop $work) or kill $etcd_pid"
fi
echo "== demo done"
