#!/usr/bin/env bash
# Bad flags and bad input are refused before any work, naming the flag (issue 16, items 5-9,
# 13). Usage: cli_errors.sh BUILD_EXAMPLES_DIR
source "$(dirname "$0")/common.sh"
B=$1
NODATA=(--data "$T/does-not-exist" --run-dir "$T/never")  # a flag error must come before data

check 2 "train_lm: --steps -5: must be at least 1" "$B/train_lm" --steps -5 --schedule constant "${NODATA[@]}"
check 2 "train_lm: --steps 99999999999999999999999: out of range" "$B/train_lm" --steps 99999999999999999999999 "${NODATA[@]}"
check 2 "train_lm: --batch 0: must be at least 1" "$B/train_lm" --batch 0 "${NODATA[@]}"
check 2 "train_lm: --warmup 100: must be less than --steps 50" "$B/train_lm" --warmup 100 --steps 50 "${NODATA[@]}"
check 2 "train_lm: --top-p 0: must be in (0, 1]" "$B/train_lm" --top-p 0 "${NODATA[@]}"
check 2 "train_lm: --sample-len -5: must be at least 0" "$B/train_lm" --sample-len -5 "${NODATA[@]}"
check 2 "train_lm: --seq-len 10x: not a whole number" "$B/train_lm" --seq-len 10x "${NODATA[@]}"
check 2 "train_lm: --lr x: not a number" "$B/train_lm" --lr x "${NODATA[@]}"
[ -e "$T/never" ] && { echo "FAIL: a refused run created its run directory"; failures=$((failures + 1)); }
# --seq-len against the data: after reading it, before any training, naming the flag.
check 2 "train_lm: --seq-len 100000: windows of 100001 tokens do not fit" "$B/train_lm" "${TINY[@]}" --seq-len 100000 --run-dir "$T/r0"
# Binary data: refused with the reason unless --data-binary.
head -c 3000 /dev/zero | tr '\0' '\200' > "$T/high.bin"
check 1 "does not look like text (99.9% of its first 3000 bytes are not UTF-8); to train on its bytes anyway, pass --data-binary" \
  "$B/train_lm" "${TINY[@]}" --data "$T/high.bin" --run-dir "$T/r1" --steps 2
check 0 "trained 2 steps" "$B/train_lm" "${TINY[@]}" --data "$T/high.bin" --data-binary --run-dir "$T/r2" --steps 2 --val-fraction 0

check 2 "generate: --temperature x: not a number" "$B/generate" --random-init --temperature x
check 2 "generate: --max-new-tokens 10x: not a whole number" "$B/generate" --random-init --max-new-tokens 10x
check 2 "generate: --top-p 0: must be in (0, 1]" "$B/generate" --random-init --top-p 0
check 1 "generate: --prompt-ids: 'x' (item 2) is not a token id in [0, 256)" "$B/generate" --random-init --d-model 8 --n-layer 1 --prompt-ids 1,x
check 2 "generate: --model / --weights / --random-init: give exactly one of them" "$B/generate" --prompt hi
# generate without --prompt on a terminal says that it reads the prompt from it (script(1)
# gives it a pseudo-terminal; the input ends with Ctrl-D).
if command -v script > /dev/null; then
  check 0 "reading the prompt from the terminal; end it with Ctrl-D (or pass --prompt TEXT)" \
    script -qec "$B/generate --random-init --d-model 8 --n-layer 1 --max-new-tokens 2" /dev/null \
    < <(sleep 0.5; printf 'hi\n\004')
fi
# Piped stdin: no note.
echo "hello" | "$B/generate" --random-init --d-model 8 --n-layer 1 --max-new-tokens 2 > "$T/out" 2>&1
grep -q "reading the prompt" "$T/out" && { echo "FAIL: the terminal note on a pipe"; failures=$((failures + 1)); }

# One --help layout: the usage line first, every flag once; train_lm shows one default for --data.
for p in autograd_tour bench_ops bench_scan bench_train forward_backward generate induction_heads selective_copying train_lm; do
  "$B/$p" --help > "$T/help" 2>&1 || { echo "FAIL: $p --help exits non-zero"; failures=$((failures + 1)); }
  head -1 "$T/help" | grep -q "^usage: $p" || { echo "FAIL: $p --help does not start with 'usage: $p'"; failures=$((failures + 1)); }
done
"$B/train_lm" --help > "$T/help"
[ "$(sed -n '/--data PATH/,/--data-binary/p' "$T/help" | grep -o 'default' | wc -l)" = 1 ] ||
  { echo "FAIL: train_lm --help shows --data's default more than once"; failures=$((failures + 1)); }
finish
