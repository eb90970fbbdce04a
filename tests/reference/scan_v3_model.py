#!/usr/bin/python3
"""A float64 NumPy model of the CUDA scan v3's decomposition (cuda/selective_scan/v3*.cu),
checked against a plain sequential float64 scan. No GPU: this is how v3's indexing, segment
and tile boundaries, seeds, carries, scans and reduction structure were checked before it
ever ran on a device.

    /usr/bin/python3 tests/reference/scan_v3_model.py [--quick]

The model follows the kernels step for step: the same plan (segment lengths, tiles, channel
groups, computed by the same formulas as v3_plan() in cuda/selective_scan/v3_plan.h), the same
kernels (walk_local, combine, walk, bwd_local, bwd_combine, bwd_tile, the sums), the same
thread / lane / item indexing, the same zero-filled state groups of 16, the same
chunk-boundary writes, the same Kogge-Stone warp scans (shuffle up / down, 5 levels) and the
same order of every cross-thread sum. Only the arithmetic is float64 (exp2 for exp(x ln 2)).
Exact in float64 up to rounding, so every output must match the sequential scan to ~1e-14.

What it cannot check: anything about CUDA itself (barriers, races, bank conflicts, memory
ordering, float32 rounding). Those are reviewed by reading and checked on a GPU.
"""
import argparse
import math
import sys

import numpy as np

LOG2E = 1.4426950408889634
NG = 16            # states per group (kNG)
WALK_THREADS = 128  # channels per walk block (kWalkThreads)
WIN = 32           # B/C window of the walk kernels (kWin)
W = 8              # warps per tile block = channels per sub-batch (kW)
K = 8              # items (consecutive steps) per lane (kK)
TILE = 32 * K      # 256 steps (kTile)
TARGET_WALK_THREADS = 131072
TARGET_TILE_BLOCKS = 264


def cdiv(a, b):
    return (a + b - 1) // b


# ---- the plan (the same formulas as v3_plan in cuda/selective_scan/v3_plan.h) -------------
def seg_len(L, lanes, N, min_seg=None):
    smin = max(64, 4 * N) if min_seg is None else min_seg
    want = max(1, cdiv(TARGET_WALK_THREADS, lanes))
    s = max(cdiv(L, want), smin)
    return min(s, max(L, 1))


