#!/usr/bin/env bash
# test_make_mnist.sh MAKE_MNIST MM_RUNTIME MMCTL - the walkthrough's XGBoost model: make-mnist is
# deterministic (two runs, the same bytes), says the sample is an 8, refuses a bad CSV naming
# the row, and mm-runtime answers the sample request with one output predict, FP32, shape [1],
# value 8 (what the walkthrough checks after switching example-mnist-isvc to it).
set -euo pipefail
maker=${1:?usage: test_make_mnist.sh MAKE_MNIST MM_RUNTIME MMCTL}
runtime=${2:?}
mmctl=${3:?}
dir=$(mktemp -d "${TMPDIR:-/tmp}/mm-make-mnist.XXXXXX")
rt_pid=""
finish() {
  local rc=$?
  if [ -n "$rt_pid" ]; then
    kill "$rt_pid" 2>/dev/null || true
    wait "$rt_pid" 2>/dev/null || true
  fi
  [ "$rc" -ne 0 ] || rm -rf "$dir"
  [ "$rc" -eq 0 ] || echo "FAILED (files kept in $dir)" >&2
  exit "$rc"
}
trap finish EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }

"$maker" "$dir/a" >"$dir/a.out"
"$maker" "$dir/b" >"$dir/b.out"
cat "$dir/a.out"
cmp "$dir/a/xgboost/mnist.json" "$dir/b/xgboost/mnist.json" || fail "two runs, different models"
grep -qx 'expected predict\[0\] = 8' "$dir/a.out" || fail "the maker's expected prediction 8"
acc=$(sed -n 's/.*held-out accuracy [0-9]*\/[0-9]* = \(0\.[0-9]*\)$/\1/p' "$dir/a.out")
awk -v a="$acc" 'BEGIN { exit !(a >= 0.85) }' || fail "held-out accuracy >= 0.85 (got '$acc')"

# A CSV that is not the digits: refused, naming the file, the row and the column.
printf '0,1,2\n' >"$dir/bad.csv"
rc=0
"$maker" "$dir/c" "$dir/bad.csv" 2>"$dir/bad.err" || rc=$?
cat "$dir/bad.err"
[ "$rc" -eq 1 ] || fail "a bad CSV: exit 1 (got $rc)"
grep -q "bad.csv: row 1, column 3" "$dir/bad.err" || fail "the message names the row and column"
[ ! -e "$dir/c/xgboost/mnist.json" ] || fail "no model written from a bad CSV"

"$runtime" --listen 127.0.0.1:0 --models-dir "$dir/a" >"$dir/rt.out" 2>&1 &
rt_pid=$!
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/^LISTENING \([0-9]*\)$/\1/p' "$dir/rt.out")
  [ -n "$port" ] && break
  kill -0 "$rt_pid" 2>/dev/null || fail "mm-runtime exited: $(cat "$dir/rt.out")"
  sleep 0.1
done
[ -n "$port" ] || fail "mm-runtime did not print LISTENING within 10 s"
"$mmctl" --address "127.0.0.1:$port" runtime load mnist "$dir/a/xgboost/mnist.json" --type xgboost
out=$("$mmctl" --address "127.0.0.1:$port" infer mnist --file "$dir/a/xgboost/mnist-request.json")
echo "$out"
compact=$(tr -d ' \n' <<<"$out")
[ "$compact" = '{"model_name":"mnist","outputs":[{"name":"predict","datatype":"FP32","shape":[1],"data":[8]}]}' ] ||
  fail "predict FP32 [1] = 8"
echo "ok"
