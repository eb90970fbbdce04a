#!/usr/bin/python3
"""Golden PyTorch reference for a whole Mamba language model (forward, loss and every gradient).

Regenerate (Debian's python3-torch 1.13 + numpy; no safetensors or transformers package):

    /usr/bin/python3 tests/reference/make_model_fixtures.py

It writes tests/reference/model_fixtures.safetensors next to this script. The output is a pure
function of SEED (rerunning reproduces the same bytes). tests/test_model_reference.cpp loads it
into mambagrad's MambaLM and compares in f64 (relative error < 1e-9) and f32 (< 1e-4).

The model below is written here from the math (paper + docs/DESIGN.md), not taken from any
library, in the Hugging Face `MambaForCausalLM` parameter layout:

    h = embeddings[ids]                                          (B, L, D)
    for each layer i:  h = h + mixer_i(rms_norm(h, norm_i))
    logits = rms_norm(h, norm_f) @ embeddings^T                  (tied lm_head)  (B, L, V)
    loss = mean_t CE(logits[:, t], ids[:, t+1]),  t < L-1

    mixer(h):
      x, z = split(h @ in_proj^T)                   rows [0, ED) = x, [ED, 2ED) = z
      xc[d, t] = bias[d] + sum_k w[d, 0, k] x[d, t-(K-1)+k]   (x[., <0] = 0: causal, padding K-1)
      u = silu(xc)
      dt, Bm, C = split(u @ x_proj^T, [R, N, N])
      delta = softplus(dt @ dt_proj^T + dt_bias)    (softplus linear above 20)
      A = -exp(A_log)
      state s (B, ED, N), zero at t = 0:  s = exp(delta A) s + delta Bm u
      y = <C, s> + D u;  y = y * silu(z);  out = y @ out_proj^T

The weights are random, NOT the default init, so that every gradient is far from zero:
norm weights 1 + noise, A_log = log(n+1) + noise, softplus(dt_bias) spread over [0.02, 0.6]
(a state that both remembers and forgets over L = 13 steps), D = 1 + noise.

Tensors (all F64 except input_ids):
    <parameter name>         the weights, HF names (no lm_head: tied)
    input_ids                I32 (B, L)
    logits                   (B, L, V)
    loss                     () mean next-token cross-entropy
    grad.<parameter name>    d loss / d parameter
__metadata__: the config in mambagrad's MambaConfig::to_metadata keys (architecture, d_model,
n_layer, vocab_size, d_state, d_conv, expand, dt_rank, eps, pad_vocab_multiple, tie_embeddings).
"""
import json
import math
import os
import struct

import numpy as np
import torch

SEED = 20240612
CFG = dict(vocab_size=64, d_model=16, n_layer=2, d_state=16, d_conv=4, expand=2, eps=1e-5)
BATCH, LENGTH = 2, 13

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(SEED)


def randn(*shape, scale=1.0):
    return torch.tensor(rng.standard_normal(shape) * scale)


def uniform(*shape, lo=-1.0, hi=1.0):
    return torch.tensor(rng.uniform(lo, hi, size=shape))


def make_params(cfg):
    V, D, N, K = cfg["vocab_size"], cfg["d_model"], cfg["d_state"], cfg["d_conv"]
    ED, R = cfg["expand"] * D, math.ceil(D / 16)
    p = {"backbone.embeddings.weight": randn(V, D, scale=0.5)}
    for i in range(cfg["n_layer"]):
        m = f"backbone.layers.{i}.mixer."
        p[f"backbone.layers.{i}.norm.weight"] = 1.0 + randn(D, scale=0.2)
        p[m + "in_proj.weight"] = randn(2 * ED, D, scale=0.35)
        p[m + "conv1d.weight"] = uniform(ED, 1, K, lo=-0.6, hi=0.6)
        p[m + "conv1d.bias"] = uniform(ED, lo=-0.3, hi=0.3)
        p[m + "x_proj.weight"] = randn(R + 2 * N, ED, scale=0.3)
        p[m + "dt_proj.weight"] = randn(ED, R, scale=0.5)
        dt = torch.exp(uniform(ED, lo=math.log(0.02), hi=math.log(0.6)))
        p[m + "dt_proj.bias"] = dt + torch.log(-torch.expm1(-dt))  # softplus^-1(dt)
        p[m + "A_log"] = torch.log(torch.arange(1, N + 1).double()).repeat(ED, 1) + randn(ED, N, scale=0.1)
        p[m + "D"] = 1.0 + randn(ED, scale=0.3)
        p[m + "out_proj.weight"] = randn(D, ED, scale=0.25)
    p["backbone.norm_f.weight"] = 1.0 + randn(D, scale=0.2)
    return p


