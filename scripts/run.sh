#!/usr/bin/env bash
# scripts/run.sh — set up, build, and run the main job: train the default byte-level Mamba LM
# on the default data (Debian's fortunes) and show what it learned (validation loss, samples).
# Extra arguments go to train_lm (see ./build/examples/train_lm --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --data
scripts/build.sh build
exec ./build/examples/train_lm "$@"
