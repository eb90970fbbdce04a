#!/usr/bin/env bash
# scripts/setup.sh — install what mambagrad needs from Debian packages (and nothing else).
#
#   scripts/setup.sh            build tools + libraries (CMake, Ninja, g++, Eigen, doctest,
#                               PCRE2 and utf8proc for the Hugging Face tokenizer, Open MPI
#                               for data-parallel training and its tests)
#   scripts/setup.sh --data     ... plus the default training text (Debian's `fortunes`)
#   scripts/setup.sh --torch    ... plus python3-torch/numpy/OpenBLAS for the reference scripts
#
# Installs only what is missing. As root it runs apt-get; otherwise it prints the exact
# command to run and stops.
set -euo pipefail

pkgs=(cmake ninja-build g++ libeigen3-dev doctest-dev libpcre2-dev libutf8proc-dev libopenmpi-dev openmpi-bin)
for arg in "$@"; do
  case "$arg" in
    --data) pkgs+=(fortunes) ;;
    --torch) pkgs+=(python3-torch python3-numpy libopenblas0-pthread) ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present (${pkgs[*]})"
  exit 0
fi

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing Debian packages: ${missing[*]}" >&2
  echo "setup: run as root:  $cmd" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}"
bash -c "$cmd"
