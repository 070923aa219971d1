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
  meson test -C "$dir" "$@" --print-errorlogs --num-processes "$(nproc)" || rc=$?
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
run_suite build "normal build" || status=1
if [ $quick -eq 0 ]; then
  scripts/setup.sh build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  run_suite build-asan "ASan+UBSan build" --no-suite chaos || status=1
  # A short libFuzzer run of each fuzz target (longer runs: see README, Fuzzing).
  CC=clang scripts/setup.sh build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
  for target in build-fuzz/tests/fuzz/fuzz_*; do
    [ -f "$target" ] && [ -x "$target" ] || continue
    case "$target" in *_driver) continue ;; esac
    echo "== fuzzing $(basename "$target") for ${MM_FUZZ_SECONDS:-20} s"
    corpus=$(mktemp -d)
    seeds=tests/fuzz/seeds/$(basename "$target")
    [ -d "$seeds" ] || seeds=
    if "$target" -max_total_time="${MM_FUZZ_SECONDS:-20}" -print_final_stats=1 "$corpus" \
         ${seeds:+"$seeds"} >"$corpus.log" 2>&1; then
      passed=$((passed + 1)); grep -E "^Done|stat::number_of_executed_units" "$corpus.log" || true
    else
      failed=$((failed + 1)); tail -40 "$corpus.log"; status=1
    fi
    rm -rf "$corpus" "$corpus.log"
  done
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
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
