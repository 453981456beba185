#!/usr/bin/env python3
"""Independent reference for Kiln's Llama path on SmolLM2-135M-Instruct (GGUF).

Written from the Llama paper's equations and the GGUF/ggml conventions, not from Kiln's Rust code:
weights are dequantized by the `gguf` package, the forward pass runs in float64 numpy, and the
byte-level BPE tokenizer is a plain Python implementation over the GGUF vocabulary and merges.

Writes model/tests/fixtures/smollm2_reference.json:
  - tokenizer cases: text -> ids
  - prompts: ids, greedy continuation (N_GREEDY tokens), sampled logits of every prompt position,
    and sampled logits after each greedy token is fed back (every decode step)

Regenerate:  python3 -m pip install numpy gguf regex
             python3 model/reference/smollm2_reference.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import hashlib
import json
import os
import sys

import numpy as np
import regex
from gguf import GGUFReader
from gguf.quants import dequantize

N_GREEDY = 32
N_SAMPLED_LOGITS = 256
N_STEP_SAMPLED = 32  # logits kept per decode step (besides its top 16)

PROMPTS = [
    "The capital of France is",
    "The quick brown fox jumped over the",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
]

PERPLEXITY_TEXT = (
    "The sun rose slowly over the quiet hills, and the farmers walked out to their fields. "
    "By noon the air was warm, and the children ran along the river, laughing and shouting."
)

TOKENIZER_CASES = [
    "Hello world",
    "  leading spaces and  double  spaces",
    "Numbers: 1234567890 and 3.14159, 1e-5",
    "Unicode: café, naïve, Ünïcödé, 中文字符, 日本語, 🦀🔥",
    "Code:\ndef f(x):\n    return x ** 2  # square\n\n\tindented\ttabs",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Mixed <|endoftext|> special tokens <|im_end|>inline",
    "don't won't it's I'm you're we've they'll she'd",
    "Whitespace runs:\n\n\n   \t  end   ",
    "",
]


# ---------------------------------------------------------------- GGUF access
class Model:
    def __init__(self, path):
        self.reader = GGUFReader(path)
        f = self.reader.fields
        val = lambda k: f[k].contents()
        self.n_layer = val("llama.block_count")
        self.n_embd = val("llama.embedding_length")
        self.n_head = val("llama.attention.head_count")
        self.n_kv = val("llama.attention.head_count_kv")
        self.head_dim = self.n_embd // self.n_head
        self.base = float(val("llama.rope.freq_base"))
        self.eps = float(val("llama.attention.layer_norm_rms_epsilon"))
        self.tokens = val("tokenizer.ggml.tokens")
        self.token_types = val("tokenizer.ggml.token_type")
        self.merges = val("tokenizer.ggml.merges")
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.cache = {}

    def w(self, name):
        if name not in self.cache:
            t = self.tensors[name]
            # dequantize returns rows of ne0 values: [out, in] for matrices.
            self.cache[name] = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(
                [int(d) for d in reversed(t.shape)] if len(t.shape) > 1 else [int(t.shape[0])])
        return self.cache[name]


# ---------------------------------------------------------------- forward (float64)
def rms_norm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope(x, positions, base, neox=False, factors=None):
    # x: [T, heads, D]; GGUF llama rotates adjacent pairs (2i, 2i+1) (its Q/K rows are permuted
    # from the Hugging Face layout so that this is the same function); Qwen's GGUF rows are not
    # permuted and rotate pairs (i, i + D/2) (`neox`, llama.cpp's NEOX rope type). Llama 3
    # divides pair i's frequency by factors[i] (the rope_freqs tensor).
    d = x.shape[-1]
    freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    if factors is not None:
        freq = freq / factors
    ang = np.asarray(positions, dtype=np.float64)[:, None] * freq[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    first, second = (slice(0, d // 2), slice(d // 2, d)) if neox else (slice(0, d, 2), slice(1, d, 2))
    x0, x1 = x[..., first], x[..., second]
    out = np.empty_like(x)
    out[..., first] = x0 * c - x1 * s
    out[..., second] = x0 * s + x1 * c
    return out


class Runner:
    """Forward pass with a KV cache, so greedy decoding is one row per step."""

    def __init__(self, m):
        self.m = m
        self.k = [np.zeros((0, m.n_kv, m.head_dim)) for _ in range(m.n_layer)]
        self.v = [np.zeros((0, m.n_kv, m.head_dim)) for _ in range(m.n_layer)]

    def forward(self, ids):
        m = self.m
        p0 = self.k[0].shape[0]
        pos = np.arange(p0, p0 + len(ids))
        x = m.w("token_embd.weight")[ids]
        group = m.n_head // m.n_kv
        for l in range(m.n_layer):
            b = f"blk.{l}."
            h = rms_norm(x, m.w(b + "attn_norm.weight"), m.eps)

            def project(t, heads):
                # Qwen2 adds a bias to q, k and v; Qwen3 RMS-normalizes each head of q and k.
                y = h @ m.w(b + t + ".weight").T
                if b + t + ".bias" in m.tensors:
                    y = y + m.w(b + t + ".bias")
                y = y.reshape(len(ids), heads, m.head_dim)
                if b + t + "_norm.weight" in m.tensors:
                    y = rms_norm(y, m.w(b + t + "_norm.weight"), m.eps)
                return y

            q, k, v = project("attn_q", m.n_head), project("attn_k", m.n_kv), project("attn_v", m.n_kv)
            neox = getattr(m, "neox", False)
            factors = m.tensors.get("rope_freqs.weight")
            q, k = rope(q, pos, m.base, neox, factors), rope(k, pos, m.base, neox, factors)
            self.k[l] = np.concatenate([self.k[l], k])
            self.v[l] = np.concatenate([self.v[l], v])
            keys, vals = self.k[l], self.v[l]
            out = np.empty_like(q)
            for hd in range(m.n_head):
                kv = hd // group
                s = q[:, hd, :] @ keys[:, kv, :].T / np.sqrt(m.head_dim)
                causal = np.arange(keys.shape[0])[None, :] > pos[:, None]
                s = np.where(causal, -np.inf, s)
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
                out[:, hd, :] = s @ vals[:, kv, :]
            x = x + out.reshape(len(ids), -1) @ m.w(b + "attn_output.weight").T
            h = rms_norm(x, m.w(b + "ffn_norm.weight"), m.eps)
            g = h @ m.w(b + "ffn_gate.weight").T
            u = h @ m.w(b + "ffn_up.weight").T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ m.w(b + "ffn_down.weight").T
        x = rms_norm(x, m.w("output_norm.weight"), m.eps)
        head = m.w("output.weight") if "output.weight" in m.tensors else m.w("token_embd.weight")
        return x @ head.T


# ---------------------------------------------------------------- tokenizer (byte-level BPE)
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class Tokenizer:
    # SmolLM's pre-tokenizer: every digit alone, then GPT-2's split.
    DIGIT = regex.compile(r"\p{N}")
    GPT2 = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def __init__(self, m):
        self.ids = {t: i for i, t in enumerate(m.tokens)}
        self.ranks = {tuple(mg.split(" ", 1)): r for r, mg in enumerate(m.merges)}
        self.specials = sorted((t for t, ty in zip(m.tokens, m.token_types) if ty in (3, 4)), key=len, reverse=True)
        self.byte_map = bytes_to_unicode()

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 60), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 60:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.ids[p] for p in parts]

    def encode_plain(self, text):
        out = []
        pieces, last = [], 0
        for mt in self.DIGIT.finditer(text):
            pieces += [text[last:mt.start()], mt.group()]
            last = mt.end()
        pieces.append(text[last:])
        for piece in filter(None, pieces):
            for word in self.GPT2.findall(piece):
                out += self.bpe("".join(self.byte_map[b] for b in word.encode("utf-8")))
        return out

    def encode(self, text):
        if not self.specials:
            return self.encode_plain(text)
        pattern = "(" + "|".join(regex.escape(s) for s in self.specials) + ")"
        out = []
        for i, part in enumerate(regex.split(pattern, text)):
            if i % 2 == 1:
                out.append(self.ids[part])
            elif part:
                out += self.encode_plain(part)
        return out


def main():
    path = sys.argv[1]
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(__file__), "..", "tests", "fixtures", "smollm2_reference.json")
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    m = Model(path)
    tok = Tokenizer(m)
    rng = np.random.default_rng(0)
    result = {
        "model_sha256": sha,
        "generator": "model/reference/smollm2_reference.py (numpy float64, gguf dequantize)",
        "tokenizer": [{"text": t, "ids": tok.encode(t)} for t in TOKENIZER_CASES],
        "prompts": [],
    }
    for text in PROMPTS:
        ids = tok.encode(text)
        run = Runner(m)
        logits = run.forward(ids)
        sampled = sorted(set(rng.choice(logits.shape[1], N_SAMPLED_LOGITS, replace=False).tolist()))
        first = []
        for p in range(len(ids)):
            top = np.argsort(-logits[p])[:16].tolist()
            idx = sorted(set(sampled) | set(top))
            first.append({"position": p, "indices": idx, "values": [float(logits[p, i]) for i in idx]})
        greedy, gaps, steps = [], [], []
        row = logits[-1]
        step_sampled = set(rng.choice(logits.shape[1], N_STEP_SAMPLED, replace=False).tolist())
        for _ in range(N_GREEDY):
            order = np.argsort(-row)
            greedy.append(int(order[0]))
            gaps.append(float(row[order[0]] - row[order[1]]))
            row = run.forward([greedy[-1]])[-1]
            # The logits after feeding this greedy token back (a decode step).
            idx = sorted(step_sampled | set(np.argsort(-row)[:16].tolist()))
            steps.append({"indices": idx, "values": [float(row[i]) for i in idx]})
        result["prompts"].append({"text": text, "ids": ids, "greedy": greedy, "top2_gaps": gaps,
                                  "logits": first, "step_logits": steps})
        print(f"{text!r}: {len(ids)} ids, greedy {greedy[:8]}..., min top-2 gap {min(gaps):.4f}", flush=True)
    ids = tok.encode(PERPLEXITY_TEXT)
    logits = Runner(m).forward(ids)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    nll = -np.mean([logp[t - 1, ids[t]] for t in range(1, len(ids))])
    result["perplexity"] = {"text": PERPLEXITY_TEXT, "ids": ids, "nll": float(nll), "perplexity": float(np.exp(nll))}
    print(f"perplexity of the fixed text: {np.exp(nll):.4f} over {len(ids) - 1} tokens")
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print("wrote", out_path)


if __name__ == "__main__":
    main()
