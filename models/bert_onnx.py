"""BERT (HF layout) safetensors -> fp32 ONNX graph that tract-onnx can run.

One builder serves every head:
  encoder        -> last_hidden_state [batch, sequence, hidden]  (sentence embeddings)
  mlm            -> logits [batch, sequence, vocab]               (SPLADE)
  classification -> logits [batch, num_labels]                    (cross-encoders)

The graph sticks to plain opset-17 ops and declares no graph.value_info: tract
fails to unify its own symbols with those of intermediate shape annotations.
"""

import dataclasses
import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# Opset 17 became standard at IR version 8; older readers reject newer IR versions.
IR_VERSION = 8
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
HEADS = ("encoder", "mlm", "classification")
# Added to the attention scores of padding keys; exp() of it is exactly 0 in float32.
MASK_NEGATIVE = -10000.0


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float

    @property
    def head_dim(self):
        return self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class BlockQuantized:
    """A word embedding table kept quantised in the graph: entry [r, c] is
    values[r, c] * scales[r, c // block], block = cols / scales.shape[1]. The
    graph gathers rows of both and multiplies in fp32 (one rounding, as a
    dequantisation to fp32 before export would do)."""
    values: np.ndarray  # int8 [rows, cols]
    scales: np.ndarray  # float32 [rows, cols / block]

    @property
    def shape(self):
        return self.values.shape


def normalize_names(tensors):
    """Maps both HF spellings (`bert.` prefix, TF-era LayerNorm gamma/beta) to one."""
    out = {}
    for name, value in tensors.items():
        name = name.removeprefix("bert.")
        if "LayerNorm" in name:
            name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
        out[name] = value
    return out


def make_config(weights, hf_config):
    """Sizes come from the tensors; config.json only adds what they cannot tell
    (heads, eps, activation) and must agree with them."""
    hidden = weights["embeddings.word_embeddings.weight"].shape[1]
    layers = 0
    while f"encoder.layer.{layers}.attention.self.query.weight" in weights:
        layers += 1
    cfg = BertConfig(
        vocab_size=weights["embeddings.word_embeddings.weight"].shape[0],
        hidden_size=hidden,
        num_layers=layers,
        num_heads=int(hf_config["num_attention_heads"]),
        intermediate_size=weights["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_positions=weights["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=weights["embeddings.token_type_embeddings.weight"].shape[0],
        layer_norm_eps=float(hf_config.get("layer_norm_eps", 1e-12)),
    )
    declared = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab_size,
    }
    for key, value in declared.items():
        if key in hf_config and hf_config[key] != value:
            raise ValueError(f"config.json says {key}={hf_config[key]}, the tensors say {value}")
    if hidden % cfg.num_heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of {cfg.num_heads} heads")
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"hidden_act {act!r} is not supported (only the erf GELU)")
    return cfg


