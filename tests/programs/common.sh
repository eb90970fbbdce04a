# tests/programs/common.sh — helpers for the program-level tests (sourced, not run).
# Each test gets a fresh temporary directory ($T) with a small text file ($T/text.txt) and its
# own token cache; `check` runs a command and compares its exit status and output.
set -u
T=$(mktemp -d "${TMPDIR:-/tmp}/mg_programs_XXXXXX")
trap 'rm -rf "$T"' EXIT
export MG_CACHE_DIR="$T/cache"
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog."; done > "$T/text.txt"
failures=0
# A tiny, fast training configuration (about 1 ms per step).
TINY=(--data "$T/text.txt" --d-model 8 --n-layer 1 --batch 2 --seq-len 16 --eval-batches 1
      --samples 0 --warmup 0)

# check WANT_RC "WANTED TEXT" cmd args...: runs cmd, its stdout+stderr to $T/out.
check() {
  local want_rc=$1 want_text=$2
  shift 2
  "$@" > "$T/out" 2>&1
  local rc=$?
  if [ "$rc" != "$want_rc" ] || ! grep -qF -- "$want_text" "$T/out"; then
    echo "FAIL: $*"
    echo "  expected exit $want_rc and output containing: $want_text"
    echo "  got exit $rc and:"; sed 's/^/    /' "$T/out" | head -20
    failures=$((failures + 1))
  else
    echo "ok ($(basename "$1"), exit $rc): $(grep -F -- "$want_text" "$T/out" | head -1)"
  fi
}
finish() {
  [ "$failures" = 0 ] && echo "all passed" || echo "$failures failure(s)"
  [ "$failures" = 0 ]
}
