#!/usr/bin/python3
"""PyTorch CPU peer for examples/bench_scan: the sequential selective scan (the form of
mamba_ssm's `selective_scan_ref`, written here from the formulas in
ops/selective_scan/selective_scan.h):
delta and the (B, ED, L, N) discretised tensors materialised, a Python loop over L with a
(B, ED, N) state, autograd for the backward.

    /usr/bin/python3 tests/reference/scan_peer_torch.py [--B 8 --L 1024 --ED 512 --N 16]
        [--repeats 3] [--threads 2] [--json]

Timing: median over --repeats runs (after one warm-up) of forward + backward.
Peak memory: the process's peak resident set (resource.getrusage ru_maxrss) measured in a
fresh child process per pass, minus that child's resident set just before the pass (inputs
already allocated). ru_maxrss is a high-water mark, so each measurement needs a new process.
"""
import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

import torch
import torch.nn.functional as F


def make_inputs(B, L, ED, N, grad, seed=1):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, L, ED, generator=g)
    delta = torch.randn(B, L, ED, generator=g) * 0.5
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(ED, 1)  # S4D-real: -(n+1)
    Bm = torch.randn(B, L, N, generator=g)
    C = torch.randn(B, L, N, generator=g)
    D = torch.ones(ED)
    z = torch.randn(B, L, ED, generator=g)
    bias = torch.full((ED,), -4.6)
    xs = [u, delta, A, Bm, C, D, z, bias]
    for x in xs:
        x.requires_grad_(grad)
    return xs


def selective_scan_seq(u, delta, A, Bm, C, D, z, bias):
    dt = F.softplus(delta + bias)                                        # (B, L, ED)
    deltaA = torch.exp(torch.einsum("bld,dn->bldn", dt, A))              # (B, L, ED, N)
    deltaBu = torch.einsum("bld,bln,bld->bldn", dt, Bm, u)               # (B, L, ED, N)
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])                  # (B, ED, N)
    # unbind: ONE autograd node whose backward stacks the step gradients. Indexing
    # deltaA[:, t] (as mamba_ssm's selective_scan_ref does) makes every step's backward
    # allocate a zero (B, L, ED, N) gradient: ~10x slower, so we give the peer the better form.
    dA_t, dBu_t, C_t = deltaA.unbind(1), deltaBu.unbind(1), C.unbind(1)
    ys = []
    for t in range(u.shape[1]):
        h = dA_t[t] * h + dBu_t[t]
        ys.append(torch.einsum("bdn,bn->bd", h, C_t[t]))
    y = torch.stack(ys, dim=1) + u * D
    return y * F.silu(z), h


def one_pass(xs, dy, grad):
    """One forward (and backward(dy) when grad) of the sequential form."""
    if grad:
        y, _ = selective_scan_seq(*xs)
        y.backward(dy)
    else:
        with torch.no_grad():
            selective_scan_seq(*xs)


def timed(args, grad, queue):
    torch.set_num_threads(args.threads)
    xs = make_inputs(args.B, args.L, args.ED, args.N, grad)
    dy = torch.randn(args.B, args.L, args.ED)

    def run():
        for x in xs:
            x.grad = None
        one_pass(xs, dy, grad)

    run()  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    queue.put(statistics.median(times))


def peak(args, grad, queue):
    torch.set_num_threads(args.threads)
    xs = make_inputs(args.B, args.L, args.ED, args.N, grad)
    dy = torch.randn(args.B, args.L, args.ED)
    with open("/proc/self/statm") as f:
        rss_before = int(f.read().split()[1]) * resource.getpagesize()
    one_pass(xs, dy, grad)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    queue.put(maxrss - rss_before)


def in_child(fn, args, grad):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(args, grad, q))
    p.start()
    r = q.get()
    p.join()
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--L", type=int, default=1024)
    ap.add_argument("--ED", type=int, default=512)
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for grad, name in ((False, "fwd"), (True, "fwd+bwd")):
        ms = in_child(timed, args, grad)
        pk = in_child(peak, args, grad)
        rec = dict(impl="torch-" + torch.__version__, pass_=name, B=args.B, L=args.L, ED=args.ED,
                   N=args.N, median_ms=round(ms, 3), peak_bytes=pk, threads=args.threads)
        rec["pass"] = rec.pop("pass_")
        if args.json:
            print(json.dumps(rec))
        else:
            print(f"torch {torch.__version__} {name:8s} B={args.B} L={args.L} ED={args.ED} "
                  f"N={args.N}: median {ms:.1f} ms, peak {pk / 2**20:.1f} MiB above inputs "
                  f"({args.threads} threads)")


if __name__ == "__main__":
    main()
