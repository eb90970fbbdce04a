#!/usr/bin/env bash
# train_lm's run directory and signals as a script sees them (issue 16, items 1, 2 and 4):
# a second fresh run in the same directory is refused (exit 1) naming the ways on, --overwrite
# replaces it, SIGTERM and SIGINT save a checkpoint and exit 143 / 130, --resume latest
# continues with one clean log, a diverging run exits 1 naming --lr. Usage: runs_and_signals.sh
# BUILD_EXAMPLES_DIR
source "$(dirname "$0")/common.sh"
B=$1
R="$T/run"

check 0 "checkpoint: $R/ckpt-000004" "$B/train_lm" "${TINY[@]}" --run-dir "$R" --steps 4
check 1 "already holds a run (checkpoint ckpt-000004, \`latest\` naming ckpt-000004, log.jsonl). To continue that run, add --resume latest; to start a new one next to it, give another --run-dir; to replace it, add --overwrite" \
  "$B/train_lm" "${TINY[@]}" --run-dir "$R" --steps 2
grep -q "^data:" "$T/out" && { echo "FAIL: the refused run read its data first"; failures=$((failures + 1)); }
check 0 "--overwrite: deleted the earlier run's ckpt-000004" "$B/train_lm" "${TINY[@]}" --run-dir "$R" --steps 2 --overwrite --ckpt-every 1
[ "$(ls -d "$R"/ckpt-* | xargs -n1 basename | tr '\n' ' ')" = "ckpt-000001 ckpt-000002 " ] ||
  { echo "FAIL: after --overwrite: $(ls "$R")"; failures=$((failures + 1)); }
[ -f "$R/loss_curve.svg" ] || { echo "FAIL: no loss_curve.svg next to log.jsonl"; failures=$((failures + 1)); }

# A signal during training: wait until this process has logged a step, then send it.
steps_logged() { grep -c '^{"step": ' "$1/log.jsonl" 2> /dev/null || true; }
interrupt() {  # interrupt SIGNAL RUN_DIR EXTRA_ARGS...
  local sig=$1 dir=$2
  shift 2
  local before
  before=$(steps_logged "$dir")
  "$B/train_lm" "${TINY[@]}" --steps 1000000 --log-every 1 --run-dir "$dir" "$@" > "$T/sig.out" 2>&1 &
  local pid=$!
  for _ in $(seq 1 400); do
    [ "$(steps_logged "$dir")" -gt "${before:-0}" ] && break
    sleep 0.05
  done
  kill -s "$sig" "$pid"
  wait "$pid"
  echo $?
}
rc=$(interrupt TERM "$T/sig")
grep -q "interrupted by SIGTERM" "$T/sig.out" && [ "$rc" = 143 ] && [ -n "$(cat "$T/sig/latest")" ] &&
  echo "ok (train_lm, exit $rc): $(grep 'interrupted by SIGTERM: checkpoint' "$T/sig.out")" ||
  { echo "FAIL: SIGTERM: exit $rc"; cat "$T/sig.out" | tail -5; failures=$((failures + 1)); }
rc=$(interrupt INT "$T/sig" --resume latest)
grep -q "interrupted by SIGINT (Ctrl-C)" "$T/sig.out" && [ "$rc" = 130 ] &&
  echo "ok (train_lm, exit $rc): $(grep 'interrupted by SIGINT' "$T/sig.out" | tail -1)" ||
  { echo "FAIL: SIGINT: exit $rc"; cat "$T/sig.out" | tail -5; failures=$((failures + 1)); }
# The log of the two pieces is one history: step numbers strictly increase.
grep -o '^{"step": [0-9]*' "$T/sig/log.jsonl" | grep -o '[0-9]*$' | awk 'NR > 1 && $1 <= prev { bad = 1 } { prev = $1 } END { exit bad }' &&
  echo "ok: log.jsonl steps strictly increase across the resume" ||
  { echo "FAIL: log.jsonl repeats steps"; failures=$((failures + 1)); }

# Divergence (the issue's --lr 500): exit 1, the message names the step and --lr, and no
# checkpoint is written after the first non-finite step.
check 1 "Try a lower learning rate (--lr; the peak is now 500)" "$B/train_lm" "${TINY[@]}" --run-dir "$T/lr500" --lr 500 --schedule constant --steps 100 --ckpt-every 2
finish