def silu(x):
    return x * torch.sigmoid(x)


def softplus(x):  # log(1 + e^x), linear above 20 (as in the scan); clamp keeps exp finite
    return torch.where(x > 20.0, x, torch.log1p(torch.exp(torch.clamp(x, max=20.0))))


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def mixer(h, p, m, cfg):
    Bsz, L, _ = h.shape
    N, K = cfg["d_state"], cfg["d_conv"]
    ED = cfg["expand"] * cfg["d_model"]
    R = p[m + "dt_proj.weight"].shape[1]
    xz = h @ p[m + "in_proj.weight"].T                       # (B, L, 2ED)
    x, z = xz[..., :ED], xz[..., ED:]
    w = p[m + "conv1d.weight"][:, 0, :]                      # (ED, K)
    xpad = torch.cat([torch.zeros(Bsz, K - 1, ED), x], 1)   # (B, K-1+L, ED)
    xc = p[m + "conv1d.bias"] + sum(w[:, k] * xpad[:, k:k + L, :] for k in range(K))
    u = silu(xc)                                             # (B, L, ED)
    x_dbl = u @ p[m + "x_proj.weight"].T                     # (B, L, R+2N)
    dt, Bm, C = x_dbl[..., :R], x_dbl[..., R:R + N], x_dbl[..., R + N:]
    delta = softplus(dt @ p[m + "dt_proj.weight"].T + p[m + "dt_proj.bias"])  # (B, L, ED)
    A = -torch.exp(p[m + "A_log"])                           # (ED, N)
    s = torch.zeros(Bsz, ED, N)
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, t, :, None] * A)             # (B, ED, N)
        dBu = delta[:, t, :, None] * Bm[:, t, None, :] * u[:, t, :, None]
        s = dA * s + dBu
        ys.append((s * C[:, t, None, :]).sum(-1) + p[m + "D"] * u[:, t])  # (B, ED)
    y = torch.stack(ys, 1) * silu(z)                         # (B, L, ED)
    return y @ p[m + "out_proj.weight"].T                    # (B, L, D)


def forward(ids, p, cfg):
    E = p["backbone.embeddings.weight"]
    h = E[ids]
    for i in range(cfg["n_layer"]):
        h = h + mixer(rms_norm(h, p[f"backbone.layers.{i}.norm.weight"], cfg["eps"]), p,
                      f"backbone.layers.{i}.mixer.", cfg)
    logits = rms_norm(h, p["backbone.norm_f.weight"], cfg["eps"]) @ E.T
    V = logits.shape[-1]
    pred = logits[:, :-1].reshape(-1, V)
    target = ids[:, 1:].reshape(-1)
    logp = pred - torch.logsumexp(pred, -1, keepdim=True)
    loss = -logp[torch.arange(target.numel()), target].mean()
    return logits, loss