class _Graph:
    """Collects nodes and initializers; remembers which weights were used."""

    def __init__(self, weights):
        self.weights = weights
        self.used = set()
        self.nodes = []
        self.initializers = {}

    def weight(self, name):
        self.used.add(name)
        return self.const(name, self.weights[name])

    def const(self, name, value):
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.array(value, order="C"), name)
        return name

    def op(self, op_type, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def linear(self, x, prefix, name, scale=1.0):
        """x @ W.T + b; W is transposed (and scaled) here so the graph needs no Transpose."""
        self.used.update((f"{prefix}.weight", f"{prefix}.bias"))
        suffix = "_scaled" if scale != 1.0 else ""
        w = self.const(f"{prefix}.weight_t{suffix}", (self.weights[f"{prefix}.weight"].T * scale).astype(np.float32))
        b = self.const(f"{prefix}.bias{suffix}", (self.weights[f"{prefix}.bias"] * scale).astype(np.float32))
        return self.op("Add", [self.op("MatMul", [x, w], f"{name}/matmul"), b], name)

    def layer_norm(self, x, prefix, eps, name):
        return self.op("LayerNormalization", [x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")],
                       name, axis=-1, epsilon=eps)

    def gelu(self, x, name):
        # 0.5 * x * (1 + erf(x / sqrt(2))), BERT's exact GELU
        inv_sqrt2 = self.const("const/inv_sqrt2", np.array(1 / np.sqrt(2), np.float32))
        one = self.const("const/one", np.array(1.0, np.float32))
        half = self.const("const/half", np.array(0.5, np.float32))
        erf = self.op("Erf", [self.op("Mul", [x, inv_sqrt2], f"{name}/scaled")], f"{name}/erf")
        gate = self.op("Mul", [self.op("Add", [erf, one], f"{name}/erf1"), half], f"{name}/gate")
        return self.op("Mul", [x, gate], name)


def _word_embeddings(g):
    name = "embeddings.word_embeddings.weight"
    table = g.weights[name]
    if not isinstance(table, BlockQuantized):
        return g.op("Gather", [g.weight(name), "input_ids"], "emb/words")
    # [batch, sequence, blocks, block] int8 values times [batch, sequence, blocks, 1] scales.
    g.used.add(name)
    cols, blocks = table.shape[1], table.scales.shape[1]
    values = g.op("Gather", [g.const(f"{name}_int8", table.values), "input_ids"], "emb/words_int8")
    values = g.op("Cast", [values], "emb/words_values", to=TensorProto.FLOAT)
    values = g.op("Reshape", [values, g.const("const/word_blocks", np.array([0, 0, blocks, cols // blocks], np.int64))],
                  "emb/words_blocks")
    scales = g.op("Gather", [g.const(f"{name}_scales", table.scales.astype(np.float32)), "input_ids"],
                  "emb/words_scales")
    scales = g.op("Unsqueeze", [scales, g.const("const/axes_3", np.array([3], np.int64))], "emb/words_scales4d")
    words = g.op("Mul", [values, scales], "emb/words_dequantized")
    return g.op("Reshape", [words, g.const("const/word_rows", np.array([0, 0, cols], np.int64))], "emb/words")


def _embeddings(g, cfg):
    shape = g.op("Shape", ["input_ids"], "emb/shape")
    seq_len = g.op("Slice", [shape, g.const("const/i1", np.array([1], np.int64)),
                             g.const("const/i2", np.array([2], np.int64))], "emb/seq_len")
    zero = g.const("const/i0", np.array([0], np.int64))
    # Position ids are 0..sequence-1: the first `sequence` rows of the table.
    positions = g.op("Slice", [g.weight("embeddings.position_embeddings.weight"), zero, seq_len, zero],
                     "emb/positions")
    words = _word_embeddings(g)
    types = g.op("Gather", [g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"], "emb/types")
    x = g.op("Add", [g.op("Add", [words, types], "emb/words_types"), positions], "emb/sum")
    return g.layer_norm(x, "embeddings.LayerNorm", cfg.layer_norm_eps, "emb/out")


def _attention_bias(g):
    """[batch, 1, 1, sequence]: 0 for real tokens, MASK_NEGATIVE for padding keys,
    broadcast over heads and query positions."""
    mask = g.op("Cast", ["attention_mask"], "mask/float", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("const/one", np.array(1.0, np.float32)), mask], "mask/inverted")
    bias = g.op("Mul", [inverted, g.const("const/mask_negative", np.array(MASK_NEGATIVE, np.float32))], "mask/bias")
    return g.op("Unsqueeze", [bias, g.const("const/axes_1_2", np.array([1, 2], np.int64))], "mask/bias4d")


def _layer(g, cfg, x, bias, i, out_name):
    p, n = f"encoder.layer.{i}", f"layer{i}"
    # 0 in a Reshape shape copies that input dim, so batch and sequence stay symbolic.
    split = g.const("const/split_heads", np.array([0, 0, cfg.num_heads, cfg.head_dim], np.int64))
    merge = g.const("const/merge_heads", np.array([0, 0, cfg.hidden_size], np.int64))

    def heads(t, perm, name):
        return g.op("Transpose", [g.op("Reshape", [t, split], f"{name}/split")], f"{name}/heads", perm=perm)

    # The 1/sqrt(head_dim) score scale is folded into the query weights.
    q = g.linear(x, f"{p}.attention.self.query", f"{n}/q", scale=1 / np.sqrt(cfg.head_dim))
    k = g.linear(x, f"{p}.attention.self.key", f"{n}/k")
    v = g.linear(x, f"{p}.attention.self.value", f"{n}/v")
    q, kt, v = heads(q, [0, 2, 1, 3], f"{n}/q"), heads(k, [0, 2, 3, 1], f"{n}/k"), heads(v, [0, 2, 1, 3], f"{n}/v")
    scores = g.op("Add", [g.op("MatMul", [q, kt], f"{n}/scores"), bias], f"{n}/masked_scores")
    probs = g.op("Softmax", [scores], f"{n}/probs", axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v], f"{n}/ctx_heads")], f"{n}/ctx_t", perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, merge], f"{n}/ctx")
    attn = g.linear(ctx, f"{p}.attention.output.dense", f"{n}/attn_out")
    x = g.layer_norm(g.op("Add", [attn, x], f"{n}/attn_res"), f"{p}.attention.output.LayerNorm",
                     cfg.layer_norm_eps, f"{n}/attn_norm")
    h = g.gelu(g.linear(x, f"{p}.intermediate.dense", f"{n}/ffn_in"), f"{n}/ffn_act")
    h = g.linear(h, f"{p}.output.dense", f"{n}/ffn_out")
    return g.layer_norm(g.op("Add", [h, x], f"{n}/ffn_res"), f"{p}.output.LayerNorm", cfg.layer_norm_eps, out_name)


def _mlm_head(g, cfg, x):
    t = g.gelu(g.linear(x, "cls.predictions.transform.dense", "mlm/dense"), "mlm/act")
    t = g.layer_norm(t, "cls.predictions.transform.LayerNorm", cfg.layer_norm_eps, "mlm/norm")
    # Tied decoders reuse the word embedding table; the Transpose of a constant
    # is folded by the runtimes and keeps the file from storing the table twice.
    decoder = "cls.predictions.decoder.weight"
    if decoder not in g.weights:
        decoder = "embeddings.word_embeddings.weight"
    if isinstance(g.weights[decoder], BlockQuantized):
        raise ValueError("the mlm head needs an fp32 decoder; the word embeddings are quantised")
    decoder_t = g.op("Transpose", [g.weight(decoder)], "mlm/decoder_t", perm=[1, 0])
    bias_name = "cls.predictions.bias" if "cls.predictions.bias" in g.weights else "cls.predictions.decoder.bias"
    return g.op("Add", [g.op("MatMul", [t, decoder_t], "mlm/decode"), g.weight(bias_name)], "logits")


def _classification_head(g, x):
    # BertForSequenceClassification: tanh pooler on [CLS], then a linear layer.
    cls = g.op("Gather", [x, g.const("const/i0_scalar", np.array(0, np.int64))], "cls/token", axis=1)
    pooled = g.op("Tanh", [g.linear(cls, "pooler.dense", "cls/pooler_dense")], "cls/pooled")
    return g.linear(pooled, "classifier", "logits")


def build_model(cfg, weights, head):
    """Returns (onnx.ModelProto, names of weights the graph does not use)."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}, expected one of {HEADS}")
    g = _Graph(weights)
    x = _embeddings(g, cfg)
    bias = _attention_bias(g)
    for i in range(cfg.num_layers):
        last = i == cfg.num_layers - 1
        x = _layer(g, cfg, x, bias, i, "last_hidden_state" if last and head == "encoder" else f"layer{i}/out")

    if head == "encoder":
        out = x
        out_shape = ["batch", "sequence", cfg.hidden_size]
    elif head == "mlm":
        out = _mlm_head(g, cfg, x)
        out_shape = ["batch", "sequence", cfg.vocab_size]
    else:
        out = _classification_head(g, x)
        out_shape = ["batch", weights["classifier.weight"].shape[0]]

    graph = helper.make_graph(
        g.nodes,
        "bert_" + head,
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]) for name in INPUTS],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        initializer=list(g.initializers.values()),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edge-inference models/bert_onnx.py")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    unused = sorted(set(weights) - g.used)
    return model, unused
