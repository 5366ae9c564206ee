"""What the experiment tests share: the repository's place, a command run in a fresh process (a
program's or a `jaxvision` subcommand's), the run's `final:` line, a workdir's metrics.jsonl and
a config file's config.

Imported as `tests.experiments.helpers` (pytest puts the repository root on sys.path)."""

import json
import os
import runpy
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
# The small ResNet-18 on the digits, as `python -m experiments.train` runs it.
RESNET_DIGITS = "--config=experiments/configs/classification/resnet18_digits.py"


def python_env(**variables):
    """This process's environment plus `variables`, with the repository first on PYTHONPATH."""
    env = dict(os.environ, **variables)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def devices(count):
    """Environment variables for a process with `count` simulated CPU devices: this process's
    XLA_FLAGS (the suite's, see tests/conftest.py) plus the device count."""
    flags = os.environ.get("XLA_FLAGS", "")
    return {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={count}".strip()}


def run_module(module, *args, env=None, check=False, timeout=600, **kwargs):
    """`python -m module *args` from the repository root, output captured as text; `env` adds
    variables to the environment; `check` asserts that it exited 0."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=python_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_tool(name, *args, **kwargs):
    """`jaxvision name *args` (as `python -m jaxvision name *args`), as `run_module` runs it."""
    return run_module("jaxvision", name, *args, **kwargs)


def parse_final(stdout):
    """The figures of the `final: {...}` line a run ends its stdout with."""
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("final: "), last
    return json.loads(last[len("final: ") :])


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_timings(records):
    """The records without their throughput figure, which differs between identical runs."""
    return [{k: v for k, v in r.items() if k != "train/img_per_s"} for r in records]


def load_config(name, **overrides):
    """The config of experiments/configs/`name`, with `overrides`."""
    config = runpy.run_path(os.path.join(CONFIGS, name))["get_config"]()
    config.update(overrides)
    return config


# The shapes RetinaNet at 64 px on 64 training images: a few seconds per run once compiled.
# Every box a barely trained model proposes is kept (score_thresh 0), so there are detections
# to map and draw.
TINY_SHAPES = {
    "detection": {"score_thresh": 0.0, "detections_per_img": 20},
    "dataset_options": {"image_size": 64, "num_train": 64, "num_test": 16, "max_objects": 4},
    "image_size": 64,
    "batch_size": 8,
    "total_steps": 4,
    "log_every_steps": 2,
    "checkpoint_every_steps": 2,
}

# The Quickstart digits CNN at 8x8, briefly trained: 60 steps reach ~95% test top-1, trained
# enough that int8 rounding flips few predictions. The session's shared digits run
# (tests/conftest.py: digits_run), which the compression, serving and bundle tests use.
TINY_DIGITS = dict(
    image_size=8, pad=1, total_steps=60, log_every_steps=30, checkpoint_every_steps=0
)


def config_flags(options: dict, prefix: str = "--config.") -> list[str]:
    """Config overrides (such as TINY_SHAPES) as command-line flags: nested dicts become dotted
    names, `--config.detection.score_thresh=0.0`."""
    flags = []
    for key, value in options.items():
        if isinstance(value, dict):
            flags += config_flags(value, f"{prefix}{key}.")
        else:
            flags.append(f"{prefix}{key}={value}")
    return flags


def serve_in_thread(app):
    """Runs `app` on a free local port in a thread until the service is ready; returns (url,
    stop)."""
    import requests
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.1)

    def stop():
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

    return url, stop


def png_base64(image) -> str:
    """A uint8 [H, W, C] image as the base64 PNG a JSON request carries."""
    import base64
    import io

    from PIL import Image

    image = image[:, :, 0] if image.shape[-1] == 1 else image
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def jaxvision_in_process(capsys, *args):
    """`jaxvision *args` run in this process (a fresh process would import everything and
    compile the model again): (exit status, stdout, stderr). The command's absl flags are
    taken out again after, so that the next command can define its own."""
    import pytest
    from absl import flags

    from jaxvision import commands

    before = set(flags.FLAGS)
    try:
        with pytest.raises(SystemExit) as exited:
            commands.main(["jaxvision", *args])
    finally:
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)
    out, err = capsys.readouterr()
    return exited.value.code or 0, out, err
