#!/usr/bin/python3
"""PyTorch CPU peer of examples/bench_train: one full training step (forward, backward, AdamW)
of the same Mamba LM, built with the model code of make_model_fixtures.py (written from the
math: sequential scan over L, autograd for the backward).

    /usr/bin/python3 tests/reference/train_step_peer_torch.py [--config tiny|small] [--repeats N]

Needs Debian's python3-torch with libopenblas0-pthread (scripts/setup.sh --torch). Each
configuration runs in a fresh child process so that its peak memory (ru_maxrss of the child
minus its resident size before the first step) is its own. Prints one JSON object per config.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {"tiny": dict(d_model=128, n_layer=2, seq_len=256, batch=16),
           "small": dict(d_model=256, n_layer=4, seq_len=512, batch=8)}


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(name, repeats, threads):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    import make_model_fixtures as ref  # the model code; importing it runs nothing else
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(threads)
    c = CONFIGS[name]
    cfg = dict(vocab_size=256, d_model=c["d_model"], n_layer=c["n_layer"], d_state=16, d_conv=4,
               expand=2, eps=1e-5)
    params = {k: v.float().requires_grad_() for k, v in ref.make_params(cfg).items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.randint(0, 256, (c["batch"], c["seq_len"] + 1))
    base = rss_bytes()

    def step():
        _, loss = ref.forward(ids, params, cfg)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    ms = statistics.median(times)
    tokens = c["batch"] * (c["seq_len"] + 1 - 1)
    print(json.dumps({"impl": "pytorch", "config": name, "device": "cpu", "threads": threads,
                      "median_ms": round(ms, 3), "tokens_per_s": round(tokens / (ms / 1e3), 1),
                      "peak_bytes": peak, "torch": torch.__version__}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="all", choices=["tiny", "small", "all"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.repeats, a.threads)
        return
    for name in (["tiny", "small"] if a.config == "all" else [a.config]):
        subprocess.run([sys.executable, __file__, "--child", name, "--repeats", str(a.repeats),
                        "--threads", str(a.threads)], check=True)


if __name__ == "__main__":
    main()
