"""Spawns the real `inference-host` once per test session.

Paths follow `cargo xtask test`: `INFERENCE_HOST_BIN`, `INFERENCE_COMPONENTS`
and `INFERENCE_MODEL_CACHE`, else the defaults under the repository root.
"""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else default


@pytest.fixture(scope="session")
def server_url():
    host_bin = _path("INFERENCE_HOST_BIN", REPO / "target/release/inference-host")
    components = _path("INFERENCE_COMPONENTS", REPO / "target/components")
    models = _path(
        "INFERENCE_MODEL_CACHE", Path.home() / ".cache/edge-inference/models"
    )
    if not host_bin.exists():
        pytest.fail(f"{host_bin} does not exist: run `cargo xtask build`")

    with tempfile.TemporaryDirectory(prefix="py-client-") as data_dir:
        # Compiling the components takes about a minute; share the compiled
        # cache with the Rust end-to-end tests (<target>/release/test-compiled).
        shared = host_bin.parent / "test-compiled"
        shared.mkdir(parents=True, exist_ok=True)
        (Path(data_dir) / "compiled").symlink_to(shared)

        proc = subprocess.Popen(
            [
                str(host_bin),
                "--listen", "127.0.0.1:0",
                "--log-level", "warn",
                "--data-dir", data_dir,
                "--models", str(models),
                "--components", str(components),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            # The first stdout line names the address; it comes once the
            # server accepts connections (or never, if startup fails).
            line = proc.stdout.readline().strip()
            if not line.startswith("listening on "):
                pytest.fail(f"the server did not start (first line: {line!r})")
            yield line.removeprefix("listening on ")
        finally:
            proc.kill()
            proc.wait()


# Users of the secured server: name -> (password, roles).
SECURE_USERS = {
    "admin": ("admin-Py-Pa55-81c2", ["superuser"]),
    "bob": ("bob-Py-Pa55-4d7e", ["inference_user"]),
}


@pytest.fixture(scope="session")
def secure_server():
    """A second server with `--security` on, its users made with
    `inference-host users add` (passwords on standard input). Yields
    (url, path of its captured log)."""
    host_bin = _path("INFERENCE_HOST_BIN", REPO / "target/release/inference-host")
    components = _path("INFERENCE_COMPONENTS", REPO / "target/components")
    models = _path(
        "INFERENCE_MODEL_CACHE", Path.home() / ".cache/edge-inference/models"
    )
    if not host_bin.exists():
        pytest.fail(f"{host_bin} does not exist: run `cargo xtask build`")
    with tempfile.TemporaryDirectory(prefix="py-secure-") as data_dir:
        shared = host_bin.parent / "test-compiled"
        shared.mkdir(parents=True, exist_ok=True)
        (Path(data_dir) / "compiled").symlink_to(shared)
        for name, (password, roles) in SECURE_USERS.items():
            args = [str(host_bin), "--data-dir", data_dir, "users", "add", name]
            for role in roles:
                args += ["--role", role]
            subprocess.run(args, input=password + "\n", text=True, check=True)
        log_path = Path(data_dir) / "server.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [
                    str(host_bin),
                    "--security",
                    "--listen", "127.0.0.1:0",
                    "--log-level", "debug",
                    "--data-dir", data_dir,
                    "--models", str(models),
                    "--components", str(components),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            try:
                line = proc.stdout.readline().strip()
                if not line.startswith("listening on "):
                    pytest.fail(f"the server did not start (first line: {line!r})")
                yield line.removeprefix("listening on "), log_path
            finally:
                proc.kill()
                proc.wait()
