#!/usr/bin/env bash
# test.sh - install what is missing, build, and run the whole test suite twice: a normal build
# and an AddressSanitizer + UBSan build (leaks fail the run). The chaos suite (a few minutes:
# chaos_short and the chaos modules' tests) runs in the normal build only; the full chaos run
# is scripts/chaos.sh.
#   scripts/test.sh            the whole suite, both builds (what CI runs)
#   scripts/test.sh --quick    normal build only
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
quick=0
[ "${1:-}" = "--quick" ] && quick=1

passed=0 failed=0 skipped=0
failed_logs=() # testlog.json files with a failure, shown again at the end
run_suite() { # build-dir, label, meson test flags...
  local dir=$1 label=$2 rc=0
  shift 2
  echo "== $label: meson test ($dir)"
  local t0=$SECONDS
  meson test -C "$dir" "$@" --print-errorlogs --num-processes "$(nproc)" || rc=$?
  echo "== $label: the suite took $((SECONDS - t0)) s"
  local log="$dir/meson-logs/testlog.json"
  if [ -f "$log" ]; then
    passed=$((passed + $(grep -c '"result": "OK"' "$log" || true)))
    failed=$((failed + $(grep -c -E '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" || true)))
    skipped=$((skipped + $(grep -c '"result": "SKIP"' "$log" || true)))
    grep -q -E '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" && failed_logs+=("$log")
  fi
  return $rc
}

status=0
# Warnings are errors here (not in a user's own build, where a newer compiler may warn more).
scripts/setup.sh build -Dwerror=true
echo "== normal build: built in $SECONDS s from the start"
run_suite build "normal build" || status=1
if [ $quick -eq 0 ]; then
  scripts/setup.sh build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  run_suite build-asan "ASan+UBSan build" --no-suite chaos || status=1
  # A short libFuzzer run of each fuzz target (longer runs: see README, Fuzzing), as many at
  # once as there are cores; each one's result in order.
  CC=clang scripts/setup.sh build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
  fuzz_s=${MM_FUZZ_SECONDS:-20}
  targets=()
  for target in build-fuzz/tests/fuzz/fuzz_*; do
    [ -f "$target" ] && [ -x "$target" ] || continue
    case "$target" in *_driver) continue ;; esac
    targets+=("$target")
  done
  echo "== fuzz build: ready at $SECONDS s from the start"
  fuzz_dir=$(mktemp -d)
  for ((k = 0; k < ${#targets[@]}; k += $(nproc))); do
    batch=("${targets[@]:k:$(nproc)}")
    for target in "${batch[@]}"; do
      name=$(basename "$target")
      echo "== fuzzing $name for $fuzz_s s"
      seeds=tests/fuzz/seeds/$name
      [ -d "$seeds" ] || seeds=
      mkdir -p "$fuzz_dir/$name"
      ( "$target" -max_total_time="$fuzz_s" -print_final_stats=1 "$fuzz_dir/$name" \
          ${seeds:+"$seeds"} >"$fuzz_dir/$name.log" 2>&1
        echo $? >"$fuzz_dir/$name.rc" ) &
    done
    wait
  done
  for target in "${targets[@]}"; do
    name=$(basename "$target")
    if [ "$(cat "$fuzz_dir/$name.rc" 2>/dev/null)" = 0 ]; then
      passed=$((passed + 1))
      echo "== $name:"; grep -E "^Done|stat::number_of_executed_units" "$fuzz_dir/$name.log" || true
    else
      failed=$((failed + 1)); echo "== $name FAILED:"; tail -40 "$fuzz_dir/$name.log"; status=1
    fi
  done
  rm -rf "$fuzz_dir"
fi
# The failures again, last: each failed test's name and the end of its output (a CI page may
# show only the end of this run).
for log in "${failed_logs[@]}"; do
  python3 - "$log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    if t.get("result") in ("FAIL", "TIMEOUT", "ERROR", "UNEXPECTEDPASS"):
        out = ((t.get("stdout") or "") + (t.get("stderr") or "")).splitlines()
        print(f"== {t['result']}: {t['name']} ({sys.argv[1]}), its last {min(len(out), 80)} lines:")
        print("\n".join(out[-80:]))
PY
done
echo "== all of it took $SECONDS s"
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
