#!/usr/bin/env bash
# scripts/newcomer_trial.sh — the failing cases of issue 16 (a newcomer's trial), each run as a user
# would, printing what the programs say now. Needs a built build/ (scripts/test.sh) and python3.
# Issue 16's failing cases, each with what the programs say now.
cd "$(dirname "$0")/.."
B=./build/examples
run() { echo "\$ $*"; bash -c "$*" 2>&1 | tail -n ${TAILN:-4}; echo "[exit ${PIPESTATUS[0]}]"; echo; }
T=/tmp/trial; rm -rf $T; mkdir -p $T
Q="--d-model 32 --n-layer 1 --seq-len 32 --batch 4 --eval-every 0 --eval-batches 1 --samples 0 --log-every 1000"
echo "## 1. a fresh run in a directory holding another run's checkpoints"
run "$B/train_lm $Q --steps 30 --run-dir $T/r1 > /dev/null; ls $T/r1"
run "$B/train_lm $Q --steps 20 --run-dir $T/r1"
TAILN=3 run "$B/train_lm $Q --steps 20 --run-dir $T/r1 --overwrite | grep -E 'checkpoint|overwrite'; ls $T/r1; cat $T/r1/latest"
echo "## 2. the non-finite guard at --lr 500"
TAILN=6 run "$B/train_lm $Q --steps 60 --lr 500 --ckpt-every 2 --run-dir $T/r2"
echo "## 4. SIGTERM"
run "$B/train_lm $Q --steps 100000 --run-dir $T/r4 > $T/r4.out 2>&1 & pid=\$!; sleep 4; kill -TERM \$pid; wait \$pid; echo exit \$?; tail -2 $T/r4.out"
echo "## 5. a binary --data"
run "$B/train_lm $Q --steps 5 --data $B/train_lm"
echo "## 6. counts"
run "$B/train_lm --steps -5 --schedule constant"
run "$B/train_lm --steps 99999999999999999999999"
echo "## 7. generate's numbers"
run "$B/generate --temperature x --prompt hi"
run "$B/generate --max-new-tokens 10x --prompt hi"
echo "## 8. errors that name the flag"
run "$B/train_lm --batch 0"
run "$B/train_lm --warmup 100 --steps 50"
run "$B/train_lm $Q --steps 5 --seq-len 100000000 --data README.md"
run "$B/train_lm --top-p 0"
run "$B/train_lm --sample-len -5"
echo "## 9. generate without --prompt on a terminal"
run "script -qc '$B/generate --random-init --max-new-tokens 5' /dev/null < /dev/null | head -3"
echo "## 10. safetensors header with invalid UTF-8"
run "python3 - <<'PY'
import json,struct
h=json.dumps({'w':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},'__metadata__':{'k':'XX'}}).encode()
h=h.replace(b'XX', b'\xc3\x28')
open('$T/bad.safetensors','wb').write(struct.pack('<Q',len(h))+h+b'\0\0\0\0')
PY
$B/generate --weights $T/bad.safetensors --prompt hi"
echo "## 13. --help, one layout"
TAILN=100 run "$B/train_lm --help | head -12"
echo "## 11. thread-count independence (forward_backward --grads, then 20 training steps)"
python3 -c "
import json,struct
ids=[(i*37+11)%256 for i in range(2*64)]
h=json.dumps({'input_ids':{'dtype':'I32','shape':[2,64],'data_offsets':[0,4*len(ids)]}}).encode()
open('$T/tok.safetensors','wb').write(struct.pack('<Q',len(h))+h+struct.pack('<%di'%len(ids),*ids))"
run "$B/train_lm --steps 2 --eval-every 0 --eval-batches 1 --samples 0 --run-dir $T/r11 > /dev/null; W=$T/r11/ckpt-000002; for t in 1 2 3; do OMP_NUM_THREADS=\$t $B/forward_backward --weights \$W --tokens $T/tok.safetensors --out $T/fb\$t.safetensors --grads > /dev/null; done; md5sum $T/fb?.safetensors"
run "for t in 1 2 3; do rm -rf $T/d\$t; OMP_NUM_THREADS=\$t $B/train_lm --eval-every 0 --eval-batches 1 --samples 0 --steps 20 --run-dir $T/d\$t > /dev/null; done; md5sum $T/d?/ckpt-000020/model.safetensors"
