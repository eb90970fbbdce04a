#!/usr/bin/env bash
# scripts/nccl_check.sh — issue 15's NCCL check on one GPU: train_lm --device cuda, 50 steps, run
# plainly and with MG_DIST=nccl (the data-parallel path through a 1-rank NCCL communicator); the
# per-step losses must be equal (a mean over one rank is the identity, so bitwise). With mpirun
# installed, the same once more under `mpirun -np 1` (MPI + NCCL).
#
#   bash scripts/nccl_check.sh [BUILD_DIR=build] [DATA]     exit 0: equal; 1: differ or failed
set -uo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n 2,7p "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
B=${1:-build}/examples/train_lm
[[ -x $B ]] || { echo "nccl_check.sh: $B not found; build with MG_CUDA=ON first" >&2; exit 1; }
DATA=()
[[ -n "${2:-}" ]] && DATA=(--data "$2")
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
A=(--device cuda --steps 50 --log-every 1 --eval-every 0 --samples 0 --ckpt-every 0 "${DATA[@]}")
losses() { grep -o '"loss": [-0-9.e+naif]*' "$1/log.jsonl" | sed 's/.*: //'; }
run() {  # name, env/command prefix...
  local n=$1; shift
  "$@" "$B" "${A[@]}" --run-dir "$T/$n" > "$T/$n.out" 2>&1 \
    || { echo "nccl_check.sh: the $n run failed:"; tail -5 "$T/$n.out"; return 1; }
  grep -m1 -i "backend\|distributed\|world" "$T/$n.out" | sed "s/^/  $n: /"
  losses "$T/$n" > "$T/$n.loss"
}
status=0
run plain env || exit 1
variants=(nccl)
run nccl env MG_DIST=nccl || status=1
if command -v mpirun > /dev/null; then
  variants+=(mpi_np1)
  run mpi_np1 mpirun --allow-run-as-root -np 1 || status=1
fi
for v in "${variants[@]}"; do
  [[ -f $T/$v.loss ]] || continue
  if cmp -s "$T/plain.loss" "$T/$v.loss"; then
    echo "$v: $(wc -l < "$T/$v.loss") step losses equal to the plain GPU run (last $(tail -1 "$T/$v.loss"))"
  else
    echo "$v: DIFFERS from the plain GPU run:"; paste "$T/plain.loss" "$T/$v.loss" | awk '$1 != $2' | head -5
    status=1
  fi
done
exit $status