def self_check(ids, p, cfg, logits, loss):
    """The hand-written pieces against torch.nn.functional's (conv1d, softplus, cross_entropy,
    and a second scan formulation), so the fixture does not rest on one reading of the math."""
    import torch.nn.functional as F
    m, K, N = "backbone.layers.0.mixer.", cfg["d_conv"], cfg["d_state"]
    x = torch.randn(BATCH, LENGTH, 2 * cfg["d_model"], generator=torch.Generator().manual_seed(0))
    L = x.shape[1]
    ours = p[m + "conv1d.bias"] + sum(p[m + "conv1d.weight"][:, 0, k] *
                                      torch.cat([torch.zeros(BATCH, K - 1, x.shape[2]), x], 1)[:, k:k + L]
                                      for k in range(K))
    theirs = F.conv1d(x.transpose(1, 2), p[m + "conv1d.weight"], p[m + "conv1d.bias"],
                      padding=K - 1, groups=x.shape[2])[..., :L].transpose(1, 2)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12), "conv1d"
    t = torch.linspace(-30, 30, 121)
    assert torch.allclose(softplus(t), F.softplus(t), rtol=0, atol=1e-12), "softplus"
    V = logits.shape[-1]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    assert abs(ce.item() - loss.item()) < 1e-12, "cross_entropy"
    # The scan unrolled: s_t = sum_{j<=t} (prod_{j<i<=t} exp(delta_i A)) delta_j B_j u_j, computed
    # with cumulative sums of delta A in log space, for random inputs of the layer-0 shapes.
    g = torch.Generator().manual_seed(1)
    ED = cfg["expand"] * cfg["d_model"]
    u, Bm, C = torch.randn(LENGTH, ED, generator=g), torch.randn(LENGTH, N, generator=g), torch.randn(LENGTH, N, generator=g)
    delta = torch.rand(LENGTH, ED, generator=g) * 0.5
    A = -torch.exp(p[m + "A_log"].detach())
    s, ys = torch.zeros(ED, N), []
    for i in range(LENGTH):
        s = torch.exp(delta[i, :, None] * A) * s + delta[i, :, None] * Bm[i] * u[i, :, None]
        ys.append((s * C[i]).sum(-1))
    cum = torch.cumsum(delta[:, :, None] * A, 0)                  # (L, ED, N)
    decay = torch.exp(cum[:, None] - cum[None, :])                # [t, j] = prod_{j<i<=t}
    mask = torch.tril(torch.ones(LENGTH, LENGTH))[:, :, None, None]
    states = (mask * decay * (delta[:, :, None] * Bm[:, None, :] * u[:, :, None])[None]).sum(1)
    assert torch.allclose(torch.stack(ys), (states * C[:, None, :]).sum(-1), rtol=1e-10, atol=1e-12), "scan"


def write_safetensors(path, arrays, metadata):
    dtypes = {np.dtype(np.float64): "F64", np.dtype(np.int32): "I32"}
    header, blobs, offset = {}, [], 0
    for name in sorted(arrays):
        a = np.asarray(arrays[name])  # (not ascontiguousarray: it turns a 0-d loss into (1,))
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes(order="C")
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def main():
    cfg = CFG
    params = make_params(cfg)
    for t in params.values():
        t.requires_grad_(True)
    ids = torch.tensor(rng.integers(0, cfg["vocab_size"], size=(BATCH, LENGTH)))
    logits, loss = forward(ids, params, cfg)
    self_check(ids, params, cfg, logits, loss)
    names = sorted(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names])

    out = {n: params[n].detach().numpy() for n in names}
    out.update({"grad." + n: g.numpy() for n, g in zip(names, grads)})
    out["input_ids"] = ids.numpy().astype(np.int32)
    out["logits"] = logits.detach().numpy()
    out["loss"] = np.array(loss.item())
    R = math.ceil(cfg["d_model"] / 16)
    meta = {"architecture": "mamba", "d_model": str(cfg["d_model"]), "n_layer": str(cfg["n_layer"]),
            "vocab_size": str(cfg["vocab_size"]), "d_state": str(cfg["d_state"]),
            "d_conv": str(cfg["d_conv"]), "expand": str(cfg["expand"]), "dt_rank": str(R),
            "eps": repr(cfg["eps"]), "pad_vocab_multiple": "8", "tie_embeddings": "true",
            "generator": "tests/reference/make_model_fixtures.py", "seed": str(SEED)}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_fixtures.safetensors")
    write_safetensors(path, out, meta)
    print(f"wrote {path}: {len(out)} tensors, loss {loss.item():.6f}")
    for n, g in zip(names, grads):
        print(f"  grad.{n:44s} max|g| {g.abs().max().item():.3e}")


if __name__ == "__main__":
    main()
