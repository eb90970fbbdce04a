#!/usr/bin/env bash
# scripts/cuda_resource_report.sh — the compiler's resource report (registers, shared memory,
# spills) of every selective-scan kernel, regenerated into docs/cuda_scan_resources.txt, and
# the check "no spills in v2" (exit status 1 when a v2 kernel spills).
#
#   scripts/cuda_resource_report.sh [ARCH]      ARCH: compute capability, default 90
#
# It compiles cuda/selective_scan.cu, cuda/selective_scan_v2.cu and v3's two files
# (cuda/selective_scan/v3.cu, v3_backward.cu) with the build's flags
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
  for f in selective_scan.cu selective_scan_v2.cu selective_scan/v3.cu selective_scan/v3_backward.cu; do
    echo
    echo "## cuda/$f"
    start=$(date +%s.%N)
    "$NVCC" "${FLAGS[@]}" -x cu -c "$ROOT/cuda/$f" -o "$TMP/$f.o" 2> "$TMP/$f.log"
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
v2_spills=$(awk '/^## /{v2 = /selective_scan_v2/} v2 && /spill stores/' "$OUT" \
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
echo "wrote $OUT"
