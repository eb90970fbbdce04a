#!/usr/bin/env bash
# scripts/scaling.sh — data-parallel scaling on one machine (issue 15): one process with 2 OpenMP
# threads against 2 MPI ranks with 1 thread each, on the same global batch (8 x 512 bytes of the
# fortunes text, bench_train's small model). Each round runs the three commands in turn
# (interleaved, so a change in machine load hits all three); a run's figure is the median
# tokens/s of steps 3-16 from its log.jsonl; the summary is the median over rounds.
# Run it on a quiet machine: oversubscribed cores punish OpenMP barriers and MPI ranks unequally.
#
#   bash scripts/scaling.sh [ROUNDS=4] [BUILD_DIR=build]
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n 2,9p "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
cd "$(dirname "$0")/.."
ROUNDS=${1:-4}
B=${2:-build}/examples/train_lm
[[ -x $B ]] || { echo "scaling.sh: $B not found; build first (scripts/build.sh)" >&2; exit 1; }
command -v mpirun > /dev/null || { echo "scaling.sh: mpirun not found (apt-get install openmpi-bin)" >&2; exit 1; }
S="--d-model 256 --n-layer 4 --seq-len 512 --steps 16 --warmup 2 --log-every 1 --eval-every 0 --eval-batches 1 --samples 0 --ckpt-every 0"
MPI="mpirun --allow-run-as-root --oversubscribe -np 2"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
steps_median() { grep -o '"tokens_per_s": [0-9.e+]*' "$1/log.jsonl" | sed 's/.*: //' | tail -n 14 | median; }
run_one() {  # name, env..., command... -> prints the run's median tokens/s
  local dir=$T/run-$1; shift; rm -rf "$dir"
  env "$@" --run-dir "$dir" > "$dir.out" 2>&1 || { echo "scaling.sh: run failed:" >&2; tail -5 "$dir.out" >&2; exit 1; }
  steps_median "$dir"
}
echo "round  1x2-threads  2x1(sm-none)  2x1(default)  ratio(none)  ratio(default)  load"
: > "$T/a.txt"; : > "$T/b.txt"; : > "$T/c.txt"
for ((r = 1; r <= ROUNDS; r++)); do
  a=$(run_one a OMP_NUM_THREADS=2 $B $S --batch 8)
  b=$(run_one b OMP_NUM_THREADS=1 OMPI_MCA_btl_vader_single_copy_mechanism=none $MPI $B $S --batch 4)
  c=$(run_one c OMP_NUM_THREADS=1 $MPI $B $S --batch 4)
  echo "$a" >> "$T/a.txt"; echo "$b" >> "$T/b.txt"; echo "$c" >> "$T/c.txt"
  awk -v r=$r -v a=$a -v b=$b -v c=$c -v l="$(cut -d' ' -f1 /proc/loadavg)" \
    'BEGIN{printf "%5d  %11.0f  %12.0f  %12.0f  %10.1f%%  %13.1f%%  %s\n", r, a, b, c, 100*b/a, 100*c/a, l}'
done
a=$(median < "$T/a.txt"); b=$(median < "$T/b.txt"); c=$(median < "$T/c.txt")
awk -v a=$a -v b=$b -v c=$c 'BEGIN{printf "median %11.0f  %12.0f  %12.0f  %10.1f%%  %13.1f%%\n", a, b, c, 100*b/a, 100*c/a}'
