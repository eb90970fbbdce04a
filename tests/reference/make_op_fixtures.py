#!/usr/bin/python3
"""Golden PyTorch fixtures for every op of docs/api_plan.md (selective_scan has its own).

Regenerate (Debian's python3-torch 1.13 + numpy; no safetensors package needed):

    /usr/bin/python3 tests/reference/make_op_fixtures.py

It writes tests/reference/ops_fixtures.safetensors next to this script; the output is a pure
function of SEED, so rerunning it reproduces the same bytes. tests/test_reference_ops.cpp
runs every case through mambagrad in f32 and compares.

File layout, per case <c> (tensor names):
    <c>.in0, <c>.in1, ...     inputs: F32, or I32 for ids/targets
    <c>.out0, ...             PyTorch's outputs (split/chunk have several)
    <c>.dout0, ...            a random cotangent per output
    <c>.grad<i>               dL/d in<i> for L = sum_j <dout_j, out_j>, for each F32 input
and __metadata__["<c>"] = "op=<name> key=value ...", e.g. "op=sum dim=1 keepdim=1".

Accuracy: inputs are drawn in float64 and rounded to float32; the float32 values are what both
sides use. The reference is computed in float64 from those rounded values and only then
stored as float32, so the fixture is more accurate than either float32 implementation.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

SEED = 20240611
rng = np.random.default_rng(SEED)
tensors = {}   # name -> np.ndarray (float32 or int32)
metadata = {}  # case -> "op=... k=v"


def uniform(shape, lo=-1.0, hi=1.0, avoid=None):
    """float32-rounded uniform values; `avoid=(c, r)` moves values out of (c - r, c + r)."""
    x = rng.uniform(lo, hi, size=shape)
    if avoid is not None:
        c, r = avoid
        x = np.where(np.abs(x - c) < r, x + np.sign(x - c + 1e-12) * 2 * r, x)
    return x.astype(np.float32)


def positive(shape):
    return uniform(shape, 0.5, 2.0)


def ids(shape, n):
    return rng.integers(0, n, size=shape).astype(np.int32)


def case(name, op, fn, inputs, **args):
    """Runs fn on float64 copies of the inputs and stores inputs, outputs, cotangents, grads."""
    assert name not in metadata, name
    xs = []
    for a in inputs:
        if a.dtype == np.float32:
            xs.append(torch.tensor(a.astype(np.float64), requires_grad=True))
        else:
            xs.append(torch.tensor(a.astype(np.int64)))
    outs = fn(*xs)
    if not isinstance(outs, (list, tuple)):
        outs = [outs]
    douts = [torch.tensor(rng.standard_normal(o.shape).astype(np.float32).astype(np.float64))
             for o in outs]
    diff = [x for x in xs if x.requires_grad]
    grads = torch.autograd.grad(outs, diff, douts, allow_unused=True)
    for i, a in enumerate(inputs):
        tensors[f"{name}.in{i}"] = a
    for j, (o, d) in enumerate(zip(outs, douts)):
        tensors[f"{name}.out{j}"] = o.detach().numpy().astype(np.float32)
        tensors[f"{name}.dout{j}"] = d.numpy().astype(np.float32)
    g = iter(grads)
    for i, x in enumerate(xs):
        if x.requires_grad:
            gi = next(g)
            gi = torch.zeros_like(x) if gi is None else gi
            tensors[f"{name}.grad{i}"] = gi.numpy().astype(np.float32)
    meta = [f"op={op}"] + [f"{k}={v}" for k, v in args.items()]
    metadata[name] = " ".join(meta)


def ints(v):
    return ",".join(str(int(i)) for i in v)


# ---- arith ---------------------------------------------------------------------------------
for op, fn in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul)]:
    case(f"{op}_same", op, fn, [uniform((3, 5)), uniform((3, 5))])
    case(f"{op}_bias", op, fn, [uniform((2, 3, 4)), uniform((4,))])
    case(f"{op}_bias_left", op, fn, [uniform((3, 4)), uniform((2, 3, 4))])
    case(f"{op}_scalar", op, fn, [uniform((3, 4)), uniform(())])
case("div_same", "div", torch.div, [uniform((3, 5)), positive((3, 5))])
case("div_bias", "div", torch.div, [uniform((2, 3, 4)), -positive((4,))])
case("div_scalar_left", "div", torch.div, [uniform(()), positive((3, 4))])
case("neg", "neg", torch.neg, [uniform((2, 7))])

# ---- unary ---------------------------------------------------------------------------------
case("exp", "exp", torch.exp, [uniform((3, 7), -3, 3)])
case("log", "log", torch.log, [positive((3, 7))])
case("sqrt", "sqrt", torch.sqrt, [positive((3, 7))])
case("rsqrt", "rsqrt", torch.rsqrt, [positive((3, 7))])
case("pow_2.5", "pow", lambda x: torch.pow(x, 2.5), [positive((3, 7))], p=2.5)
case("pow_-1.5", "pow", lambda x: torch.pow(x, -1.5), [positive((3, 7))], p=-1.5)
case("pow_3", "pow", lambda x: torch.pow(x, 3.0), [uniform((3, 7), -2, 2)], p=3)
case("sigmoid", "sigmoid", torch.sigmoid, [uniform((3, 7), -6, 6)])
case("silu", "silu", F.silu, [uniform((3, 7), -6, 6)])
case("gelu", "gelu", F.gelu, [uniform((3, 7), -6, 6)])
case("softplus", "softplus", lambda x: F.softplus(x, beta=1, threshold=20),
     [uniform((4, 9), -30, 30, avoid=(20, 0.5))])
case("tanh", "tanh", torch.tanh, [uniform((3, 7), -3, 3)])
case("relu", "relu", torch.relu, [uniform((3, 7), avoid=(0, 0.05))])

# ---- reduce --------------------------------------------------------------------------------
case("sum_dim1_keep", "sum", lambda x: x.sum(1, keepdim=True), [uniform((2, 5, 3))], dim=1, keepdim=1)
case("sum_dim_last", "sum", lambda x: x.sum(-1), [uniform((2, 5, 3))], dim=-1, keepdim=0)
case("sum_all", "sum", lambda x: x.sum(), [uniform((3, 4))])
case("mean_dim0", "mean", lambda x: x.mean(0), [uniform((4, 3))], dim=0, keepdim=0)
case("mean_dim2_keep", "mean", lambda x: x.mean(2, keepdim=True), [uniform((2, 3, 5))], dim=2, keepdim=1)
case("mean_all", "mean", lambda x: x.mean(), [uniform((3, 5))])
case("max_dim1_keep", "max", lambda x: x.max(1, keepdim=True).values, [uniform((3, 7))], dim=1, keepdim=1)
case("max_dim0", "max", lambda x: x.max(0).values, [uniform((2, 5, 3))], dim=0, keepdim=0)
case("max_all", "max", lambda x: x.max(), [uniform((4, 5))])

# ---- softmax -------------------------------------------------------------------------------
case("softmax_last", "softmax", lambda x: F.softmax(x, -1), [uniform((3, 7), -3, 3)], dim=-1)
case("softmax_dim1", "softmax", lambda x: F.softmax(x, 1), [uniform((2, 5, 3), -3, 3)], dim=1)
case("log_softmax_last", "log_softmax", lambda x: F.log_softmax(x, -1), [uniform((4, 9), -3, 3)], dim=-1)
case("log_softmax_dim0", "log_softmax", lambda x: F.log_softmax(x, 0), [uniform((5, 3), -3, 3)], dim=0)
t = ids((7,), 11)
t[[1, 4]] = -100
case("cross_entropy_ignore", "cross_entropy", lambda x, y: F.cross_entropy(x, y, ignore_index=-100),
     [uniform((7, 11), -3, 3), t], ignore_index=-100)
t = np.array([2, 0, 2, 3, 1], dtype=np.int32)
case("cross_entropy_ignore2", "cross_entropy", lambda x, y: F.cross_entropy(x, y, ignore_index=2),
     [uniform((5, 4), -3, 3), t], ignore_index=2)

# ---- matmul --------------------------------------------------------------------------------
case("matmul_2d", "matmul", torch.matmul, [uniform((5, 4)), uniform((4, 6))])
case("matmul_shared_weight", "matmul", torch.matmul, [uniform((2, 3, 5, 4)), uniform((4, 6))])
case("matmul_batched", "matmul", torch.matmul, [uniform((3, 5, 4)), uniform((3, 4, 6))])
case("linear_bias", "linear", F.linear, [uniform((2, 3, 5)), uniform((4, 5)), uniform((4,))])
case("linear_nobias", "linear", F.linear, [uniform((7, 5)), uniform((3, 5))])

# ---- shape ---------------------------------------------------------------------------------
case("transpose_02", "transpose", lambda x: x.transpose(0, 2), [uniform((2, 3, 4))], d0=0, d1=2)
case("transpose_neg", "transpose", lambda x: x.transpose(0, -1), [uniform((3, 5))], d0=0, d1=-1)
case("transpose_mid", "transpose", lambda x: x.transpose(1, 2), [uniform((2, 3, 4, 5))], d0=1, d1=2)
case("split_dim1", "split", lambda x: torch.split(x, [1, 3, 2], 1), [uniform((2, 6, 3))], sizes=ints([1, 3, 2]), dim=1)
case("chunk_last", "chunk", lambda x: torch.chunk(x, 3, -1), [uniform((4, 6))], chunks=3, dim=-1)
case("cat_dim1", "cat", lambda a, b, c: torch.cat([a, b, c], 1),
     [uniform((2, 1, 3)), uniform((2, 4, 3)), uniform((2, 2, 3))], dim=1)
case("cat_dim0", "cat", lambda a, b: torch.cat([a, b], 0), [uniform((1, 5)), uniform((3, 5))], dim=0)
case("slice_dim1", "slice", lambda x: x[:, 2:6], [uniform((3, 7, 2))], dim=1, start=2, end=6)
case("slice_dim0", "slice", lambda x: x[0:1], [uniform((3, 4))], dim=0, start=0, end=1)

# ---- embedding -----------------------------------------------------------------------------
e = ids((2, 5), 7)
e[0, 0] = e[0, 3] = e[1, 2] = 4  # repeated ids: their gradients must add up
case("embedding_2d", "embedding", F.embedding, [e, uniform((7, 3))])
case("embedding_1d", "embedding", F.embedding, [np.array([1, 1, 0, 2, 1, 0], dtype=np.int32), uniform((3, 4))])

# ---- causal depthwise conv1d (channel-last) ------------------------------------------------


def causal_conv1d(x, w, b=None):
    L, C, K = x.shape[1], x.shape[2], w.shape[2]
    y = F.conv1d(x.transpose(1, 2), w, b, padding=K - 1, groups=C)[..., :L]
    return y.transpose(1, 2)


case("conv1d_bias", "causal_conv1d", causal_conv1d, [uniform((2, 9, 5)), uniform((5, 1, 4)), uniform((5,))])
case("conv1d_nobias", "causal_conv1d", causal_conv1d, [uniform((1, 6, 3)), uniform((3, 1, 2))])
case("conv1d_k1", "causal_conv1d", causal_conv1d, [uniform((2, 3, 2)), uniform((2, 1, 1)), uniform((2,))])

# ---- norms ---------------------------------------------------------------------------------


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


case("rms_norm", "rms_norm", lambda x, w: rms_norm(x, w, 1e-5), [uniform((2, 3, 8)), uniform((8,), 0.5, 1.5)], eps=1e-5)
case("rms_norm_eps", "rms_norm", lambda x, w: rms_norm(x, w, 1e-2), [uniform((5, 7), -0.3, 0.3), uniform((7,))], eps=1e-2)
case("layer_norm", "layer_norm", lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5),
     [uniform((3, 7)), uniform((7,), 0.5, 1.5), uniform((7,))], eps=1e-5)
case("layer_norm_nobias", "layer_norm", lambda x, w: F.layer_norm(x, (x.shape[-1],), w, None, 1e-3),
     [uniform((2, 2, 6)), uniform((6,))], eps=1e-3)

# ---- write safetensors by hand ---------------------------------------------------------------
DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}
metadata["fixture_format"] = ("per case c: c.in<i>, c.out<j>, c.dout<j>, c.grad<i> (float inputs); "
                              "metadata c = 'op=<name> key=value ...'")
metadata["generator"] = f"tests/reference/make_op_fixtures.py, torch {torch.__version__}, seed {SEED}"
header, blobs, offset = {}, [], 0
for name in sorted(tensors):
    a = np.array(tensors[name], order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
    raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
    header[name] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
header["__metadata__"] = dict(sorted(metadata.items()))
text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
text += b" " * (-len(text) % 8)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops_fixtures.safetensors")
with open(out + ".tmp", "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
os.replace(out + ".tmp", out)
print(f"wrote {out}: {len(metadata) - 2} cases, {len(tensors)} tensors, {8 + len(text) + offset} bytes")
