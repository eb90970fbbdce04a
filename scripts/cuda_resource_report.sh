#!/usr/bin/env bash
# scripts/cuda_resource_report.sh — the compiler's resource report (registers, shared memory,
# spills) of every selective-scan kernel, regenerated into docs/cuda_scan_resources.txt, and
# the check "no spills in v2" (exit status 1 when a v2 kernel spills).
#
#   scripts/cuda_resource_report.sh [ARCH]      ARCH: compute capability, default 90
#
# It compiles every kernel file of cuda/selective_scan/ (v1, v2's forward and backward,
# v3's walks and tile; v3.cu has no kernels) with the build's flags
# (CMakeLists.txt: -O3 -lineinfo --expt-relaxed-constexpr --extended-lambda -std=c++20) plus
# -Xptxas -v into a temporary directory; nothing in the build tree is touched.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ARCH="${1:-90}"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
OUT="$ROOT/docs/cuda_scan_resources.txt"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/selective_scan"  # for the v3 files
FLAGS=(-DMG_WITH_CUDA=1 -I"$ROOT" -isystem=/usr/include/eigen3 -O3 -DNDEBUG
       "--generate-code=arch=compute_${ARCH},code=[compute_${ARCH},sm_${ARCH}]" -lineinfo
       --expt-relaxed-constexpr --extended-lambda -std=c++20 -Xptxas -v)
{
  echo "# ptxas resource report for the CUDA selective scan (sm_${ARCH})"
  echo "# regenerate: scripts/cuda_resource_report.sh ${ARCH}"
  echo "# $("$NVCC" --version | tail -1)"
  echo "# kernel names demangled; one block per kernel: registers, spill stores/loads, smem"
  for f in v1.cu v2_forward.cu v2_backward.cu v3_walks.cu v3_tile.cu; do
    echo
    echo "## cuda/selective_scan/$f"
    start=$(date +%s.%N)
    "$NVCC" "${FLAGS[@]}" -x cu -c "$ROOT/cuda/selective_scan/$f" -o "$TMP/$f.o" 2> "$TMP/$f.log"
    end=$(date +%s.%N)
    grep -E "Compiling entry function|Function properties|spill stores|Used [0-9]+ registers" "$TMP/$f.log" \
      | sed -E "s/ptxas info *: //" \
      | while IFS= read -r line; do
          if [[ "$line" =~ Compiling\ entry\ function\ \'([^\']+)\' ]]; then
            echo "kernel: $(echo "${BASH_REMATCH[1]}" | c++filt)"
          else
            echo "    $line"
          fi
        done
    printf "# compile time of %s: %.1f s\n" "$f" "$(echo "$end - $start" | bc)"
  done
} > "$OUT"
# The check: no spills in any v2 kernel.
v2_spills=$(awk '/^## /{v2 = /v2_/} v2 && /spill stores/' "$OUT" \
            | grep -Ev "0 bytes spill stores, 0 bytes spill loads" || true)
if [[ -n "$v2_spills" ]]; then
  echo "CHECK FAILED: a v2 kernel spills:" | tee -a "$OUT"
  echo "$v2_spills" | tee -a "$OUT"
  exit 1
fi
echo "CHECK: no spills in v2 (every v2 kernel: 0 bytes spill stores, 0 bytes spill loads)" >> "$OUT"
# The same check for v3.
v3_spills=$(awk '/^## /{v3 = /v3/} v3 && /spill stores/' "$OUT" \
            | grep -Ev "0 bytes spill stores, 0 bytes spill loads" || true)
if [[ -n "$v3_spills" ]]; then
  echo "CHECK FAILED: a v3 kernel spills:" | tee -a "$OUT"
  echo "$v3_spills" | tee -a "$OUT"
  exit 1
fi
echo "CHECK: no spills in v3 (every v3 kernel: 0 bytes spill stores, 0 bytes spill loads)" >> "$OUT"
# v3's theoretical occupancy on sm_90, from the registers and shared memory above and the launch
# shapes (threads, dynamic smem: cuda/selective_scan/v3.cuh, kTileSmemBytes): 65536 registers
# (allocated per thread in multiples of 8), 228 KB shared memory (+1 KB reserved per block),
# 64 warps and 32 blocks per SM. bench_scan prints what the driver reports
# (cuda::scan_v3_occupancy(): cudaOccupancyMaxActiveBlocksPerMultiprocessor).
{
  echo
  echo "## v3 theoretical occupancy, sm_90 (blocks/SM = min of the four limits)"
  printf "%-26s %7s %5s %11s %12s %10s %8s\n" kernel threads regs smem_bytes "by regs/smem" blocks/SM warps/SM
  awk '
    /^## /{ v3 = /v3/ }
    v3 && /^kernel:/ { match($0, /v3_[a-z_]+_kernel(<[^>]*>)?/); name = substr($0, RSTART, RLENGTH)
                       sub(/\(mg::cuda::v3::WalkMode\)0/, "kLocal", name); sub(/\(mg::cuda::v3::WalkMode\)1/, "kForward", name)
                       sub(/\(mg::cuda::v3::WalkMode\)2/, "kRederive", name) }
    v3 && /Used [0-9]+ registers/ {
      match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART + 5, RLENGTH - 15) + 0
      smem = 0; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11) + 0
      threads = 256; dyn = 0
      if (name ~ /walk|bwd_local/) threads = 128
      if (name ~ /bwd_tile/) dyn = 107648
      warps = threads / 32; ralloc = int((regs + 7) / 8) * 8
      by_regs = int(65536 / (ralloc * 32 * warps)); by_warps = int(64 / warps)
      by_smem = int(233472 / (smem + dyn + 1024)); b = 32
      if (by_regs < b) b = by_regs; if (by_warps < b) b = by_warps; if (by_smem < b) b = by_smem
      printf "%-26s %7d %5d %11d %5d / %-5d %10d %8d\n", name, threads, regs, smem + dyn, by_regs, by_smem, b, b * warps
    }' "$OUT"
} > "$TMP/occupancy.txt"
cat "$TMP/occupancy.txt" >> "$OUT"
echo "wrote $OUT"
