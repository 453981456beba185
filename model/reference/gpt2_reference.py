#!/usr/bin/env python3
"""Independent reference for Kiln's GPT-2 path, written from the GPT-2 paper's equations
(Radford et al. 2019: pre-norm blocks, learned positions, GELU tanh form, tied LM head), not from
Kiln's Rust code.

Writes small random GPT-2 checkpoints in the exact Hugging Face layout (config.json +
model.safetensors, Conv1D weights stored [in, out]) and, for each, expected.json with the float64
logits of a fixed prompt and its greedy continuation.

    python3 -m pip install numpy safetensors
    python3 model/reference/gpt2_reference.py OUT_DIR [BPE_DIR]

With BPE_DIR (holding GPT-2's encoder.json and vocab.bpe), each checkpoint gets vocab.json and
merges.txt, OUT_DIR/tokenizer_cases.json holds reference tokenizations made by the plain Python BPE
below, and GGUF checkpoints are written too (OUT_DIR/NAME/model.gguf, needs `pip install gguf`):
llama.cpp's GPT-2 layout (`gpt2.*` metadata, `blk.N.attn_qkv` with rows [out, in], the tokenizer in
`tokenizer.ggml.*`), matrices quantized with the gguf package; their expected logits come from the
weights dequantized back to float64. For int8 quantization, expected-SCHEME.json files hold the
logits of checkpoints whose matrices went through the int8 schemes written out below (from their
formulas, in float32 as a GPU computes them). expected-outliers-SCHEME.json files hold the logits
of an LLM.int8()-style decomposition: the input columns whose largest |activation| over the
calibration text passes a threshold stay exact, the rest of each matrix goes through int8.
"""
import json
import os
import shutil
import sys

import numpy as np
import regex
from safetensors.numpy import save_file

VOCAB = 50257  # the real GPT-2 vocabulary
N_GREEDY = 16

# name, layers, width, heads, positions, dtype, key prefix, extras
CONFIGS = [
    ("tiny-f32", 2, 64, 2, 64, np.float32, "", False),
    ("small-f16-prefixed", 3, 128, 4, 96, np.float16, "transformer.", True),
    ("wide-f32-prefixed", 4, 192, 8, 64, np.float32, "transformer.", False),
]
# name, layers, width, heads, positions, GGUF type per tensor family ("output" absent: tied head)
GGUF_CONFIGS = [
    ("gguf-quantized", 2, 128, 4, 64,
     {"token_embd": "Q8_0", "position_embd": "F16", "attn_qkv": "Q8_0", "attn_output": "Q4_0",
      "ffn_up": "Q4_1", "ffn_down": "Q8_0"}),
    ("gguf-f32-untied", 3, 64, 2, 48,
     {"token_embd": "F32", "position_embd": "F32", "attn_qkv": "F16", "attn_output": "F32",
      "ffn_up": "F32", "ffn_down": "F16", "output": "Q8_0"}),
]
# int8 schemes (Kiln's --quant names), checked on tiny-f32 (all) and on gguf-quantized (two).
INT8_SCHEMES = [f"int8-{zp}{g}" for zp in ("", "zp-") for g in ("tensor", "channel", "g128", "g64", "g32")]
GGUF_INT8_SCHEMES = ["int8-channel", "int8-zp-g32"]
# Outlier decomposition, checked on tiny-f32: the calibration text (its last tokens, at most
# CALIBRATION_TOKENS and at most the context) and the int8 schemes of the remaining columns.
CALIBRATION_TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "docs", "text", "founding-documents.txt")
CALIBRATION_TOKENS = 256
OUTLIER_SCHEMES = ["int8-channel", "int8-zp-g32"]
PROMPT = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 50256, 198, 40]


