#!/usr/bin/env bash
# scripts/test.sh — set up, build and run the whole test suite (CTest over doctest cases).
#
#   scripts/test.sh              Release build in build/, every test
#   scripts/test.sh --sanitize   AddressSanitizer + UBSan build in build-sanitize/, every test
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

if [ "${1:-}" = "--sanitize" ]; then
  # No CUDA: the sanitizer build checks the C++ paths (the CUDA code is compiled by the release build).
  scripts/build.sh build-sanitize -DMG_SANITIZE=ON -DMG_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  ctest --test-dir build-sanitize --output-on-failure -j 2
else
  # MG_CUDA=AUTO (default) compiles the CUDA backend when nvcc is found; CI sets MG_CUDA=ON.
  scripts/build.sh build -DMG_CUDA="${MG_CUDA:-AUTO}"
  ctest --test-dir build --output-on-failure -j 2
fi
