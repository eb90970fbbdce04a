#!/usr/bin/env bash
# scripts/build.sh [build-dir] [extra cmake args...] — configure (once) and build with -j2.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
if [ ! -f "$dir/CMakeCache.txt" ] || [ $# -gt 0 ]; then
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build "$dir" -j "${MG_JOBS:-2}"
