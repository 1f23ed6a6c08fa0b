"""ONNX Runtime baseline for `bench`: the same model.onnx, tokenizer.json,
corpus and workloads as the native and HTTP runs, timed the same way.

Run with the model tooling's venv (onnxruntime, numpy, tokenizers):

    ~/.cache/edge-inference/models/venv/bin/python benchmarks/ort_bench.py \
        --model-dir ~/.cache/edge-inference/models/all-minilm-l6-v2 \
        --corpus benchmarks/corpus.txt --seconds 10 --concurrency 2

Prints one JSON object on stdout: per workload (`single`, `batch`) the
per-request latencies (ms), the documents embedded and the wall time, so that
`bench` summarises every backend with the same code; `check`, the vectors of
the first sentences, for `bench` to compare with the native core; and `env`.

Concurrency: one thread per worker, each with its own session (ORT releases
the GIL while it runs), as the native run has one model per thread.
"""

import argparse
import itertools
import json
import os
import sys
import threading
import time

# The native core tokenizes on the calling thread; keep tokenizers' own
# thread pool out of the measurement.
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


class Embedder:
    """One ORT session: tokenize, pad to the batch's longest, run, mean-pool,
    normalise -- what the native core does per request."""

    def __init__(self, model_dir: str, max_len: int):
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        # The shipped tokenizer pads to 128; pad per batch instead, as natively.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_len)
        opts = ort.SessionOptions()
        # One thread per session; concurrency comes from one session per worker.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            os.path.join(model_dir, "model.onnx"),
            sess_options=opts,
            providers=["CPUExecutionProvider"],
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def embed(self, texts):
        encodings = self.tokenizer.encode_batch(texts)
        longest = max(len(e.ids) for e in encodings)
        feeds = {
            "input_ids": np.zeros((len(texts), longest), dtype=np.int64),
            "attention_mask": np.zeros((len(texts), longest), dtype=np.int64),
            "token_type_ids": np.zeros((len(texts), longest), dtype=np.int64),
        }
        for row, e in enumerate(encodings):
            n = len(e.ids)
            feeds["input_ids"][row, :n] = e.ids
            feeds["attention_mask"][row, :n] = e.attention_mask
            feeds["token_type_ids"][row, :n] = e.type_ids
        states = self.session.run(
            ["last_hidden_state"], {k: feeds[k] for k in self.input_names}
        )[0]
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        pooled = (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def run_workload(embedders, corpus, batch, seconds, min_requests):
    """Each worker takes the next request number from a shared counter (so
    the workers together walk the corpus in order, wrapping) until `seconds`
    have passed and `min_requests` have started. Returns per-request
    latencies, docs done and wall time."""
    counter = itertools.count()  # next() is atomic under the GIL
    latencies = [[] for _ in embedders]
    start = time.perf_counter()

    def worker(w):
        while True:
            k = next(counter)
            if time.perf_counter() - start >= seconds and k >= min_requests:
                break
            texts = [corpus[(k * batch + j) % len(corpus)] for j in range(batch)]
            t = time.perf_counter()
            embedders[w].embed(texts)
            latencies[w].append((time.perf_counter() - t) * 1000.0)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(len(embedders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    all_ms = [ms for per in latencies for ms in per]
    return {"latencies_ms": all_ms, "docs": len(all_ms) * batch, "wall_s": wall}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-requests", type=int, default=24)
    p.add_argument("--check", type=int, default=4, help="sentences for `check`")
    p.add_argument("--single-only", action="store_true", help="skip the batch workload")
    args = p.parse_args()

    with open(os.path.join(args.model_dir, "model.json")) as f:
        max_len = json.load(f)["max_sequence_length"]
    with open(args.corpus) as f:
        corpus = [line.strip() for line in f if line.strip()]
    embedders = [Embedder(args.model_dir, max_len) for _ in range(args.concurrency)]

    # The first sentences' vectors, for `bench` to compare with the native core.
    results = {"check": embedders[0].embed(corpus[: args.check]).tolist()}
    workloads = [("single", 1)] + ([] if args.single_only else [("batch", args.batch)])
    for name, batch in workloads:
        run_workload(embedders, corpus, batch, args.warmup, len(embedders))
        results[name] = run_workload(
            embedders, corpus, batch, args.seconds, args.min_requests
        )
        print(f"ort {name}: {results[name]['docs']} docs", file=sys.stderr)

    # ORT runs its own MLAS kernels, not OpenBLAS; numpy (which may link
    # OpenBLAS) only pads and pools here. Reported so a run can be checked.
    results["env"] = {
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
