#!/usr/bin/python3
"""PyTorch GPU peer for `bench_scan --device cuda` (issue 7): the same selective scan as
ops/selective_scan/selective_scan.h (softplus(delta + bias), D, the z gate), written here from
the formulas, in the two "standard implementation" forms, with autograd for the backward:

  sequential  the selective_scan_ref form: dA = exp(dt A) and dt B u materialised as
              (B, L, ED, N), a Python loop over L with a (B, ED, N) state.
  chunked     parallel within chunks of K steps: with the log-decay prefix
              S_t = sum_{r <= t} dt_r A (within the chunk, one cumsum), the state is
                h_t = exp(S_t) h_in + sum_{s <= t} exp(S_t - S_s) (dt_s B_s u_s)
              computed as a (K, K) lower-triangular decay matrix per (b, d, n) — exponents
              S_t - S_s <= 0 only, so nothing overflows — and y_t = <C_t, h_t>; a Python loop
              over the L / K chunks carries h_in. Memory per chunk: B ED N K^2 floats.

    python3 tests/reference/scan_peer_torch_gpu.py [--device cuda] [--forms sequential,chunked]
        [--B 1 --ED 1024 --N 16 --L 512,2048,8192,32768] [--chunk 64] [--repeats 5] [--json]
    python3 tests/reference/scan_peer_torch_gpu.py --check     # chunked == sequential (any device)

Timing: median over --repeats runs (after one warm-up) of forward, and of forward + backward,
with torch.cuda.synchronize() before reading the clock. Peak: torch.cuda.max_memory_allocated
during the pass minus what was allocated before it (inputs and dy excluded), as bench_scan does.
On the CPU (--device cpu) it runs too, for --check; peak memory is then not reported.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import scan_peer_torch as cpu_peer  # the same directory: the inputs and the sequential form


def make_inputs(B, L, ED, N, device, grad, seed=1):
    """The CPU peer's inputs (same values for the same seed), moved to `device`."""
    return [x.to(device).requires_grad_(grad) for x in cpu_peer.make_inputs(B, L, ED, N, False, seed)]


def scan_sequential(*xs):
    """The CPU peer's sequential form (selective_scan_ref), y only."""
    return cpu_peer.selective_scan_seq(*xs)[0]


def scan_chunked(u, delta, A, Bm, C, D, z, bias, K=64):
    Bsz, L, ED = u.shape
    N = A.shape[1]
    dt = F.softplus(delta + bias)                                        # (B, L, ED)
    h = u.new_zeros(Bsz, ED, N)                                          # (B, ED, N)
    ys = []
    for t0 in range(0, L, K):
        k = min(K, L - t0)
        dt_c, u_c = dt[:, t0:t0 + k], u[:, t0:t0 + k]                   # (B, k, ED)
        B_c, C_c = Bm[:, t0:t0 + k], C[:, t0:t0 + k]                    # (B, k, N)
        S = torch.cumsum(torch.einsum("bkd,dn->bdnk", dt_c, A), dim=-1)  # (B, ED, N, k)
        diff = S.unsqueeze(-1) - S.unsqueeze(-2)                         # (B, ED, N, k_t, k_s)
        causal = torch.ones(k, k, dtype=torch.bool, device=u.device).tril()
        decay = torch.exp(diff.masked_fill(~causal, float("-inf")))     # exp(S_t - S_s), s <= t
        x = torch.einsum("bkd,bkn,bkd->bdnk", dt_c, B_c, u_c)            # (B, ED, N, k_s)
        H = torch.einsum("bdnts,bdns->bdnt", decay, x) + torch.exp(S) * h.unsqueeze(-1)
        ys.append(torch.einsum("bdnt,btn->btd", H, C_c))                 # (B, k, ED)
        h = H[..., -1]
    y = torch.cat(ys, dim=1) + u * D
    return y * F.silu(z)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(form, B, L, ED, N, K, device, repeats, grad):
    xs = make_inputs(B, L, ED, N, device, grad)
    dy = torch.randn(B, L, ED, device=device)
    fn = scan_sequential if form == "sequential" else (lambda *a: scan_chunked(*a, K=K))

    def run():
        for x in xs:
            x.grad = None
        if grad:
            fn(*xs).backward(dy)
        else:
            with torch.no_grad():
                fn(*xs)

    run()  # warm-up
    sync(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    peak = torch.cuda.max_memory_allocated() - base if cuda else None
    return statistics.median(times), peak


def check(device):
    torch.manual_seed(0)
    worst = 0.0
    for (B, L, ED, N, K) in [(2, 7, 3, 4, 4), (1, 70, 5, 16, 64), (2, 130, 4, 8, 32)]:
        xs = make_inputs(B, L, ED, N, device, True, seed=B * 1000 + L)
        xs = [x.detach().double().requires_grad_(True) for x in xs]
        dy = torch.randn(B, L, ED, dtype=torch.float64, device=device)
        outs = []
        for fn in (scan_sequential, lambda *a: scan_chunked(*a, K=K)):
            for x in xs:
                x.grad = None
            y = fn(*xs)
            y.backward(dy)
            outs.append([y.detach()] + [x.grad.clone() for x in xs])
        for a, b in zip(*outs):
            err = ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
            worst = max(worst, err)
    print(f"chunked == sequential (f64, outputs and every gradient): worst relative error {worst:.2e}")
    assert worst < 1e-10, "chunked and sequential forms disagree"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--forms", default="sequential,chunked")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--ED", type=int, default=1024)
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--L", default="512,2048,8192,32768", help="comma-separated lengths")
    ap.add_argument("--chunk", type=int, default=64, help="K of the chunked form")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=60.0,
                    help="skip a longer L of a form once one of its passes took longer than this")
    ap.add_argument("--check", action="store_true", help="only check chunked == sequential")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.check:
        check(args.device)
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("scan_peer_torch_gpu.py: no CUDA device visible to PyTorch")
    lengths = [int(x) for x in args.L.split(",")]
    for form in args.forms.split(","):
        too_slow = False
        for L in lengths:
            for grad, name in ((False, "fwd"), (True, "fwd+bwd")):
                if too_slow:
                    print(f"{form} {name} L={L}: skipped (a shorter L took over {args.max_seconds} s)")
                    continue
                ms, pk = measure(form, args.B, L, args.ED, args.N, args.chunk, args.device,
                                 args.repeats, grad)
                too_slow = ms / 1e3 > args.max_seconds
                rec = {"impl": f"torch-{torch.__version__}-{form}", "pass": name, "B": args.B,
                       "L": L, "ED": args.ED, "N": args.N, "median_ms": round(ms, 3),
                       "peak_bytes": pk, "device": args.device}
                if args.json:
                    print(json.dumps(rec), flush=True)
                else:
                    mem = f", peak {pk / 2**20:.1f} MiB" if pk is not None else ""
                    print(f"{form:10s} {name:8s} B={args.B} L={L} ED={args.ED} N={args.N}: "
                          f"median {ms:.3f} ms{mem}", flush=True)


if __name__ == "__main__":
    main()
