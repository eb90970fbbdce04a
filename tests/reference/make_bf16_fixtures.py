#!/usr/bin/env python3
"""bf16 rounding fixtures from PyTorch (an independent implementation of f32 -> bf16).

    /usr/bin/python3 tests/reference/make_bf16_fixtures.py   # writes bf16_fixtures.safetensors

x (F32): special values (zeros, +-inf, NaN, the largest/smallest normals and subnormals, exact
ties between two bf16 values with even and odd low kept bits, the largest bf16 and values just
above it) and random bit patterns over the whole f32 range; bf16_bits (I32): the 16 bits
torch's x.to(torch.bfloat16) produced (round to nearest, ties to even); NaN inputs are marked
by bf16_is_nan (I32) instead, since NaN payloads are not part of the contract.
"""
import json, os, struct
import numpy as np
import torch

rng = np.random.default_rng(1234)
specials = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC00001,
            0x3F800000, 0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0xBF818000,
            0x7F7F0000, 0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0x00800000, 0x00000001, 0x00008000,
            0x00018000, 0x007FFFFF, 0x80008000, 0x4B7FFFFF, 0x33800000]
bits = np.array(specials + list(rng.integers(0, 2**32, size=4096 - len(specials), dtype=np.uint64)),
                dtype=np.uint32)
x = bits.view(np.float32)
b = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16)
is_nan = np.isnan(x).astype(np.int32)
out = {"x": x, "bf16_bits": b.astype(np.int32), "bf16_is_nan": is_nan}

def save(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        raw = a.tobytes()
        header[name] = {"dtype": {np.float32: "F32", np.int32: "I32"}[a.dtype.type],
                        "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"made_by": "tests/reference/make_bf16_fixtures.py",
                              "torch": torch.__version__}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

save(os.path.join(os.path.dirname(os.path.abspath(__file__)), "bf16_fixtures.safetensors"), out)
print("wrote bf16_fixtures.safetensors:", len(x), "values;", int(is_nan.sum()), "NaN")