def random_checkpoint(rng, n_layer, e, n_pos, dtype):
    n = lambda *shape, std=1.0: (rng.standard_normal(shape) * std).astype(dtype)
    w = {"wte.weight": n(VOCAB, e, std=0.1), "wpe.weight": n(n_pos, e, std=0.1)}
    for l in range(n_layer):
        p = f"h.{l}."
        w[p + "ln_1.weight"] = (1 + n(e, std=0.1)).astype(dtype)
        w[p + "ln_1.bias"] = n(e, std=0.1)
        w[p + "attn.c_attn.weight"] = n(e, 3 * e, std=1.0 / np.sqrt(e))   # Conv1D: [in, out]
        w[p + "attn.c_attn.bias"] = n(3 * e, std=0.1)
        w[p + "attn.c_proj.weight"] = n(e, e, std=2.0 / np.sqrt(e))
        w[p + "attn.c_proj.bias"] = n(e, std=0.1)
        w[p + "ln_2.weight"] = (1 + n(e, std=0.1)).astype(dtype)
        w[p + "ln_2.bias"] = n(e, std=0.1)
        w[p + "mlp.c_fc.weight"] = n(e, 4 * e, std=1.0 / np.sqrt(e))
        w[p + "mlp.c_fc.bias"] = n(4 * e, std=0.1)
        w[p + "mlp.c_proj.weight"] = n(4 * e, e, std=2.0 / np.sqrt(4 * e))
        w[p + "mlp.c_proj.bias"] = n(e, std=0.1)
    w["ln_f.weight"] = (1 + n(e, std=0.1)).astype(dtype)
    w["ln_f.bias"] = n(e, std=0.1)
    return w


def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def forward(w, ids, n_layer, n_head, inputs=None):
    """Logits of every position of `ids` (float64, full causal attention, no cache). With a dict
    `inputs`, stores there the largest |input| of each column of every matrix multiplied by
    activations, under the matrix's GGUF name (the fused QKV is one matrix, `attn_qkv`)."""
    def note(names, a):
        if inputs is not None:
            for name in names:
                inputs[name] = np.abs(a).max(0)

    w = {k: v.astype(np.float64) for k, v in w.items()}
    t = len(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][:t]
    e = x.shape[1]
    d = e // n_head
    mask = np.triu(np.ones((t, t), dtype=bool), 1)
    for l in range(n_layer):
        p = f"h.{l}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        note([f"blk.{l}.attn_qkv"], h)
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (qkv[:, i * e:(i + 1) * e].reshape(t, n_head, d).transpose(1, 0, 2) for i in range(3))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        s = np.where(mask, -np.inf, s)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(t, e)
        note([f"blk.{l}.attn_output"], a)
        x = x + a @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        note([f"blk.{l}.ffn_up"], h)
        m = gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        note([f"blk.{l}.ffn_down"], m)
        x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"])
    if "lm_head.weight" in w:  # a tied head is an embedding table too: never decomposed
        note(["output"], x)
    return x @ w.get("lm_head.weight", w["wte.weight"]).T


TOKENIZER_CASES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces,  double  spaces and trailing   ",
    "Numbers 1234567890 and 3.14159; code: def f(x):\n\treturn x**2",
    "Unicode: café, naïve, 中文, 🦀🔥, Ünïcödé",
    "don't won't it's I'm you're we've they'll she'd",
    "text<|endoftext|>after the end token",
    "",
]


class Gpt2Bpe:
    """GPT-2's byte-level BPE: bytes mapped to printable characters, GPT-2's split pattern, merges by rank."""
    PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    SPECIAL = "<|endoftext|>"

    def __init__(self, bpe_dir):
        self.ids = json.load(open(os.path.join(bpe_dir, "encoder.json"), encoding="utf-8"))
        lines = open(os.path.join(bpe_dir, "vocab.bpe"), encoding="utf-8").read().split("\n")
        self.ranks = {tuple(l.split(" ")): r for r, l in enumerate(x for x in lines[1:] if x)}
        printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
        extra = [b for b in range(256) if b not in printable]
        self.byte_map = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(extra)}

    def word(self, w):
        parts = [self.byte_map[b] for b in w.encode("utf-8")]
        while len(parts) > 1:
            rank, i = min((self.ranks.get(p, 1 << 60), i) for i, p in enumerate(zip(parts, parts[1:])))
            if rank == 1 << 60:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.ids[p] for p in parts]

    def encode(self, text):
        out = []
        for i, part in enumerate(text.split(self.SPECIAL)):
            if i:
                out.append(self.ids[self.SPECIAL])
            for w in self.PATTERN.findall(part):
                out += self.word(w)
        return out


