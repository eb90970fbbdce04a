#!/usr/bin/env bash
# mambagrad used from another CMake project (issue 16, item 15): a one-file program
# (tests/programs/downstream/) configured, built and run against
#   1. an installed copy: `cmake --install BUILD_DIR --prefix P` of the library this build
#      made (nothing is recompiled), then find_package(mambagrad) with CMAKE_PREFIX_PATH=P;
#   2. the source tree through add_subdirectory() (tests and examples off by default when not
#      top-level), CPU only and unoptimised (-O0) so that the library compiles quickly.
# Usage: downstream.sh SOURCE_DIR BUILD_DIR CMAKE CXX_COMPILER GENERATOR [add_subdirectory]
set -euo pipefail
src=$1 build=$2 cmake=$3 cxx=$4 gen=$5 mode=${6:-install}
T=$(mktemp -d "${TMPDIR:-/tmp}/mg_downstream_XXXXXX")
trap 'rm -rf "$T"' EXIT
app="$src/tests/programs/downstream"
if [ "$mode" = install ]; then
  "$cmake" --install "$build" --prefix "$T/prefix" > "$T/install.log"
  for f in lib/libmambagrad.a lib/cmake/mambagrad/mambagradConfig.cmake \
           lib/cmake/mambagrad/mambagradConfigVersion.cmake include/mambagrad/core/tensor.h; do
    [ -f "$T/prefix/$f" ] || { echo "FAIL: not installed: $f"; exit 1; }
  done
  "$cmake" -S "$app" -B "$T/app" -G "$gen" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Release \
           -DCMAKE_PREFIX_PATH="$T/prefix" > "$T/configure.log"
else
  "$cmake" -S "$app" -B "$T/app" -G "$gen" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Debug \
           -DMG_SOURCE_DIR="$src" -DMG_CUDA=OFF -DMG_NATIVE=OFF > "$T/configure.log"
  grep -q "mg_tests\|train_lm" "$T/app/build.ninja" 2> /dev/null &&
    { echo "FAIL: add_subdirectory builds mambagrad's tests or examples"; exit 1; }
fi
"$cmake" --build "$T/app" -j "${MG_JOBS:-2}" > "$T/build.log" || { tail -30 "$T/build.log"; exit 1; }
"$T/app/downstream"
