#!/usr/bin/env bash
# demo.sh - README command 1: install what is missing and build (scripts/setup.sh); start the
# local cluster (deploy/local/cluster.sh up: etcd, s3rver holding the example models, the
# storage-config Secret, two pods of each ServingRuntime, two controllers, the gateway on
# 127.0.0.1:8033); run KServe ModelMesh's "deploying models" walkthrough against it
# (deploy/local/walkthrough.sh), printing each command and what it shows; then say how to keep
# using the cluster and how to stop it. The cluster keeps running: `deploy/local/cluster.sh
# down` stops it. Run again, it reuses the running cluster and the walkthrough starts clean.
# Environment: as deploy/local/cluster.sh's (MM_LOCAL_DIR, MM_BUILD_DIR, MM_LOCAL_GRPC_PORT,
# MM_LOCAL_ETCD_PORT, MM_LOCAL_S3_PORT).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${MM_BUILD_DIR:-build}
state=${MM_LOCAL_DIR:-$top/.cluster}

echo "== 1/3 scripts/setup.sh $build: install what is missing, build"
scripts/setup.sh "$build"

echo "== 2/3 deploy/local/cluster.sh up: the local cluster"
MM_BUILD_DIR=$(cd "$build" && pwd) MM_LOCAL_SETUP=0 deploy/local/cluster.sh up

rc=0
if [ -x deploy/local/walkthrough.sh ]; then
  echo "== 3/3 deploy/local/walkthrough.sh: KServe ModelMesh's walkthrough, step by step"
  MM_LOCAL_DIR=$state deploy/local/walkthrough.sh || rc=$?
  [ "$rc" = 0 ] || echo "demo: the walkthrough failed (exit $rc): its message above; the logs: deploy/local/cluster.sh logs" >&2
else
  echo "== 3/3 (deploy/local/walkthrough.sh is not in this tree: the cluster is up, use it below)"
fi

cat <<EOT

== the local cluster keeps running ($state)
  . $state/env                          # then mmctl and etcdctl talk to it
  $build/cli/mmctl get isvc                 # apply -f, get, describe, delete: kubectl's verbs
  $build/cli/mmctl describe isvc example-mnist-isvc
  etcdctl --endpoints "\$MM_ETCD_ENDPOINTS" get --prefix /modelmesh/
  gRPC clients (KServe V2 inference, port 8033 unless MM_LOCAL_GRPC_PORT): \$MM_GRPC_ADDRESS
  deploy/local/cluster.sh status            # every part: pid, port, alive, ready, log
  deploy/local/cluster.sh logs [PART]       # the logs, one folder: $state/logs
  deploy/local/cluster.sh down              # stop it (what up started, by pid; logs kept)
EOT
exit "$rc"
