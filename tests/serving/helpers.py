"""Helpers of the serving tests: images as request bytes, and a real `jaxvision serve`
process on localhost."""

import io
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from PIL import Image

from tests.experiments.helpers import ROOT, python_env


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(out, "PNG")
    return out.getvalue()


def digits(n: int, seed: int = 0) -> list[np.ndarray]:
    """n random grey images of 8-12 x 8-10 pixels."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (8 + i % 5, 8 + i % 3, 1), dtype=np.uint8) for i in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(bundle_path: str, *flags: str):
    """Starts jaxvision serve on a bundle; (process, url) once /readyz answers 200. Unless
    `flags` say otherwise, with XLA's default CPU compile options (--cpu_compile=xla): the tests
    compare the service's answers with the bundle's own, bitwise."""
    port = _free_port()
    if not any(f.startswith("--cpu_compile") for f in flags):
        flags = (*flags, "--cpu_compile=xla")
    process = subprocess.Popen(
        [sys.executable, "-m", "jaxvision", "serve", f"--bundle={bundle_path}", f"--port={port}"]
        + list(flags),
        cwd=ROOT,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not become ready:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.2)
