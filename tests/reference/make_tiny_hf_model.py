#!/usr/bin/python3
"""A tiny Hugging Face-layout Mamba directory for the generation tests (random weights).

Regenerate (numpy only; no safetensors or transformers package):

    /usr/bin/python3 tests/reference/make_tiny_hf_model.py

It writes tests/reference/tiny_mamba_hf/ next to this script, laid out like
state-spaces/mamba-130m-hf but tiny (D 16, 2 layers, N 8, V 2023 -> 2024):

    config.json                          HF MambaConfig names, eos_token_id 0
    model-00001-of-00002.safetensors     embeddings + layer 0
    model-00002-of-00002.safetensors     layer 1 + norm_f
    model.safetensors.index.json         {"metadata": {...}, "weight_map": {name: shard}}
    tokenizer.json                       tests/reference/tokenizers/neox_like.json (a byte-level
                                         BPE trained by HF tokenizers on fortunes, NeoX's added
                                         tokens: <|endoftext|> = 0 is EOS)

The output is a pure function of SEED. tests/test_generate_hf.cpp loads it with load_mamba /
load_tokenizer and checks that greedy generation is deterministic and equals the parallel
forward's argmax chain. Weights: N(0, 1) embeddings, N(0, 0.3) projections except in_proj
N(0, 0.6) and out_proj N(0, 1.5) (the mixer outweighs the tied embedding, so greedy text varies),
A_log = log(1..N), D = 1, dt_proj.bias = softplus^-1(dt) with dt log-uniform in [1e-3, 1e-1]
(Mamba's init), so the model is random but well conditioned.
"""
import json
import os
import shutil
import struct

import numpy as np

SEED = 1234
D, LAYERS, N, K, E = 16, 2, 8, 4, 2
ED = E * D
R = (D + 15) // 16
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tiny_mamba_hf")
TOKENIZER = os.path.join(HERE, "tokenizers", "neox_like.json")


def vocab_size(tokenizer_path):
    t = json.load(open(tokenizer_path))
    ids = list(t["model"]["vocab"].values()) + [a["id"] for a in t["added_tokens"]]
    return max(ids) + 1


def write_safetensors(path, tensors, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    rng = np.random.default_rng(SEED)
    V = vocab_size(TOKENIZER)
    V_pad = (V + 7) // 8 * 8
    normal = lambda shape, std: (rng.standard_normal(shape) * std).astype(np.float32)
    shards = [{}, {}]
    shards[0]["backbone.embeddings.weight"] = normal((V_pad, D), 1.0)
    for i in range(LAYERS):
        p = f"backbone.layers.{i}."
        dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), ED))
        layer = {
            p + "norm.weight": 1 + normal((D,), 0.1),
            p + "mixer.in_proj.weight": normal((2 * ED, D), 0.6),
            p + "mixer.conv1d.weight": normal((ED, 1, K), 0.3),
            p + "mixer.conv1d.bias": normal((ED,), 0.1),
            p + "mixer.x_proj.weight": normal((R + 2 * N, ED), 0.3),
            p + "mixer.dt_proj.weight": normal((ED, R), 0.3),
            p + "mixer.dt_proj.bias": (dt + np.log(-np.expm1(-dt))).astype(np.float32),
            p + "mixer.A_log": np.log(np.tile(np.arange(1, N + 1, dtype=np.float32), (ED, 1))),
            p + "mixer.D": np.ones(ED, dtype=np.float32),
            p + "mixer.out_proj.weight": normal((D, ED), 1.5),
        }
        shards[min(i, 1)].update(layer)
    shards[1]["backbone.norm_f.weight"] = 1 + normal((D,), 0.1)

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map, total = {}, 0
    for name, tensors in zip(names, shards):
        write_safetensors(os.path.join(OUT, name), tensors, {"format": "pt"})
        for k, v in tensors.items():
            weight_map[k] = name
            total += v.size * 4
    json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
              open(os.path.join(OUT, "model.safetensors.index.json"), "w"), indent=2)
    config = {
        "architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_size": D,
        "num_hidden_layers": LAYERS, "vocab_size": V_pad, "state_size": N, "conv_kernel": K,
        "expand": E, "intermediate_size": ED, "time_step_rank": "auto", "layer_norm_epsilon": 1e-5,
        "use_bias": False, "use_conv_bias": True, "tie_word_embeddings": True,
        "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1,
    }
    json.dump(config, open(os.path.join(OUT, "config.json"), "w"), indent=2)
    shutil.copyfile(TOKENIZER, os.path.join(OUT, "tokenizer.json"))
    print(f"wrote {OUT}: V {V} -> {V_pad}, {total} weight bytes")


if __name__ == "__main__":
    main()