def plan(B, L, ED, N, T, min_seg=None, tile_blocks=None):
    p = {}
    p["ngroups"] = cdiv(N, NG)
    lanes = B * ED * p["ngroups"]
    p["S"] = seg_len(L, lanes, N, min_seg)
    p["nseg"] = cdiv(L, p["S"])
    p["nc"] = cdiv(L, T)
    if T <= TILE:
        p["Kt"], p["rederive"] = T * (TILE // T), False
    else:
        p["Kt"], p["rederive"] = TILE, True
    p["ntiles"] = cdiv(L, p["Kt"])
    sa_want = seg_len(L, lanes, N, min_seg)
    p["m"] = min(max(cdiv(min(p["Kt"], L), sa_want), 1), p["Kt"])
    p["sa"] = cdiv(p["Kt"], p["m"])
    p["nseg_a"] = p["ntiles"] * p["m"]
    p["nsb"] = cdiv(ED, W)
    base = B * p["ntiles"]
    target = TARGET_TILE_BLOCKS if tile_blocks is None else tile_blocks
    g_want = max(1, target // base)
    g_cap = max(1, ED // (2 * N))
    G = min(g_want, p["nsb"], g_cap)
    p["spg"] = cdiv(p["nsb"], G)
    p["G"] = cdiv(p["nsb"], p["spg"])
    return p


# ---- scalar math (the sequential spec's) ----------------------------------------------------
def delta_of(r, sp):
    if not sp:
        return r
    return np.where(r > 20.0, r, np.log1p(np.exp(np.minimum(r, 20.0))))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def delta_grad_of(r, sp):
    if not sp:
        return np.ones_like(r)
    return np.where(r > 20.0, 1.0, sigmoid(np.minimum(r, 20.0)))


def ex2(x):
    return np.exp2(x)


# ---- the plain sequential scan (ops/selective_scan_sequential.cpp in float64) ---------------
def sequential(a):
    u, delta, A, Bm, C, D, z, bias, sp, h0, dy, dh_last, T = (
        a[k] for k in ("u", "delta", "A", "Bm", "C", "D", "z", "bias", "sp", "h0", "dy", "dh_last", "T"))
    Bn, L, ED = u.shape
    N = A.shape[1]
    bias_v = bias if bias is not None else np.zeros(ED)
    y = np.zeros_like(u)
    h_last = np.zeros((Bn, ED, N))
    states = np.zeros((Bn, cdiv(L, T), ED, N))
    H = np.zeros((Bn, L + 1, ED, N))  # H[:, t+1] = h_t
    for b in range(Bn):
        h = h0[b].copy() if h0 is not None else np.zeros((ED, N))
        H[b, 0] = h
        for t in range(L):
            if t % T == 0:
                states[b, t // T] = h
            dt = delta_of(delta[b, t] + bias_v, sp)
            h = np.exp(dt[:, None] * A) * h + (dt * u[b, t])[:, None] * Bm[b, t][None, :]
            H[b, t + 1] = h
            yt = h @ C[b, t]
            if D is not None:
                yt = yt + D * u[b, t]
            if z is not None:
                yt = yt * z[b, t] * sigmoid(z[b, t])
            y[b, t] = yt
        h_last[b] = h
    g = {"du": np.zeros_like(u), "ddelta": np.zeros_like(u), "dA": np.zeros_like(A),
         "dB": np.zeros_like(Bm), "dC": np.zeros_like(C),
         "dD": np.zeros(ED) if D is not None else None,
         "dz": np.zeros_like(u) if z is not None else None,
         "dbias": np.zeros(ED) if bias is not None else None,
         "dh0": np.zeros((Bn, ED, N)) if h0 is not None else None}
    for b in range(Bn):
        lam_next = dh_last[b].copy() if dh_last is not None else np.zeros((ED, N))
        for t in range(L - 1, -1, -1):
            r = delta[b, t] + bias_v
            dt = delta_of(r, sp)
            h_t, h_prev = H[b, t + 1], H[b, t]
            gh = dy[b, t].copy()
            if z is not None:
                yp = h_t @ C[b, t] + (D * u[b, t] if D is not None else 0.0)
                s = sigmoid(z[b, t])
                g["dz"][b, t] = dy[b, t] * yp * s * (1 + z[b, t] * (1 - s))
                gh = dy[b, t] * z[b, t] * s
            du = D * gh if D is not None else np.zeros(ED)
            if D is not None:
                g["dD"] += gh * u[b, t]
            lam = gh[:, None] * C[b, t][None, :] + lam_next
            Abar = np.exp(dt[:, None] * A)
            Ah = Abar * h_prev
            g["dC"][b, t] += gh @ h_t
            g["dB"][b, t] += (dt * u[b, t]) @ lam
            slB = lam @ Bm[b, t]
            ddt = (lam * A * Ah).sum(1) + u[b, t] * slB
            g["dA"] += lam * dt[:, None] * Ah
            lam_next = Abar * lam
            g["du"][b, t] = du + dt * slB
            draw = ddt * delta_grad_of(r, sp)
            g["ddelta"][b, t] = draw
            if bias is not None:
                g["dbias"] += draw
        if h0 is not None:
            g["dh0"][b] = lam_next
    return {"y": y, "h_last": h_last, "states": states}, g


# ---- v3 forward ---------------------------------------------------------------------------
def group_A2(A, ng):
    """a2[d, j] for the group's 16 lanes: A * log2(e), 0 for n >= N (a zero-filled state)."""
    ED, N = A.shape
    out = np.zeros((ED, NG))
    n1 = min(N, ng * NG + NG)
    out[:, : n1 - ng * NG] = A[:, ng * NG: n1] * LOG2E
    return out


def group_rows(X, b, t0, t1, ng):
    """Staged rows of B or C (B, L, N): steps [t0, t1) x the group's 16 states, 0 past N."""
    N = X.shape[2]
    out = np.zeros((t1 - t0, NG))
    n1 = min(N, ng * NG + NG)
    out[:, : n1 - ng * NG] = X[b, t0:t1, ng * NG: n1]
    return out


def walk_local(a, p):
    """Kernel walk_local (F-A): per (b, segment, group, channel) the state at the segment's
    end from zero, and the segment's sum of delta."""
    u, delta, A, Bm = a["u"], a["delta"], a["A"], a["Bm"]
    Bn, L, ED = u.shape
    N = A.shape[1]
    bias = a["bias"] if a["bias"] is not None else np.zeros(ED)
    hloc = np.zeros((Bn, p["nseg"], ED, N))
    sdt = np.zeros((Bn, p["nseg"], ED))
    for b in range(Bn):
        for s in range(p["nseg"]):
            ts, te = s * p["S"], min(s * p["S"] + p["S"], L)
            for ng in range(p["ngroups"]):
                a2 = group_A2(A, ng)
                h = np.zeros((ED, NG))
                acc = np.zeros(ED)
                for w0 in range(ts, te, WIN):
                    sB = group_rows(Bm, b, w0, min(w0 + WIN, te), ng)
                    for tt in range(min(WIN, te - w0)):
                        t = w0 + tt
                        dt = delta_of(delta[b, t] + bias, a["sp"])
                        dtu = dt * u[b, t]
                        acc = acc + dt
                        h = ex2(dt[:, None] * a2) * h + dtu[:, None] * sB[tt][None, :]
                n1 = min(N, ng * NG + NG)
                hloc[b, s, :, ng * NG: n1] = h[:, : n1 - ng * NG]
                if ng == 0:
                    sdt[b, s] = acc
    return hloc, sdt


def combine_forward(hloc, sdt, A, h0):
    """Kernel combine (F-B): per (b, d, n) sequentially over segments; hloc becomes the state
    entering each segment (in place)."""
    Bn, nseg, ED, N = hloc.shape
    a2 = A * LOG2E
    for b in range(Bn):
        h = h0[b].copy() if h0 is not None else np.zeros((ED, N))
        for s in range(nseg):
            hl = hloc[b, s].copy()
            P = ex2(a2 * sdt[b, s][:, None])
            hloc[b, s] = h
            h = P * h + hl


def walk(a, p, hin, S, nseg_in, with_y, states_out, T_out):
    """Kernel walk (F-C; also the backward's re-derivation): per (b, segment, channel), the
    state groups in turn, from hin (the state entering each segment). Writes y (the partial
    sum over groups kept in y itself), states_out at t % T_out == 0, h_last (last segment)."""
    u, delta, A, Bm, C, D, z = (a[k] for k in ("u", "delta", "A", "Bm", "C", "D", "z"))
    Bn, L, ED = u.shape
    N = A.shape[1]
    bias = a["bias"] if a["bias"] is not None else np.zeros(ED)
    y = np.zeros_like(u) if with_y else None
    h_last = np.zeros((Bn, ED, N)) if with_y else None
    for b in range(Bn):
        for s in range(nseg_in):
            ts, te = s * S, min(s * S + S, L)
            for ng in range(p["ngroups"]):
                n1 = min(N, ng * NG + NG)
                a2 = group_A2(A, ng)
                h = np.zeros((ED, NG))
                h[:, : n1 - ng * NG] = hin[b, s, :, ng * NG: n1]
                for w0 in range(ts, te, WIN):
                    sB = group_rows(Bm, b, w0, min(w0 + WIN, te), ng)
                    sC = group_rows(C, b, w0, min(w0 + WIN, te), ng)
                    for tt in range(min(WIN, te - w0)):
                        t = w0 + tt
                        if states_out is not None and t % T_out == 0:
                            states_out[b, t // T_out, :, ng * NG: n1] = h[:, : n1 - ng * NG]
                        # (walk<kForward> reads this delta_t from the (B, L, ED) scratch that
                        # walk_local wrote: the same function of the same inputs)
                        dt = delta_of(delta[b, t] + bias, a["sp"])
                        dtu = dt * u[b, t]
                        h = ex2(dt[:, None] * a2) * h + dtu[:, None] * sB[tt][None, :]
                        if with_y:
                            yv = h @ sC[tt]
                            if ng == 0:
                                if D is not None:
                                    yv = D * u[b, t] + yv
                            else:
                                yv = y[b, t] + yv
                            if ng == p["ngroups"] - 1 and z is not None:
                                yv = yv * (z[b, t] * sigmoid(z[b, t]))
                            y[b, t] = yv
                if with_y and te == L:
                    h_last[b, :, ng * NG: n1] = h[:, : n1 - ng * NG]
    return y, h_last


def v3_forward(a, p):
    u = a["u"]
    Bn, L, ED = u.shape
    N = a["A"].shape[1]
    hloc, sdt = walk_local(a, p)
    combine_forward(hloc, sdt, a["A"], a["h0"])
    states = np.full((Bn, p["nc"], ED, N), np.nan)  # poisoned: every entry must be written
    y, h_last = walk(a, p, hloc, p["S"], p["nseg"], True, states, a["T"])
    return {"y": y, "h_last": h_last, "states": states}


# ---- v3 backward --------------------------------------------------------------------------
def subseg(p, sg, L):
    tau, j = sg // p["m"], sg % p["m"]
    lo = tau * p["Kt"] + min(j * p["sa"], p["Kt"])
    hi = tau * p["Kt"] + min((j + 1) * p["sa"], p["Kt"])
    return min(lo, L), min(hi, L)


def bwd_local(a, p):
    """Kernel bwd_local (B-A): per (b, sub-segment, group, channel) the adjoint at the
    sub-segment's start from zero at its end, walking backwards; and its sum of delta."""
    u, delta, A, C, z, dy = (a[k] for k in ("u", "delta", "A", "C", "z", "dy"))
    Bn, L, ED = u.shape
    N = A.shape[1]
    bias = a["bias"] if a["bias"] is not None else np.zeros(ED)
    mloc = np.zeros((Bn, p["nseg_a"], ED, N))
    sdt = np.zeros((Bn, p["nseg_a"], ED))
    for b in range(Bn):
        for sg in range(p["nseg_a"]):
            ts, te = subseg(p, sg, L)
            for ng in range(p["ngroups"]):
                a2 = group_A2(A, ng)
                mu = np.zeros((ED, NG))
                acc = np.zeros(ED)
                we = te
                while we > ts:
                    w0 = max(ts, we - WIN)
                    sC = group_rows(C, b, w0, we, ng)
                    for tt in range(we - w0 - 1, -1, -1):
                        t = w0 + tt
                        dt = delta_of(delta[b, t] + bias, a["sp"])
                        g = dy[b, t] * (z[b, t] * sigmoid(z[b, t])) if z is not None else dy[b, t]
                        acc = acc + dt
                        lam = g[:, None] * sC[tt][None, :] + mu
                        mu = ex2(dt[:, None] * a2) * lam
                    we = w0
                n1 = min(N, ng * NG + NG)
                mloc[b, sg, :, ng * NG: n1] = mu[:, : n1 - ng * NG]
                if ng == 0:
                    sdt[b, sg] = acc
    return mloc, sdt


def combine_backward(mloc, sdt, A, dh_last):
    """Kernel bwd_combine (B-B): per (b, d, n) over sub-segments last first; mloc becomes the
    adjoint mu entering each sub-segment from the right (in place). Returns dh0."""
    Bn, nseg, ED, N = mloc.shape
    a2 = A * LOG2E
    dh0 = np.zeros((Bn, ED, N))
    for b in range(Bn):
        mu = dh_last[b].copy() if dh_last is not None else np.zeros((ED, N))
        for sg in range(nseg - 1, -1, -1):
            ml = mloc[b, sg].copy()
            P = ex2(a2 * sdt[b, sg][:, None])
            mloc[b, sg] = mu
            mu = P * mu + ml
        dh0[b] = mu
    return dh0


def compose(x, y):
    """x first, then y: the affine map h -> y.a (x.a h + x.b) + y.b."""
    return (x[0] * y[0], y[0] * x[1] + y[1])


def warp_excl_fwd(v):
    """Kogge-Stone inclusive scan with shuffle-up (5 levels), then shifted by one lane:
    lane l gets the composite of lanes 0..l-1 (identity for lane 0)."""
    va, vb = v[0].copy(), v[1].copy()
    lane = np.arange(32)
    for o in (1, 2, 4, 8, 16):
        pa, pb = np.roll(va, o), np.roll(vb, o)  # __shfl_up_sync: lane l reads lane l - o
        m = lane >= o
        na, nb = compose((pa, pb), (va, vb))
        va, vb = np.where(m, na, va), np.where(m, nb, vb)
    ea, eb = np.roll(va, 1), np.roll(vb, 1)
    ea[0], eb[0] = 1.0, 0.0
    return ea, eb


def warp_excl_rev(v):
    """The mirror: shuffle-down; lane l gets the composite of lanes 31..l+1 (lane 31 applied
    first), identity for lane 31."""
    va, vb = v[0].copy(), v[1].copy()
    lane = np.arange(32)
    for o in (1, 2, 4, 8, 16):
        qa, qb = np.roll(va, -o), np.roll(vb, -o)  # __shfl_down_sync: lane l reads lane l + o
        m = lane + o < 32
        na, nb = compose((qa, qb), (va, vb))
        va, vb = np.where(m, na, va), np.where(m, nb, vb)
    ea, eb = np.roll(va, -1), np.roll(vb, -1)
    ea[31], eb[31] = 1.0, 0.0
    return ea, eb


def warp_sum(v):
    """__shfl_xor_sync tree, offsets 16, 8, 4, 2, 1 (every lane ends with the same sum)."""
    v = v.copy()
    for o in (16, 8, 4, 2, 1):
        v = v + v[np.arange(32) ^ o]
    return v[0]


def bwd_tile(a, p, st, T_s, nc_s, mend, out, deterministic=True):
    """Kernel bwd_tile (B-C): block (b, tile, channel group g); W warps = W channels of a
    sub-batch; lane l owns steps t0 + l*K + i. Per state: replay the states (forward warp
    scan seeded from the saved state at the tile start), the adjoint (reverse warp scan seeded
    with mu at the tile end), every gradient; dB, dC summed over the block's channels in
    (sub-batch, warp) order into acc, then over groups in g order."""
    u, delta, A, Bm, C, D, z, dy = (a[k] for k in ("u", "delta", "A", "Bm", "C", "D", "z", "dy"))
    Bn, L, ED = u.shape
    N = A.shape[1]
    bias = a["bias"] if a["bias"] is not None else np.zeros(ED)
    G, Kt, ntiles = p["G"], p["Kt"], p["ntiles"]
    partB = np.zeros((G, Bn, L, N))
    partC = np.zeros((G, Bn, L, N))
    part_A = np.zeros((Bn, ntiles, ED, N))
    part_D = np.zeros((Bn, ntiles, ED))
    part_bias = np.zeros((Bn, ntiles, ED))
    lane = np.arange(32)
    items = lane[:, None] * K + np.arange(K)[None, :]  # (32, K): tile step of (lane, item)
    for b in range(Bn):
        for tau in range(ntiles):
            for g in range(G):
                t0 = tau * Kt
                tl = min(Kt, L - t0)
                valid = items < tl
                tcl = np.minimum(t0 + items, L - 1)  # for reads only; masked by valid
                sb0, sb1 = g * p["spg"], min(g * p["spg"] + p["spg"], p["nsb"])
                for ng in range(p["ngroups"]):
                    sB = group_rows(Bm, b, t0, t0 + tl, ng)  # staged [tt][j], 0 past the tile
                    sC = group_rows(C, b, t0, t0 + tl, ng)
                    sBt = np.zeros((TILE, NG)); sBt[:tl] = sB
                    sCt = np.zeros((TILE, NG)); sCt[:tl] = sC
                    accB = np.zeros((NG, TILE))
                    accC = np.zeros((NG, TILE))
                    last = ng == p["ngroups"] - 1
                    for sb in range(sb0, sb1):
                        contribB = np.zeros((W, NG, TILE))
                        contribC = np.zeros((W, NG, TILE))
                        for w in range(W):
                            d = sb * W + w
                            if d >= ED:
                                continue  # inactive warp: zero contributions, barriers only
                            uu = np.where(valid, u[b, tcl, d], 0.0)
                            rr = np.where(valid, delta[b, tcl, d], 0.0) + bias[d]
                            dyv = np.where(valid, dy[b, tcl, d], 0.0)
                            dt = np.where(valid, delta_of(rr, a["sp"]), 0.0)
                            if z is not None:
                                zv = np.where(valid, z[b, tcl, d], 0.0)
                                s = sigmoid(zv)
                                gg = dyv * (zv * s)
                                zf = dyv * s * (1.0 + zv * (1.0 - s))
                            else:
                                gg, zf = dyv, np.zeros_like(dyv)
                            if ng == 0:
                                yp = (D[d] * uu) if D is not None else np.zeros_like(uu)
                                slB = np.zeros_like(uu)
                                ddt = np.zeros_like(uu)
                                if D is not None:
                                    part_D[b, tau, d] = warp_sum((gg * uu).sum(1))
                            else:  # the accumulators of the earlier groups (kept in du, ddelta, dz)
                                slB = np.where(valid, out["du"][b, tcl, d], 0.0)
                                ddt = np.where(valid, out["ddelta"][b, tcl, d], 0.0)
                                yp = np.where(valid, out["dz"][b, tcl, d], 0.0) if z is not None else np.zeros_like(uu)
                            dtu = dt * uu
                            for nn in range(NG):
                                n = ng * NG + nn
                                if n >= N:
                                    break
                                An = A[d, n]
                                a2 = An * LOG2E
                                hs = st[b, t0 // T_s, d, n]
                                me = mend[b, tau * p["m"] + p["m"] - 1, d, n]
                                Abar = ex2(dt * a2)
                                Bv = sBt[items, nn]
                                Cv = sCt[items, nn]
                                # (1) replay the states
                                Fa, Fb = Abar[:, 0], dtu[:, 0] * Bv[:, 0]
                                for i in range(1, K):
                                    Fa, Fb = compose((Fa, Fb), (Abar[:, i], dtu[:, i] * Bv[:, i]))
                                pa, pb = warp_excl_fwd((Fa, Fb))
                                h = pa * hs + pb
                                hp = np.zeros((32, K))
                                cC = np.zeros((32, K))
                                for i in range(K):
                                    hp[:, i] = h
                                    h = Abar[:, i] * h + dtu[:, i] * Bv[:, i]
                                    yp[:, i] = Cv[:, i] * h + yp[:, i]
                                    cC[:, i] = np.where(valid[:, i], gg[:, i] * h, 0.0)
                                # (2) the adjoint
                                Ra, Rb = Abar[:, K - 1], Abar[:, K - 1] * (gg[:, K - 1] * Cv[:, K - 1])
                                for i in range(K - 2, -1, -1):
                                    Ra, Rb = compose((Ra, Rb), (Abar[:, i], Abar[:, i] * (gg[:, i] * Cv[:, i])))
                                ea, eb = warp_excl_rev((Ra, Rb))
                                mu = ea * me + eb
                                cB = np.zeros((32, K))
                                dA_l = np.zeros(32)
                                for i in range(K - 1, -1, -1):
                                    lam = gg[:, i] * Cv[:, i] + mu
                                    Ah = Abar[:, i] * hp[:, i]
                                    cB[:, i] = np.where(valid[:, i], lam * dtu[:, i], 0.0)
                                    slB[:, i] = lam * Bv[:, i] + slB[:, i]
                                    lAh = lam * Ah
                                    ddt[:, i] = lAh * An + ddt[:, i]
                                    dA_l = lAh * dt[:, i] + dA_l
                                    mu = Abar[:, i] * lam
                                part_A[b, tau, d, n] = warp_sum(dA_l)
                                contribB[w, nn][items] = cB
                                contribC[w, nn][items] = cC
                            if last:
                                r2 = np.where(valid, delta[b, tcl, d], 0.0) + bias[d]
                                sp = delta_grad_of(r2, a["sp"])
                                draw = np.where(valid, (uu * slB + ddt) * sp, 0.0)
                                du = dt * slB + (D[d] * gg if D is not None else 0.0)
                                if a["bias"] is not None:
                                    part_bias[b, tau, d] = warp_sum(draw.sum(1))
                                vals = {"du": du, "ddelta": draw, "dz": yp * zf}
                            else:
                                vals = {"du": slB, "ddelta": ddt, "dz": yp}
                            for k, v in vals.items():
                                if k == "dz" and z is None:
                                    continue
                                tv = t0 + items[valid]
                                out[k][b, tv, d] = v[valid]
                        # the sum pass: thread tt adds the W warps in order, then into acc
                        sumB = contribB[0].copy()
                        sumC = contribC[0].copy()
                        for w in range(1, W):
                            sumB = sumB + contribB[w]
                            sumC = sumC + contribC[w]
                        if sb == sb0:
                            accB, accC = sumB, sumC
                        else:
                            accB, accC = accB + sumB, accC + sumC
                    n1 = min(N, ng * NG + NG)
                    partB[g, b, t0:t0 + tl, ng * NG: n1] = accB[: n1 - ng * NG, :tl].T
                    partC[g, b, t0:t0 + tl, ng * NG: n1] = accC[: n1 - ng * NG, :tl].T
    return partB, partC, part_A, part_D, part_bias


def v3_backward(a, p, states_in):
    u = a["u"]
    Bn, L, ED = u.shape
    N = a["A"].shape[1]
    T = a["T"]
    if p["rederive"]:  # walk from the saved chunk starts, states every Kt steps
        rs = np.full((Bn, p["ntiles"], ED, N), np.nan)
        walk(a, p, states_in, T, p["nc"], False, rs, p["Kt"])
        st, T_s, nc_s = rs, p["Kt"], p["ntiles"]
    else:
        st, T_s, nc_s = states_in, T, p["nc"]
    mloc, sdt = bwd_local(a, p)
    dh0 = combine_backward(mloc, sdt, a["A"], a["dh_last"])
    nan = lambda shape: np.full(shape, np.nan)
    out = {"du": nan(u.shape), "ddelta": nan(u.shape),
           "dz": nan(u.shape) if a["z"] is not None else None}
    partB, partC, part_A, part_D, part_bias = bwd_tile(a, p, st, T_s, nc_s, mloc, out)
    g = dict(out)
    # the sums: over groups in g order; over (b, tile) in order
    g["dB"] = partB[0].copy()
    g["dC"] = partC[0].copy()
    for k in range(1, p["G"]):
        g["dB"] = g["dB"] + partB[k]
        g["dC"] = g["dC"] + partC[k]
    g["dA"] = np.zeros((ED, N))
    dD = np.zeros(ED)
    db = np.zeros(ED)
    for b in range(Bn):
        for tau in range(p["ntiles"]):
            g["dA"] = g["dA"] + part_A[b, tau]
            dD = dD + part_D[b, tau]
            db = db + part_bias[b, tau]
    g["dD"] = dD if a["D"] is not None else None
    g["dbias"] = db if a["bias"] is not None else None
    g["dh0"] = dh0 if a["h0"] is not None else None
    return g


# ---- the checks ------------------------------------------------------------------------------
def make_inputs(B, L, ED, N, T, opt, seed):
    r = np.random.default_rng(seed)
    a = {"T": T, "sp": opt.get("softplus", True)}
    a["u"] = r.standard_normal((B, L, ED))
    a["delta"] = r.standard_normal((B, L, ED)) * 0.5 if a["sp"] else r.uniform(0.001, 0.5, (B, L, ED))
    a["A"] = -np.tile(np.arange(1, N + 1, dtype=np.float64), (ED, 1)) * r.uniform(0.5, 1.5, (ED, N))
    a["Bm"] = r.standard_normal((B, L, N))
    a["C"] = r.standard_normal((B, L, N))
    a["D"] = r.standard_normal(ED) if opt.get("D", True) else None
    a["z"] = r.standard_normal((B, L, ED)) if opt.get("z", True) else None
    lo, hi = (-6.9, -2.25) if a["sp"] else (0.0, 0.1)
    a["bias"] = r.uniform(lo, hi, ED) if opt.get("bias", True) else None
    a["h0"] = r.standard_normal((B, ED, N)) * 0.5 if opt.get("h0", True) else None
    a["dy"] = r.standard_normal((B, L, ED))
    a["dh_last"] = r.standard_normal((B, ED, N)) if opt.get("dh_last", True) else None
    return a


def rel(x, ref):
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    if not np.all(np.isfinite(x)):
        return float("inf")
    d = np.max(np.abs(x - ref)) if ref.size else 0.0
    return d / scale if scale > 0 else d


def check(B, L, ED, N, T, opt, seed, **plan_kw):
    a = make_inputs(B, L, ED, N, T, opt, seed)
    p = plan(B, L, ED, N, T, **plan_kw)
    want_f, want_g = sequential(a)
    got_f = v3_forward(a, p)
    got_g = v3_backward(a, p, got_f["states"])
    # the backward must accept states saved by any forward: also from the sequential scan's
    got_g2 = v3_backward(a, p, want_f["states"])
    worst, worst_name = 0.0, ""
    rows = []
    for k in ("y", "h_last", "states"):
        e = rel(got_f[k], want_f[k]); rows.append((k, e))
        if e >= worst: worst, worst_name = e, k
    for gs in (got_g, got_g2):
        for k in ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias", "dh0"):
            if want_g[k] is None:
                assert gs[k] is None, k
                continue
            e = rel(gs[k], want_g[k]); rows.append((k, e))
            if e >= worst: worst, worst_name = e, k
    desc = (f"B {B} L {L} ED {ED} N {N} T {T} {opt} plan S {p['S']} nseg {p['nseg']} Kt {p['Kt']} "
            f"ntiles {p['ntiles']} m {p['m']} sa {p['sa']} G {p['G']} spg {p['spg']} "
            f"rederive {p['rederive']} {plan_kw or ''}")
    return worst, f"({worst_name}) " + desc, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the first few shapes only")
    args = ap.parse_args()
    all_on = dict(D=True, z=True, bias=True, h0=True, softplus=True, dh_last=True)
    none = dict(D=False, z=False, bias=False, h0=False, softplus=True, dh_last=False)
    cases = [
        # (B, L, ED, N, T, options, plan overrides)
        (1, 300, 7, 16, 64, all_on, {}),
        (3, 77, 13, 17, 5, dict(all_on, h0=False), dict(min_seg=8, tile_blocks=64)),
        (2, 613, 33, 1, 100, none, dict(min_seg=40)),
        (1, 520, 37, 16, 300, dict(all_on, dh_last=False), dict(min_seg=50, tile_blocks=4)),
        (3, 260, 17, 16, 1, dict(all_on, softplus=False), dict(min_seg=20, tile_blocks=6)),
        (1, 1, 1, 16, 4, all_on, {}),
        (2, 700, 40, 33, 64, dict(all_on, z=False, D=False), dict(min_seg=64, tile_blocks=10)),
        (1, 301, 9, 4, 129, dict(all_on, bias=False), dict(min_seg=30, tile_blocks=2)),
        (3, 96, 64, 16, 3, all_on, dict(min_seg=10, tile_blocks=1000)),
        (2, 513, 1, 7, 256, dict(all_on, h0=False, dh_last=False), {}),
        (2, 150, 72, 17, 7, all_on, dict(min_seg=16, tile_blocks=1000)),  # 2 state groups x 2 channel groups
    ]
    if args.quick:
        cases = cases[:3]
    worst_all = 0.0
    for i, (B, L, ED, N, T, opt, kw) in enumerate(cases):
        worst, desc, rows = check(B, L, ED, N, T, opt, 100 + i, **kw)
        worst_all = max(worst_all, worst)
        print(f"{worst:9.2e}  {desc}")
        sys.stdout.flush()
    print(f"worst relative error over {len(cases)} shapes (max|v3 - seq| / max|seq|): {worst_all:.2e}")
    return 0 if worst_all < 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
