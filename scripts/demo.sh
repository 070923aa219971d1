#!/usr/bin/env bash
# demo.sh - README command 1: install what is missing, build, start a local etcd, write the
# registry records a cluster keeps (instance, model, copy, vmodel) through mmctl, and read them
# back with mmctl and with etcd's own etcdctl. etcd is stopped by its pid at the end, unless
# MM_DEMO_KEEP=1 (then the script prints how to use and stop it).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/setup.sh build

# A free loopback port: nothing answers a connect there.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 30000))
    port_free "$p" && port_free "$((p + 1))" && { echo "$p"; return 0; }
  done
  echo "demo: no free port found" >&2
  return 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/modelmesh-demo.XXXXXX")
port=$(pick_port)
endpoint="http://127.0.0.1:$port"
etcd --name demo --data-dir "$work/etcd" \
  --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
  --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-cluster "demo=http://127.0.0.1:$((port + 1))" \
  --logger zap --log-level warn >"$work/etcd.log" 2>&1 &
etcd_pid=$!
stop() {
  if [ "${MM_DEMO_KEEP:-0}" != 1 ]; then
    kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null || true
    rm -rf "$work"
  fi
}
trap stop EXIT
for _ in $(seq 1 150); do
  curl -fsS "$endpoint/health" 2>/dev/null | grep -q '"health":"true"' && break
  kill -0 "$etcd_pid" 2>/dev/null || { echo "demo: etcd exited; log:"; cat "$work/etcd.log"; exit 1; }
  sleep 0.1
done
curl -fsS "$endpoint/health" >/dev/null || { echo "demo: etcd not healthy; log:"; cat "$work/etcd.log"; exit 1; }
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
  echo "== etcd keeps running: export MM_ETCD_ENDPOINTS=$endpoint MM_CLUSTER=demo; stop it with: kill $etcd_pid"
fi
echo "== demo done"
