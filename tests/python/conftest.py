"""Spawns the real `inference-host` once per test session.

Paths follow `cargo xtask test`: `INFERENCE_HOST_BIN`, `INFERENCE_COMPONENTS`
and `INFERENCE_MODEL_CACHE`, else the defaults under the repository root.
"""

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else default


# Users of the secured server: name -> (password, roles).
SECURE_USERS = {
    "admin": ("admin-Py-Pa55-81c2", ["superuser"]),
    "bob": ("bob-Py-Pa55-4d7e", ["inference_user"]),
}


@contextlib.contextmanager
def _host(prefix, args, users=None, log_level="warn"):
    """Runs `inference-host` with `args` on a fresh data directory, after
    adding `users` with `inference-host users add` (passwords on standard
    input). Yields (url, path of its captured log)."""
    host_bin = _path("INFERENCE_HOST_BIN", REPO / "target/release/inference-host")
    components = _path("INFERENCE_COMPONENTS", REPO / "target/components")
    models = _path(
        "INFERENCE_MODEL_CACHE", Path.home() / ".cache/edge-inference/models"
    )
    if not host_bin.exists():
        pytest.fail(f"{host_bin} does not exist: run `cargo xtask build`")

    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        # Compiling the components takes about a minute; share the compiled
        # cache with the Rust end-to-end tests (<target>/release/test-compiled).
        shared = host_bin.parent / "test-compiled"
        shared.mkdir(parents=True, exist_ok=True)
        (Path(data_dir) / "compiled").symlink_to(shared)
        for name, (password, roles) in (users or {}).items():
            add = [str(host_bin), "--data-dir", data_dir, "users", "add", name]
            for role in roles:
                add += ["--role", role]
            subprocess.run(add, input=password + "\n", text=True, check=True)
        log_path = Path(data_dir) / "server.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [
                    str(host_bin),
                    *args,
                    "--listen", "127.0.0.1:0",
                    "--log-level", log_level,
                    "--data-dir", data_dir,
                    "--models", str(models),
                    "--components", str(components),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            try:
                # The first stdout line names the address; it comes once the
                # server accepts connections (or never, if startup fails).
                line = proc.stdout.readline().strip()
                if not line.startswith("listening on "):
                    pytest.fail(f"the server did not start (first line: {line!r})")
                yield line.removeprefix("listening on "), log_path
            finally:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def server_url():
    with _host("py-client-", []) as (url, _):
        yield url


@pytest.fixture(scope="session")
def secure_server():
    """A second server with `--security` on and the users above. Yields
    (url, path of its captured log)."""
    with _host("py-secure-", ["--security"], SECURE_USERS, "debug") as server:
        yield server
