#!/usr/bin/env python3
"""Small random Llama-family checkpoints in the GGUF tensor types people download, and their
float64 logits, for model/tests/llama_family.rs.

Every matrix is random GGUF blocks (random quant and scale bytes, f16 super-scales sized so that
weights are about 0.05), written as they are; the reference dequantizes them with the `gguf`
package and runs the forward pass of smollm2_reference.py (float64 numpy, written from the Llama
paper and the GGUF conventions), so Kiln's dequantization, kernels and loader are all checked.

Writes, for each case, FOLDER/CASE/model.gguf and FOLDER/CASE/expected.json: the prompt's ids,
logits at every prompt position, 16 greedy tokens with the top-2 gap of each, and the logits of
each decode step with the greedy tokens fed back.

Needs:  python3 -m pip install numpy gguf
Run:    python3 model/reference/llama_reference.py FOLDER
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf.quants import dequantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smollm2_reference import Runner  # noqa: E402

N_EMBD, N_HEAD, N_KV, N_FF, N_LAYER, N_VOCAB, N_CTX = 256, 4, 2, 512, 2, 320, 128
HEAD_DIM = N_EMBD // N_HEAD
EPS, ROPE_BASE = 1e-5, 10000.0
N_GREEDY = 16

# Byte offsets of each block type's f16 super-scales (d, then dmin or m): rescaled after the
# random fill so that weights come out near the target size.
HALVES = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
          "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}

# A mix that holds every type Kiln reads, two layers apart (as llama.cpp's Q4_K_M mixes Q4_K,
# Q6_K, Q5_0 and Q8_0 in one file); an untied LM head.
MIX = {
    "token_embd": "Q4_K", "output": "Q6_K",
    "blk.0.attn_q": "Q4_K", "blk.0.attn_k": "Q5_K", "blk.0.attn_v": "Q6_K",
    "blk.0.attn_output": "Q2_K", "blk.0.ffn_gate": "Q3_K", "blk.0.ffn_up": "Q5_0",
    "blk.0.ffn_down": "Q5_1",
    "blk.1.attn_q": "Q8_0", "blk.1.attn_k": "Q4_0", "blk.1.attn_v": "Q4_1",
    "blk.1.attn_output": "BF16", "blk.1.ffn_gate": "F16", "blk.1.ffn_up": "Q4_K",
    "blk.1.ffn_down": "Q6_K",
}


def matrices():
    """(GGUF name without .weight, rows, columns) of every matrix."""
    out = [("token_embd", N_VOCAB, N_EMBD), ("output", N_VOCAB, N_EMBD)]
    for l in range(N_LAYER):
        b = f"blk.{l}."
        out += [(b + "attn_q", N_EMBD, N_EMBD), (b + "attn_k", N_KV * HEAD_DIM, N_EMBD),
                (b + "attn_v", N_KV * HEAD_DIM, N_EMBD), (b + "attn_output", N_EMBD, N_EMBD),
                (b + "ffn_gate", N_FF, N_EMBD), (b + "ffn_up", N_FF, N_EMBD),
                (b + "ffn_down", N_EMBD, N_FF)]
    return out


def random_blocks(rng, kind, n, k, size=0.05):
    """Random blocks of GGML type `kind` for an [n, k] matrix, as uint8 [n, row bytes], and
    their dequantized values."""
    qtype = gguf.GGMLQuantizationType[kind]
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n * k // block, nbytes), dtype=np.uint8)
    ones = np.frombuffer(np.float16(1.0).tobytes(), dtype=np.uint8)
    for at in HALVES[kind]:
        raw[:, at:at + 2] = ones
    unit = dequantize(raw.reshape(-1), qtype).reshape(-1, block)
    # Values are linear in the block's f16 fields together: scale them all by one factor.
    factor = size / max(float(np.std(unit)), 1e-30) * rng.uniform(0.5, 1.5, size=len(raw))
    factor *= np.where(rng.random(len(raw)) < 0.1, -1.0, 1.0)
    for at in HALVES[kind]:
        raw[:, at:at + 2] = factor.astype(np.float16).view(np.uint8).reshape(-1, 2)
    raw = raw.reshape(n, -1)
    return raw, dequantize(raw.reshape(-1), qtype).reshape(n, k).astype(np.float64)


def stored(rng, kind, n, k):
    """(what GGUFWriter writes, raw_dtype or None, the values as stored) for one tensor."""
    if kind in HALVES:
        raw, values = random_blocks(rng, kind, n, k)
        return raw, gguf.GGMLQuantizationType[kind], values
    a = rng.normal(0.0, 0.05, size=(n, k)).astype(np.float32)
    if kind == "F32":
        return a, None, a.astype(np.float64)
    if kind == "F16":
        h = a.astype(np.float16)
        return h, None, h.astype(np.float64)
    if kind == "BF16":
        bits = (a.view(np.uint32) >> 16).astype(np.uint16)
        values = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return bits.view(np.uint8).reshape(n, 2 * k), gguf.GGMLQuantizationType.BF16, values
    raise ValueError(kind)


class Model:
    """What smollm2_reference.Runner reads: sizes and dequantized tensors."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.n_layer, self.n_head, self.n_kv, self.head_dim = N_LAYER, N_HEAD, N_KV, HEAD_DIM
        self.eps, self.base = EPS, ROPE_BASE

    def w(self, name):
        return self.tensors[name]


