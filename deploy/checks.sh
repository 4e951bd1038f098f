#!/usr/bin/env bash
# The checking stage of CI, run by deploy/test.sh after the plain build and
# ctest (GEOPS_CHECKS=0 skips it there). Each stage builds into its own
# directory and fails on any finding:
#   asan  the host test suite built with ASan + UBSan (gcc)    build-asan
#         and the RDMA suite, on SoftRoCE in the throw-away VM
#         of tests/rdma_in_vm.sh when that tool is there
#   tsan  the host test suite built with TSan (gcc)            build-tsan
#   fuzz  libFuzzer on every codec parser for
#         GEOPS_FUZZ_SECONDS (default 60) (clang)              build-fuzz
# The multi-process tests start the instrumented `geops` of the same build,
# so a report in any process of a test cluster counts too: a sanitizer that
# finds something exits 66, a code no geops process uses, and the tests
# check every process's exit status. This script also fails on any report
# written during the stage, even where a test did not look: ASan, LSan and
# TSan write theirs to one directory per stage (log_path); gcc's UBSan keeps
# its own copy of the runtime that ignores log_path, so its "runtime error:"
# lines are looked for in the test log and in the test clusters' process
# logs (/tmp/geops-test.*, see tests/cluster_util.h).
# Usage: bash deploy/checks.sh [asan] [tsan] [fuzz]      (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
stages=("$@")
((${#stages[@]})) || stages=(asan tsan fuzz)
jobs=$(nproc)

# Not meaningful under a sanitizer: the RDMA suites (label rdma; they need
# verbs devices or the SoftRoCE VM) and the install test (it links an
# uninstrumented program against the instrumented library).
exclude_labels='rdma|vm'
exclude_tests='^install_and_find_package$'
# Tests too slow for TSan's pace on 2 cores go here ('|^name$' each). None
# now: the WAN reset test was lightened and given room (35 s under TSan).
exclude_tsan=''

elapsed() { echo "$(($(date +%s) - $1))s"; }

# Prints every report written during a stage and fails when there is one.
check_reports() {
  local stage=$1 dir=$2 reports=$3 start=$4 f found=0
  # The first few in full; one bug in geops can fail every process.
  while IFS= read -r f; do
    if ((found++ == 0)); then echo "checks[$stage]: sanitizer reports (one file per process):"; fi
    echo "---- $f"
    if ((found <= 6)); then head -n 120 "$f"; fi
  done < <(find "$reports" -type f -size +0 | sort)
  while IFS= read -r f; do
    if ((found++ == 0)); then echo "checks[$stage]: sanitizer reports:"; fi
    echo "---- $f"
    if ((found <= 6)); then grep -A 30 'runtime error:' "$f" | head -n 120; fi
  done < <({
    find "$dir/Testing/Temporary" -name 'LastTest*.log' -newer "$start"
    find /tmp -maxdepth 2 -path '/tmp/geops-test.*/*.log' -newer "$start" 2>/dev/null
  } | xargs -r grep -l 'runtime error:' | sort)
  return $((found > 0))
}

# Configures and builds the test binary and the geops executable it starts.
build() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$jobs" --target "${targets[@]}"
}

# Runs the host suite of build $2 with the sanitizer options in the
# environment; reports go to $3, which is emptied first.
run_suite() {
  local stage=$1 dir=$2 reports=$3 start=$2/stage-start rc=0 exclude=$exclude_tests
  [ "$stage" = tsan ] && exclude+=$exclude_tsan
  rm -rf "$reports" && mkdir -p "$reports" && touch "$start"
  (cd "$dir" && ctest --output-on-failure --timeout 600 --no-tests=error \
    -LE "$exclude_labels" -E "$exclude") || rc=$?
  check_reports "$stage" "$dir" "$reports" "$start" || rc=1
  return $rc
}

stage_asan() {
  local t0 dir=build-asan reports rc=0 rdma=0 asan ubsan
  local vm=${GEOPS_SOFTROCE_VM:-$root/../shared/tools/softroce-vm/run-in-softroce-vm.sh}
  t0=$(date +%s)
  targets=(geops_tests geops-bin geops-bench-geo)
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGEOPS_SANITIZE=address >/dev/null
  # (grep without -q: an early exit would fail the pipe under pipefail)
  if cmake --build "$dir" --target help | grep -w geops_rdma_tests >/dev/null && [ -x "$vm" ]; then
    rdma=1
    targets+=(geops_rdma_tests)
  fi
  build "$dir" -DGEOPS_SANITIZE=address
  echo "checks[asan]: built in $(elapsed "$t0")"
  reports=$root/$dir/sanitizer-reports
  asan="halt_on_error=1:exitcode=66:log_path=$reports/report:detect_leaks=1:detect_stack_use_after_return=1"
  ubsan="halt_on_error=1:exitcode=66:print_stacktrace=1"
  t0=$(date +%s)
  ASAN_OPTIONS="$asan:check_initialization_order=1:strict_string_checks=1" UBSAN_OPTIONS="$ubsan" \
    run_suite asan "$dir" "$reports" || rc=$?
  echo "checks[asan]: tests ran in $(elapsed "$t0")"
  if ((rdma == 0)); then
    echo "checks[asan]: RDMA suite skipped: no rdma build or no SoftRoCE VM tool at $vm"
    return $rc
  fi
  # The VM sees the host's files; its working directory (the build) is
  # writable, so the reports land in the same place. Its processes' own
  # logs stay in the VM: a UBSan finding there fails through exit code 66.
  t0=$(date +%s)
  rm -rf "$reports" && mkdir -p "$reports"
  (cd "$dir" && "$vm" -m 3G -t 900 -e "ASAN_OPTIONS=$asan" -e "UBSAN_OPTIONS=$ubsan" \
    "bash $root/tests/stacks_on_hang.sh 800 ./tests/geops_rdma_tests '[rdma]' -d yes") || rc=$?
  check_reports asan "$dir" "$reports" "$dir/stage-start" || rc=1
  echo "checks[asan]: RDMA suite ran in the SoftRoCE VM in $(elapsed "$t0")"
  return $rc
}

stage_tsan() {
  local t0 dir=build-tsan reports rc=0
  t0=$(date +%s)
  targets=(geops_tests geops-bin geops-bench-geo)
  build "$dir" -DGEOPS_SANITIZE=thread
  echo "checks[tsan]: built in $(elapsed "$t0")"
  reports=$root/$dir/sanitizer-reports
  t0=$(date +%s)
  TSAN_OPTIONS="halt_on_error=1:exitcode=66:log_path=$reports/report:second_deadlock_stack=1:suppressions=$root/tests/sanitizers/tsan.supp" \
    run_suite tsan "$dir" "$reports" || rc=$?
  echo "checks[tsan]: tests ran in $(elapsed "$t0")"
  return $rc
}

stage_fuzz() {
  local t0 dir=build-fuzz seconds=${GEOPS_FUZZ_SECONDS:-60} work rc=0
  t0=$(date +%s)
  targets=(geops_codec_fuzz geops_codec_corpus)
  build "$dir" -DGEOPS_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++
  echo "checks[fuzz]: built in $(elapsed "$t0")"
  # The fuzzer grows a scratch copy of the checked-in corpus, plus seeds
  # made by this build's encoder, so new wire fields are seeded too.
  work=$root/$dir/fuzz-run
  rm -rf "$work" && mkdir -p "$work/corpus" "$work/seeds" "$work/artifacts"
  cp tests/fuzz/corpus/* "$work/corpus/"
  "$dir/tests/geops_codec_corpus" "$work/seeds"
  t0=$(date +%s)
  "$dir/tests/geops_codec_fuzz" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "$work/seeds" >"$work/fuzz.log" 2>&1 || rc=$?
  echo "checks[fuzz]: fuzzed for $(elapsed "$t0"): $(grep -E '^Done [0-9]+ runs' "$work/fuzz.log" || true)"
  if ((rc != 0)) || [ -n "$(ls -A "$work/artifacts")" ]; then
    echo "checks[fuzz]: FAILED (exit $rc); the fuzzer's log ends:"
    grep -vE '^#[0-9]+' "$work/fuzz.log" | tail -n 80
    for a in "$work"/artifacts/*; do
      [ -f "$a" ] || continue
      echo "---- input $a (reproduce: $dir/tests/geops_codec_fuzz FILE); base64:"
      base64 "$a" | head -c 4096
      echo
    done
    return 1
  fi
}

failed=()
for s in "${stages[@]}"; do
  case $s in
    asan | tsan | fuzz) ;;
    *) echo "checks: unknown stage '$s' (asan, tsan, fuzz)" >&2; exit 2 ;;
  esac
  echo "checks[$s]: start"
  t=$(date +%s)
  # A subshell outside any `if`/`||`, so that set -e still stops a stage at
  # its first failing command (a build error) and the next stage runs.
  set +e
  (
    set -e
    "stage_$s"
  )
  rc=$?
  set -e
  if ((rc == 0)); then
    echo "checks[$s]: passed in $(elapsed "$t")"
  else
    echo "checks[$s]: FAILED after $(elapsed "$t")"
    failed+=("$s")
  fi
done
echo "checks: $((${#stages[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if ((${#failed[@]})); then
  echo "checks: failed: ${failed[*]}"
  exit 1
fi
