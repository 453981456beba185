#!/usr/bin/env python3
"""Small random Llama-family checkpoints in the GGUF tensor types people download, and their
float64 logits, for model/tests/llama_family.rs.

Every matrix is random GGUF blocks (random quant and scale bytes, f16 super-scales sized so that
weights are about 0.05), written as they are; the reference dequantizes them with the `gguf`
package and runs the forward pass of smollm2_reference.py (float64 numpy, written from the Llama
paper and the GGUF conventions), so Kiln's dequantization, kernels and loader are all checked.

Writes, for each case, FOLDER/CASE/model.gguf (or a Hugging Face folder: config.json and
safetensors in bf16, f16 or f32, one file or shards with model.safetensors.index.json) and
FOLDER/CASE/expected.json: the prompt's ids, logits at every prompt position, 16 greedy tokens
with the top-2 gap of each, and the logits of each decode step with the greedy tokens fed back.

Needs:  python3 -m pip install numpy gguf
Run:    python3 model/reference/llama_reference.py FOLDER
"""
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf.quants import dequantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smollm2_reference import Runner  # noqa: E402

N_EMBD, N_HEAD, N_KV, N_FF, N_LAYER, N_VOCAB, N_CTX = 256, 4, 2, 512, 2, 320, 128
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


def matrices(head_dim):
    """(GGUF name without .weight, rows, columns) of every matrix."""
    q, kv = N_HEAD * head_dim, N_KV * head_dim
    out = [("token_embd", N_VOCAB, N_EMBD), ("output", N_VOCAB, N_EMBD)]
    for l in range(N_LAYER):
        b = f"blk.{l}."
        out += [(b + "attn_q", q, N_EMBD), (b + "attn_k", kv, N_EMBD),
                (b + "attn_v", kv, N_EMBD), (b + "attn_output", N_EMBD, q),
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

    def __init__(self, tensors, head_dim, neox, base=ROPE_BASE):
        self.tensors = tensors
        self.n_layer, self.n_head, self.n_kv, self.head_dim = N_LAYER, N_HEAD, N_KV, head_dim
        self.eps, self.base, self.neox = EPS, base, neox

    def w(self, name):
        return self.tensors[name]


def vector(rng, kind, n, around):
    """A vector of n values near `around` stored as `kind` (F32 or BF16): (data, raw_dtype,
    values as stored)."""
    a = (around + rng.normal(0.0, 0.05, size=n)).astype(np.float32)
    if kind == "F32":
        return a, None, a.astype(np.float64)
    bits = (a.view(np.uint32) >> 16).astype(np.uint16)
    values = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return bits.view(np.uint8), gguf.GGMLQuantizationType.BF16, values


def llama3_rope_factors(head_dim, base, factor, low, high, original):
    """Llama 3's frequency divisors per rotating pair, as convert_hf_to_gguf.py writes them into
    rope_freqs.weight (from the `rope_scaling` of config.json, rope_type llama3)."""
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * np.pi / base ** (-i / head_dim)
        if wavelen < original / high:
            out.append(1.0)
        elif wavelen > original / low:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_case(folder, name, seed, kinds, tied, arch="llama", head_dim=N_EMBD // N_HEAD,
               vector_kind="F32", base=ROPE_BASE, llama3_rope=False, linear_rope=None):
    """One checkpoint: `kinds(tensor)` names each matrix's GGML type; qwen2 adds q/k/v biases,
    qwen3 per-head q/k norms (and a head_dim other than n_embd / n_head); `llama3_rope` adds
    Llama 3's rope_freqs (with an original context of 64 positions, so that the scaling turns
    the pairs a short prompt reaches); `linear_rope` a linear scaling factor in the metadata."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    path = os.path.join(folder, name, "model.gguf")
    wr = gguf.GGUFWriter(path, arch)
    wr.add_context_length(N_CTX)
    wr.add_embedding_length(N_EMBD)
    wr.add_feed_forward_length(N_FF)
    wr.add_block_count(N_LAYER)
    wr.add_head_count(N_HEAD)
    wr.add_head_count_kv(N_KV)
    if head_dim != N_EMBD // N_HEAD:
        wr.add_key_length(head_dim)
        wr.add_value_length(head_dim)
    wr.add_rope_dimension_count(head_dim)
    wr.add_rope_freq_base(base)
    if linear_rope is not None:
        wr.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        wr.add_rope_scaling_factor(linear_rope)
    wr.add_layer_norm_rms_eps(EPS)
    wr.add_vocab_size(N_VOCAB)
    # A stand-in byte-level BPE vocabulary of the model's size, so that the file loads whole.
    wr.add_tokenizer_model("gpt2")
    wr.add_token_list(["a", "b", "ab"] + [f"<x{i}>" for i in range(3, N_VOCAB)])
    wr.add_token_merges(["a b"])
    tensors = {}

    def add(name, data, raw_dtype, values):
        wr.add_tensor(name, data, raw_dtype=raw_dtype)
        tensors[name] = values

    types = {}
    for t, n, k in matrices(head_dim):
        if t == "output" and tied:
            continue
        types[t] = kinds(t)
        add(t + ".weight", *stored(rng, types[t], n, k))
    for t in ["output_norm"] + [f"blk.{l}.{t}" for l in range(N_LAYER) for t in ("attn_norm", "ffn_norm")]:
        add(t + ".weight", *vector(rng, vector_kind, N_EMBD, 1.0))
    for l in range(N_LAYER):
        b = f"blk.{l}."
        if arch == "qwen2":
            for t, n in [("attn_q", N_HEAD * head_dim), ("attn_k", N_KV * head_dim), ("attn_v", N_KV * head_dim)]:
                add(b + t + ".bias", *vector(rng, vector_kind, n, 0.0))
        if arch == "qwen3":
            for t in ("attn_q_norm", "attn_k_norm"):
                add(b + t + ".weight", *vector(rng, vector_kind, head_dim, 1.0))
    if llama3_rope:
        factors = llama3_rope_factors(head_dim, base, 8.0, 1.0, 4.0, 64)
        add("rope_freqs.weight", factors, None, factors.astype(np.float64))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()

    if linear_rope is not None:
        # Position interpolation: every pair's frequency divided by the factor.
        tensors["rope_freqs.weight"] = np.full(head_dim // 2, linear_rope, dtype=np.float64)
    model = Model(tensors, head_dim, neox=arch != "llama", base=base)
    run_reference(folder, name, rng, model)


def run_reference(folder, name, rng, model):
    """Writes expected.json for `model` (a Model) from a random prompt."""
    run = Runner(model)
    prompt = [int(i) for i in rng.integers(0, N_VOCAB, size=11)]
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
                "top2_gaps": gaps, "step_logits": steps}
    with open(os.path.join(folder, name, "expected.json"), "w") as f:
        json.dump(expected, f)


HF_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
            "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
            "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj"}


def hf_name(gguf_name):
    """transformers' name of a GGUF tensor name."""
    base, suffix = gguf_name.rsplit(".", 1)
    top = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    if base in top:
        return f"{top[base]}.{suffix}"
    _, layer, part = base.split(".", 2)
    return f"model.layers.{layer}.{HF_LAYER[part]}.{suffix}"


def to_dtype(a, dtype):
    """(bytes, values as stored) of float array `a` in safetensors dtype BF16, F16 or F32."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.tobytes(), a.astype(np.float64)
    if dtype == "F16":
        h = a.astype(np.float16)
        return h.tobytes(), h.astype(np.float64)
    # bf16, rounded to nearest even as torch does.
    bits = a.view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return bits.tobytes(), (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype, shape, bytes), written in the safetensors layout."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    head = json.dumps(header).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def write_hf_case(folder, name, seed, arch, dtype, shards, tied, head_dim=N_EMBD // N_HEAD,
                  base=ROPE_BASE, rope_scaling=None):
    """A Hugging Face folder: config.json (model_type `arch`), random weights stored as `dtype`
    in `shards` files (with an index when more than one). transformers' layout: Q/K rows not
    permuted, so RoPE turns half-split pairs for every family."""
    rng = np.random.default_rng(seed)
    out = os.path.join(folder, name)
    os.makedirs(out, exist_ok=True)
    tensors, stored = {}, {}

    def add(gguf_name, a):
        data, values = to_dtype(a, dtype)
        stored[hf_name(gguf_name)] = (dtype, a.shape, data)
        tensors[gguf_name] = values.reshape(a.shape)

    for t, n, k in matrices(head_dim):
        if t == "output" and tied:
            continue
        add(t + ".weight", rng.normal(0.0, 0.05, size=(n, k)))
    for t in ["output_norm"] + [f"blk.{l}.{t}" for l in range(N_LAYER) for t in ("attn_norm", "ffn_norm")]:
        add(t + ".weight", 1.0 + rng.normal(0.0, 0.05, size=N_EMBD))
    for l in range(N_LAYER):
        b = f"blk.{l}."
        if arch == "qwen2":
            for t, n in [("attn_q", N_HEAD * head_dim), ("attn_k", N_KV * head_dim), ("attn_v", N_KV * head_dim)]:
                add(b + t + ".bias", rng.normal(0.0, 0.05, size=n))
        if arch == "qwen3":
            for t in ("attn_q_norm", "attn_k_norm"):
                add(b + t + ".weight", 1.0 + rng.normal(0.0, 0.05, size=head_dim))
    names = list(stored)
    if shards == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), stored)
    else:
        weight_map = {}
        for i in range(shards):
            file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: stored[n] for n in names[i::shards]}
            write_safetensors(os.path.join(out, file), part)
            weight_map.update({n: file for n in part})
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": sum(len(v[2]) for v in stored.values())},
                       "weight_map": weight_map}, f)
    config = {"model_type": arch, "hidden_size": N_EMBD, "intermediate_size": N_FF,
              "num_hidden_layers": N_LAYER, "num_attention_heads": N_HEAD,
              "num_key_value_heads": N_KV, "head_dim": head_dim, "rms_norm_eps": EPS,
              "rope_theta": base, "max_position_embeddings": N_CTX, "vocab_size": N_VOCAB,
              "tie_word_embeddings": tied, "rope_scaling": rope_scaling,
              "torch_dtype": {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype]}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    if rope_scaling is not None:
        r = rope_scaling
        tensors["rope_freqs.weight"] = llama3_rope_factors(
            head_dim, base, r["factor"], r["low_freq_factor"], r["high_freq_factor"],
            r["original_max_position_embeddings"]).astype(np.float64)
    run_reference(folder, name, rng, Model(tensors, head_dim, neox=True, base=base))


def qwen_mix(t):
    """Q4_K where rows hold whole super-blocks, Q8_0 where they do not, Q6_K for the head."""
    if t == "output":
        return "Q6_K"
    return "Q8_0" if t.endswith("attn_output") else "Q4_K"


def main():
    folder = sys.argv[1]
    write_case(folder, "kquant_mix", 1, lambda t: MIX[t], tied=False)
    write_case(folder, "f16", 2, lambda t: "F16", tied=True)
    write_case(folder, "bf16", 3, lambda t: "BF16", tied=False, vector_kind="BF16")
    write_case(folder, "qwen2", 4, qwen_mix, tied=True, arch="qwen2")
    write_case(folder, "qwen3", 5, qwen_mix, tied=False, arch="qwen3", head_dim=96)
    write_case(folder, "llama3", 6, qwen_mix, tied=True, base=500000.0, llama3_rope=True)
    write_case(folder, "linear_rope", 7, lambda t: "Q8_0", tied=True, linear_rope=4.0)
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    write_hf_case(folder, "hf_llama3_bf16_shards", 8, "llama", "BF16", shards=3, tied=False,
                  base=500000.0, rope_scaling=llama3)
    write_hf_case(folder, "hf_qwen2_f16", 9, "qwen2", "F16", shards=1, tied=True)
    write_hf_case(folder, "hf_qwen3_f32", 10, "qwen3", "F32", shards=2, tied=False, head_dim=96)
    # Every family in F16 GGUF and in a bf16 folder, as well as in a K-quant mix.
    write_case(folder, "qwen2_f16", 11, lambda t: "F16", tied=True, arch="qwen2")
    write_case(folder, "qwen3_f16", 12, lambda t: "F16", tied=False, arch="qwen3", head_dim=96)
    write_hf_case(folder, "hf_qwen2_bf16", 13, "qwen2", "BF16", shards=1, tied=True)
    write_hf_case(folder, "hf_qwen3_bf16", 14, "qwen3", "BF16", shards=2, tied=False, head_dim=96)


if __name__ == "__main__":
    main()
