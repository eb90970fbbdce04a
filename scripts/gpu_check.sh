#!/usr/bin/env bash
# scripts/gpu_check.sh — the whole GPU check in one call, on a machine with an NVIDIA GPU.
#
#   scripts/gpu_check.sh [steps...]     default: info build tests bench train nccl
#
# Steps: info (GPU, driver, tools) | build (Release, MG_CUDA=ON, architectures native, all
# cores, into build-gpu/) | tests (every CUDA test case: mg_tests -sf='*cuda*') | sanitize
# (compute-sanitizer memcheck + racecheck over the CUDA scan tests) | bench (bench_scan,
# bench_ops and bench_generate --device cuda) | train (bench_train --device cuda --config 130m --precision f32|tf32|bf16, --config all; train_lm
# --device cuda on the fortunes text when it is installed) | nccl (scripts/nccl_check.sh: the
# data-parallel path through a 1-rank NCCL communicator equals the plain GPU run).
# Every log goes to gpu-check-logs/, packed at the end into gpu-check-logs.tgz; the key lines
# are collected in gpu-check-logs/summary.txt and printed last. Needs what scripts/setup.sh
# installs (run it first) and the CUDA toolkit. Extra CMake flags: MG_CMAKE_ARGS="...".
# (Our own runs on borrowed GPU machines use the same steps through ../shared/gpu/check.sh.)
set -u
case "${1:-}" in -h|--help) sed -n '2,15p' "$0"; exit 0 ;; esac
cd "$(dirname "$0")/.."
O=gpu-check-logs; BLD=build-gpu; rm -rf "$O"; mkdir -p "$O"; S=$O/summary.txt; : >"$S"
START=$(date +%s)
trap 'tar czf gpu-check-logs.tgz "$O"; echo; cat "$S"; echo "logs: gpu-check-logs.tgz"' EXIT
say() { echo "== +$(( $(date +%s) - START ))s $*" | tee -a "$S"; }
run() {  # run NAME cmd...: the command's output into $O/NAME.log, its status into the summary
  local n=$1; shift; local t0=$(date +%s)
  "$@" >"$O/$n.log" 2>&1; local rc=$?
  say "$n: exit $rc in $(( $(date +%s) - t0 ))s"; return $rc
}
for st in ${*:-info build tests bench train nccl}; do case $st in
info)
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    nvcc --version | tail -1; g++ --version | head -1; cmake --version | head -1
    echo "cores $(nproc)"; git log --oneline -1; } >"$O/info.log" 2>&1
  cat "$O/info.log" >>"$S" ;;
build)
  run build bash -c "cmake -S . -B $BLD -G Ninja -DCMAKE_BUILD_TYPE=Release -DMG_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=native ${MG_CMAKE_ARGS:-} && cmake --build $BLD -j$(nproc)" \
    || { tail -40 "$O/build.log" >>"$S"; exit 1; } ;;
tests)
  run cuda_tests $BLD/tests/mg_tests -sf='*cuda*' --duration=true
  grep -E "ERROR|FAILED|test cases|assertions" "$O/cuda_tests.log" | tail -30 >>"$S" ;;
sanitize)
  run memcheck compute-sanitizer --tool memcheck --error-exitcode 9 $BLD/tests/mg_tests -sf='*cuda_scan*'
  tail -4 "$O/memcheck.log" >>"$S"
  run racecheck compute-sanitizer --tool racecheck --error-exitcode 9 $BLD/tests/mg_tests -sf='*cuda_scan*'
  tail -4 "$O/racecheck.log" >>"$S" ;;
bench)
  run bench_scan $BLD/examples/bench_scan --device cuda --max-log2-len 15
  tail -14 "$O/bench_scan.log" >>"$S"
  run bench_scan_bf16 $BLD/examples/bench_scan --device cuda --versions v2 --dtype bf16 --max-log2-len 15
  tail -8 "$O/bench_scan_bf16.log" >>"$S"
  run bench_ops $BLD/examples/bench_ops --device cuda
  tail -30 "$O/bench_ops.log" >>"$S"
  run bench_generate $BLD/examples/bench_generate --device cuda
  tail -6 "$O/bench_generate.log" >>"$S" ;;
train)
  for P in f32 tf32 bf16; do  # issue 13: the precisions side by side
    run bench_train_$P $BLD/examples/bench_train --device cuda --config 130m --repeats 5 --precision $P
    tail -3 "$O/bench_train_$P.log" >>"$S"
  done
  run bench_train_small $BLD/examples/bench_train --device cuda --config all
  tail -3 "$O/bench_train_small.log" >>"$S"
  if [ -d /usr/share/games/fortunes ]; then
    run train_lm $BLD/examples/train_lm --device cuda --run-dir "$O/run-gpu"
    grep -E "val|tok/s" "$O/train_lm.log" | tail -4 >>"$S"
  fi ;;
nccl)
  run nccl bash scripts/nccl_check.sh $BLD
  tail -4 "$O/nccl.log" >>"$S" ;;
*) echo "gpu_check.sh: unknown step '$st' (see --help)" >&2; exit 2 ;;
esac; done
say "done"