# Hugging Face name -> llama.cpp GGUF name, and whether the tensor is a Conv1D weight ([in, out])
# that GGUF stores transposed.
def gguf_names(n_layer):
    names = [("wte.weight", "token_embd.weight", False), ("wpe.weight", "position_embd.weight", False),
             ("ln_f.weight", "output_norm.weight", False), ("ln_f.bias", "output_norm.bias", False)]
    for l in range(n_layer):
        for hf, gg in [("ln_1", "attn_norm"), ("ln_2", "ffn_norm")]:
            names += [(f"h.{l}.{hf}.{t}", f"blk.{l}.{gg}.{t}", False) for t in ("weight", "bias")]
        for hf, gg in [("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"),
                       ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down")]:
            names += [(f"h.{l}.{hf}.weight", f"blk.{l}.{gg}.weight", True),
                      (f"h.{l}.{hf}.bias", f"blk.{l}.{gg}.bias", False)]
    return names


def write_gguf(path, w, n_layer, n_head, n_pos, types, bpe_dir):
    """Writes `w` (Hugging Face layout) as a llama.cpp-style GPT-2 GGUF; returns the weights as
    stored (quantized and dequantized back), in the Hugging Face layout, for the reference."""
    import gguf
    from gguf.quants import dequantize, quantize

    e = w["wte.weight"].shape[1]
    wr = gguf.GGUFWriter(path, "gpt2")
    wr.add_context_length(n_pos)
    wr.add_embedding_length(e)
    wr.add_feed_forward_length(4 * e)
    wr.add_block_count(n_layer)
    wr.add_head_count(n_head)
    wr.add_layer_norm_eps(1e-5)
    encoder = json.load(open(os.path.join(bpe_dir, "encoder.json"), encoding="utf-8"))
    tokens = sorted(encoder, key=encoder.get)
    merges = [l for l in open(os.path.join(bpe_dir, "vocab.bpe"), encoding="utf-8").read().split("\n")[1:] if l]
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("gpt-2")
    wr.add_token_list(tokens)
    wr.add_token_types([gguf.TokenType.CONTROL if t == "<|endoftext|>" else gguf.TokenType.NORMAL
                        for t in tokens])
    wr.add_token_merges(merges)
    wr.add_bos_token_id(encoder["<|endoftext|>"])
    wr.add_eos_token_id(encoder["<|endoftext|>"])

    stored = dict(w)
    entries = gguf_names(n_layer)
    if "lm_head.weight" in w:
        entries.append(("lm_head.weight", "output.weight", False))
    for hf, name, conv1d in entries:
        a = w[hf].astype(np.float32)
        a = a.T.copy() if conv1d else a
        family = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
        kind = types.get(family, "F32") if name.endswith("weight") and a.ndim == 2 else "F32"
        if kind == "F32":
            wr.add_tensor(name, a)
            back = a
        elif kind == "F16":
            wr.add_tensor(name, a.astype(np.float16))
            back = a.astype(np.float16).astype(np.float32)
        else:
            qtype = gguf.GGMLQuantizationType[kind]
            q = quantize(a, qtype)
            wr.add_tensor(name, q, raw_dtype=qtype)
            back = dequantize(q, qtype).reshape(a.shape)
        stored[hf] = back.T if conv1d else back
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return stored


def round_half_away(x):
    """Rounds float32 values half away from zero (exactly, through float64)."""
    x = x.astype(np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def int8_groups(g, zero_point):
    """Groups of float32 values (the last axis) through int8 and back: absmax (s = max|w| / 127,
    q in ±127) or zero point (s = (max − min) / 255, z = round(−128 − min / s), q in [−128, 127]);
    w ≈ s (q − z). Arithmetic in float32 as a GPU would do it."""
    f = np.float32
    if zero_point:
        lo, hi = g.min(-1, keepdims=True), g.max(-1, keepdims=True)
        s = (hi - lo) / f(255)
        flat = s == 0  # a constant group: absmax-style scale, no zero point
        s = np.where(flat, np.maximum(np.abs(lo), np.finfo(np.float32).tiny) / f(127), s).astype(f)
        z = np.where(flat, f(0), round_half_away(f(-128) - lo / s)).astype(f)
        qmin = -128
    else:
        amax = np.abs(g).max(-1, keepdims=True)
        s = np.where(amax > 0, amax / f(127), f(1)).astype(f)
        z, qmin = np.zeros_like(s), -127
    q = np.clip(round_half_away((g / s + z).astype(f)), qmin, 127).astype(f)
    return (s * (q - z)).astype(f)


def int8_matrix(w, scheme):
    """A [rows, k] matrix (rows are output channels) quantized by `scheme` and dequantized back."""
    zero_point = "-zp-" in scheme
    granularity = scheme.split("-")[-1]
    w = w.astype(np.float32)
    rows, k = w.shape
    if granularity == "tensor":
        return int8_groups(w.reshape(1, -1), zero_point).reshape(rows, k)
    size = k if granularity == "channel" else min(int(granularity[1:]), k)
    whole = k // size * size
    out = np.empty_like(w)
    out[:, :whole] = int8_groups(w[:, :whole].reshape(rows, -1, size), zero_point).reshape(rows, whole)
    if whole < k:  # a shorter last group
        out[:, whole:] = int8_groups(w[:, whole:], zero_point)
    return out


def int8_checkpoint(w, n_layer, scheme):
    """Every matrix of a Hugging Face-layout checkpoint through int8, as Kiln stores them: by output
    rows ([out, in], so Conv1D weights transposed), the fused QKV as one matrix."""
    q = dict(w)
    q["wte.weight"] = int8_matrix(w["wte.weight"], scheme)
    q["wpe.weight"] = int8_matrix(w["wpe.weight"], scheme)
    if "lm_head.weight" in w:
        q["lm_head.weight"] = int8_matrix(w["lm_head.weight"], scheme)
    for l in range(n_layer):
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            key = f"h.{l}.{name}.weight"
            q[key] = int8_matrix(w[key].T, scheme).T
    return q


def gap_threshold(maxima):
    """A threshold at the middle of the widest gap between sorted column maxima that keeps 2% to
    25% of the columns: a column cannot cross it through f32 rounding on the GPU."""
    v = np.sort(np.concatenate(list(maxima.values())))
    lo, hi = int(len(v) * 0.75), int(len(v) * 0.98)
    i = lo + int(np.argmax(np.diff(v[lo:hi + 1])))
    return float((v[i] + v[i + 1]) / 2), float(v[i + 1] - v[i])


def outlier_checkpoint(w, n_layer, scheme, kept):
    """int8_checkpoint, except that the columns kept[name] of each matrix stay exact: they are
    zeroed before quantizing (as Kiln stores the int8 part) and added back in float32."""
    def split(m, cols):  # m: [out, in]
        m = m.astype(np.float32)
        rest = m.copy()
        rest[:, cols] = 0
        q = int8_matrix(rest, scheme)
        q[:, cols] = m[:, cols]
        return q

    q = int8_checkpoint(w, n_layer, scheme)
    if "lm_head.weight" in w:
        q["lm_head.weight"] = split(w["lm_head.weight"], kept["output"])
    for l in range(n_layer):
        for hf, name in (("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"), ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down")):
            key = f"h.{l}.{hf}.weight"
            q[key] = split(w[key].T, kept[f"blk.{l}.{name}"]).T
    return q


def write_outlier_cases(folder, name, w, n_layer, n_head, n_pos, tok):
    """Calibrates `w` on the calibration text, picks a threshold in a gap of the column maxima and
    writes expected-outliers-SCHEME.json with the threshold, the calibration ids and the kept
    columns of every matrix."""
    ids = tok.encode(open(CALIBRATION_TEXT, encoding="utf-8").read())
    ids = ids[len(ids) - min(CALIBRATION_TOKENS, n_pos, len(ids)):]
    maxima = {}
    forward(w, ids, n_layer, n_head, maxima)
    threshold, gap = gap_threshold(maxima)
    kept = {m: np.flatnonzero(v > threshold).tolist() for m, v in maxima.items()}
    total = sum(len(c) for c in kept.values())
    print(f"{name}: outlier threshold {threshold:.4f} (gap {gap:.4f}) keeps {total} of "
          f"{sum(len(v) for v in maxima.values())} columns", flush=True)
    for scheme in OUTLIER_SCHEMES:
        # A generator of its own: the other checkpoints' weights do not move.
        write_expected(folder, f"{name} outliers {scheme}", np.random.default_rng(6),
                       outlier_checkpoint(w, n_layer, scheme, kept), n_layer, n_head,
                       f"expected-outliers-{scheme}.json",
                       {"threshold": threshold, "calibration": ids, "kept": kept})


def write_expected(folder, name, rng, w, n_layer, n_head, file="expected.json", extra=None):
    """expected.json: float64 logits of PROMPT (a sample of indices per position, plus the top 8)
    and the greedy continuation with each step's top-2 gap (and the entries of `extra`)."""
    ids = list(PROMPT)
    logits = forward(w, ids, n_layer, n_head)
    sample = sorted(set(rng.choice(VOCAB, 256, replace=False).tolist()))
    rows = []
    for p in range(len(ids)):
        idx = sorted(set(sample) | set(np.argsort(-logits[p])[:8].tolist()))
        rows.append({"position": p, "indices": idx, "values": [float(logits[p, i]) for i in idx]})
    greedy, gaps = [], []
    for _ in range(N_GREEDY):
        row = forward(w, ids + greedy, n_layer, n_head)[-1]
        order = np.argsort(-row)
        greedy.append(int(order[0]))
        gaps.append(float(row[order[0]] - row[order[1]]))
    with open(os.path.join(folder, file), "w") as fh:
        json.dump({"prompt": ids, "logits": rows, "greedy": greedy, "top2_gaps": gaps} | (extra or {}), fh)
    print(f"{name}: greedy {greedy}, min top-2 gap {min(gaps):.4f}", flush=True)


def main():
    out = sys.argv[1]
    bpe_dir = sys.argv[2] if len(sys.argv) > 2 else None
    if bpe_dir:
        tok = Gpt2Bpe(bpe_dir)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "tokenizer_cases.json"), "w") as fh:
            json.dump([{"text": t, "ids": tok.encode(t)} for t in TOKENIZER_CASES], fh, ensure_ascii=False)
    rng = np.random.default_rng(2019)
    for name, n_layer, e, n_head, n_pos, dtype, prefix, extras in CONFIGS:
        w = random_checkpoint(rng, n_layer, e, n_pos, dtype)
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        stored = {prefix + k: v for k, v in w.items()}
        if extras:
            # Older checkpoints carry the causal-mask buffers and an explicit (tied) LM head.
            for l in range(n_layer):
                stored[f"{prefix}h.{l}.attn.bias"] = np.tril(np.ones((1, 1, n_pos, n_pos), dtype=dtype))
            stored["lm_head.weight"] = w["wte.weight"]
        save_file(stored, os.path.join(folder, "model.safetensors"))
        config = {
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": VOCAB,
            "n_embd": e, "n_layer": n_layer, "n_head": n_head, "n_positions": n_pos, "n_ctx": n_pos,
            "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
            "torch_dtype": "float16" if dtype == np.float16 else "float32",
        }
        with open(os.path.join(folder, "config.json"), "w") as fh:
            json.dump(config, fh, indent=1)
        if bpe_dir:
            shutil.copy(os.path.join(bpe_dir, "encoder.json"), os.path.join(folder, "vocab.json"))
            shutil.copy(os.path.join(bpe_dir, "vocab.bpe"), os.path.join(folder, "merges.txt"))

        write_expected(folder, name, rng, w, n_layer, n_head)
        if name == "tiny-f32":
            for scheme in INT8_SCHEMES:
                write_expected(folder, f"{name} {scheme}", rng, int8_checkpoint(w, n_layer, scheme),
                               n_layer, n_head, f"expected-{scheme}.json")
            if bpe_dir:
                write_outlier_cases(folder, name, w, n_layer, n_head, n_pos, tok)

    if bpe_dir:
        for name, n_layer, e, n_head, n_pos, types in GGUF_CONFIGS:
            w = random_checkpoint(rng, n_layer, e, n_pos, np.float32)
            if "output" in types:
                w["lm_head.weight"] = (rng.standard_normal((VOCAB, e)) * 0.1).astype(np.float32)
            folder = os.path.join(out, name)
            os.makedirs(folder, exist_ok=True)
            stored = write_gguf(os.path.join(folder, "model.gguf"), w, n_layer, n_head, n_pos, types, bpe_dir)
            write_expected(folder, name, rng, stored, n_layer, n_head)
            if name == "gguf-quantized":
                for scheme in GGUF_INT8_SCHEMES:
                    write_expected(folder, f"{name} {scheme}", rng, int8_checkpoint(stored, n_layer, scheme),
                                   n_layer, n_head, f"expected-{scheme}.json")


if __name__ == "__main__":
    main()
