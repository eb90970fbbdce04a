#!/usr/bin/env bash
# generate --model on the committed tiny Hugging Face directory (issue 14): greedy output is
# the same on every run, the speeds go to stderr, --batch prints every sequence, a bad
# directory is one clear error. Usage: generate_model.sh BUILD_EXAMPLES_DIR SOURCE_DIR
source "$(dirname "$0")/common.sh"
B=$1
M=$2/tests/reference/tiny_mamba_hf
G=(--model "$M" --temperature 0 --max-tokens 12)

"$B/generate" "${G[@]}" --prompt "Hello world, the" > "$T/a" 2> "$T/a.err"
"$B/generate" "${G[@]}" --prompt "Hello world, the" > "$T/b" 2> /dev/null
if ! cmp -s "$T/a" "$T/b" || [ ! -s "$T/a" ]; then
  echo "FAIL: greedy generate --model is empty or differs between runs"; failures=$((failures + 1))
else
  echo "ok: greedy output is the same twice: $(head -c 60 "$T/a")"
fi
grep -q "^prompt: [0-9]* tokens in .*tok/s); generation: 12 tokens in" "$T/a.err" ||
  { echo "FAIL: no prompt / generation speeds on stderr"; sed 's/^/    /' "$T/a.err"; failures=$((failures + 1)); }
check 0 "generation: 12 tokens" "$B/generate" "${G[@]}" --prompt "Hi" --print-ids
printf 'Hello world, the\n\nIt is\n' > "$T/prompts.txt"
check 0 "=== 2: It is" "$B/generate" "${G[@]}" --batch "$T/prompts.txt"
grep -q "24 tokens in .*steps of batch 2" "$T/out" ||
  { echo "FAIL: --batch did not generate 2 x 12 tokens together"; failures=$((failures + 1)); }
check 1 "has neither model.safetensors nor model.safetensors.index.json" "$B/generate" --model "$T" --prompt "Hi"
check 2 "--batch: give at most one of them" "$B/generate" "${G[@]}" --prompt "Hi" --batch "$T/prompts.txt"
finish
