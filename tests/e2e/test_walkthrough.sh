#!/usr/bin/env bash
# test_walkthrough.sh SRC_ROOT BUILD_DIR - the walkthrough end to end, as a user runs it: a local
# cluster (deploy/local/cluster.sh up) in a temporary state dir on free ports, then
# deploy/local/walkthrough.sh, whose transcript is checked step by step; the cluster is always
# torn down (cluster.sh down), even when a step fails, and nothing it started may be left.
# Exit 77 (skipped) while cluster.sh does not exist.
set -euo pipefail
src=${1:?usage: test_walkthrough.sh SRC_ROOT BUILD_DIR}
build=$(cd "${2:?usage: test_walkthrough.sh SRC_ROOT BUILD_DIR}" && pwd)
cluster=$src/deploy/local/cluster.sh
walk=$src/deploy/local/walkthrough.sh
if [ ! -x "$cluster" ]; then
  echo "SKIP: $cluster does not exist"
  exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/mm-walk-test.XXXXXX")
export MM_LOCAL_DIR=$dir/cluster MM_BUILD_DIR=$build MM_LOCAL_SETUP=0
export MM_LOCAL_GRPC_PORT=0 MM_LOCAL_ETCD_PORT=0 MM_LOCAL_S3_PORT=0
export MM_WALK_WAIT=30
failures=0
check() { # check WHAT CMD...
  local what=$1
  shift
  if "$@"; then
    echo "ok: $what"
  else
    echo "FAILED: $what" >&2
    failures=$((failures + 1))
  fi
}

finish() {
  local rc=$?
  echo "--- teardown: cluster.sh down"
  timeout 60 "$cluster" down || echo "FAILED: cluster.sh down exited $?" >&2
  # Nothing started from the state dir may survive the test.
  local left
  left=$(pgrep -f -- "$MM_LOCAL_DIR" || true)
  if [ -n "$left" ]; then
    echo "FAILED: processes left that name $MM_LOCAL_DIR:" >&2
    ps -o pid,args -p "$(tr '\n' ',' <<<"$left" | sed 's/,$//')" >&2 || true
    rc=1
  fi
  # A sanitizer build: no part may have reported anything (read after down: leaks are
  # reported at exit).
  if grep -lE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$dir"/cluster/logs/*.log 2>/dev/null; then
    echo "FAILED: a sanitizer report in the logs above" >&2
    rc=1
  fi
  if [ "$rc" -ne 0 ]; then
    echo "--- logs (kept in $dir/cluster/logs), their last lines:" >&2
    for f in "$dir"/cluster/logs/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2
      tail -n 15 "$f" >&2
    done
  else
    rm -rf "$dir"
  fi
  exit "$rc"
}
trap finish EXIT

t0=$(date +%s)
echo "--- cluster.sh up (state $MM_LOCAL_DIR)"
timeout 90 "$cluster" up
echo "--- up took $(( $(date +%s) - t0 )) s"

echo "--- walkthrough.sh"
t1=$(date +%s)
rc=0
timeout 90 "$walk" >"$dir/transcript" 2>&1 || rc=$?
cat "$dir/transcript"
echo "--- walkthrough exited $rc after $(( $(date +%s) - t1 )) s"
t=$dir/transcript

has() { grep -Eq -- "$1" "$t"; }
# Lines in order: each pattern found after the previous one.
in_order() {
  local line=0 p n
  for p in "$@"; do
    n=$(tail -n +"$((line + 1))" "$t" | grep -nE -m1 -- "$p" | cut -d: -f1 || true)
    if [ -z "$n" ]; then
      echo "  not found after line $line: $p" >&2
      return 1
    fi
    line=$((line + n))
  done
}
check "the walkthrough exits 0" [ "$rc" -eq 0 ]
check "every step is there, in order" in_order \
  '^=== 0\. ' '^\$ mmctl get secret storage-config -o json' '"localMinIO"' \
  '"bucket": *"modelmesh-example-models"' \
  '^=== 1\. ' '^inferenceservice.serving.kserve.io/example-mnist-isvc created$' \
  '^=== 2\. ' 'Transition Status: +UpToDate' '^grpc://modelmesh-serving.modelmesh-serving:8033$' \
  '^=== 3\. ' '"model_name": *"example-mnist-isvc__isvc-[0-9a-f]+"' '^\(answered [0-9]+ ms after' \
  'Active Model State: +Loaded' \
  '^=== 4\. ' '^inferenceservice.serving.kserve.io/example-mnist-isvc configured$' \
  '^(    Transition Status: +InProgress|\(the new revision loaded before describe could look)' \
  '^2 Ready=True active=Loaded target=Loading InProgress copies=[0-9]+$' \
  'Transition Status: +UpToDate' \
  '^while it changed: [0-9]+ requests, .* 0 not 8 or failed$' \
  '^=== 5\. ' '^inferenceservice.serving.kserve.io/example-mnist-isvc configured$' \
  'Transition Status: +BlockedByFailedLoad' '^\$ mmctl get isvc$' \
  '^example-mnist-isvc +grpc://modelmesh-serving.modelmesh-serving:8033 +True' \
  '^\$ etcdctl get --prefix /modelmesh/' '^The walkthrough is done'
check "no step failed" bash -c "! grep -q 'walkthrough: FAILED' '$t'"
check "the first answer by the sklearn revision, 8" has '"data": *\[ *8 *\]'
rc=0
timeout 90 "$walk" >"$dir/transcript2" 2>&1 || rc=$?
grep -E "FAILED|exists from an earlier run|^=== |walkthrough is done" "$dir/transcript2" || true
check "a second run exits 0" [ "$rc" -eq 0 ]
check "the second run deletes the first one's InferenceService" \
  grep -q "exists from an earlier run: deleting it" "$dir/transcript2"
[ "$rc" -eq 0 ] || tail -n 40 "$dir/transcript2" >&2
echo "--- total $(( $(date +%s) - t0 )) s"
[ "$failures" -eq 0 ]
