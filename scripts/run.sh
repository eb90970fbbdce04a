#!/usr/bin/env bash
# scripts/run.sh — set up, build, and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --data
scripts/build.sh build
./build/examples/autograd_tour