def write_case(folder, name, seed, kinds, tied, vector_kind="F32"):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    path = os.path.join(folder, name, "model.gguf")
    wr = gguf.GGUFWriter(path, "llama")
    wr.add_context_length(N_CTX)
    wr.add_embedding_length(N_EMBD)
    wr.add_feed_forward_length(N_FF)
    wr.add_block_count(N_LAYER)
    wr.add_head_count(N_HEAD)
    wr.add_head_count_kv(N_KV)
    wr.add_rope_dimension_count(HEAD_DIM)
    wr.add_rope_freq_base(ROPE_BASE)
    wr.add_layer_norm_rms_eps(EPS)
    wr.add_vocab_size(N_VOCAB)
    tensors = {}
    for t, n, k in matrices():
        if t == "output" and tied:
            continue
        data, raw_dtype, values = stored(rng, kinds(t), n, k)
        wr.add_tensor(t + ".weight", data, raw_dtype=raw_dtype)
        tensors[t + ".weight"] = values
    norms = ["output_norm"] + [f"blk.{l}.{t}" for l in range(N_LAYER) for t in ("attn_norm", "ffn_norm")]
    for t in norms:
        data, raw_dtype, values = stored(rng, vector_kind, 1, N_EMBD)
        values = values.reshape(-1)
        data = data.reshape(-1)
        # Norm weights near 1, as trained models have them.
        if raw_dtype is None:
            data = (data + 1.0).astype(data.dtype)
            values = data.astype(np.float64)
        else:
            bits = ((values + 1.0).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
            data = bits.view(np.uint8)
            values = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        wr.add_tensor(t + ".weight", data, raw_dtype=raw_dtype)
        tensors[t + ".weight"] = values
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()

    model = Model(tensors)
    prompt = [int(i) for i in rng.integers(0, N_VOCAB, size=11)]
    run = Runner(model)
    logits = run.forward(np.array(prompt))
    greedy, gaps, steps = [], [], []
    last = logits[-1]
    for _ in range(N_GREEDY):
        top = np.argsort(last)[::-1]
        greedy.append(int(top[0]))
        gaps.append(float(last[top[0]] - last[top[1]]))
        last = run.forward(np.array([greedy[-1]]))[-1]
        steps.append(last.tolist())
    expected = {"prompt": prompt, "logits": logits.tolist(), "greedy": greedy,
                "top2_gaps": gaps, "step_logits": steps, "types": {t: kinds(t) for t, _, _ in matrices()}}
    with open(os.path.join(folder, name, "expected.json"), "w") as f:
        json.dump(expected, f)


def main():
    folder = sys.argv[1]
    write_case(folder, "kquant_mix", 1, lambda t: MIX[t], tied=False)
    write_case(folder, "f16", 2, lambda t: "F16", tied=True)
    write_case(folder, "bf16", 3, lambda t: "BF16", tied=False, vector_kind="BF16")


if __name__ == "__main__":
    main()
