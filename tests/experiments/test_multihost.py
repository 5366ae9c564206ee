"""Multi-host on one machine: 2 processes x 4 simulated CPU devices with jax.distributed and a
local coordinator train, checkpoint and restore like 1 process with 8 devices."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Short and gentle: cross-process (gloo) and in-process all-reduces sum in different orders,
# and early training amplifies such 1e-7 differences over many steps.
ARGS = (
    "--config.total_steps=10",
    "--config.log_every_steps=5",
    "--config.checkpoint_every_steps=5",
    "--config.batch_size=64",
    "--config.learning_rate=0.05",
)


def _env(devices):
    return dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _final(stdout):
    return json.loads(stdout.strip().splitlines()[-1][len("final: ") :])


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _two_processes(workdir):
    address = f"localhost:{_free_port()}"
    command = [sys.executable, "-m", "experiments.resnet_digits", f"--workdir={workdir}", *ARGS]
    processes = [
        subprocess.Popen(
            [
                *command,
                "--num_processes=2",
                f"--process_id={i}",
                f"--coordinator_address={address}",
            ],
            cwd=ROOT,
            env=_env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outputs


def test_two_processes_match_one_process_and_resume(tmp_path):
    single = subprocess.run(
        [sys.executable, "-m", "experiments.resnet_digits", f"--workdir={tmp_path / 'one'}", *ARGS],
        cwd=ROOT,
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    reference = _final(single.stdout)

    workdir = tmp_path / "two"
    (out0, err0), (out1, err1) = _two_processes(workdir)
    # Process 0 reports; process 1 stays quiet (no final line, no progress).
    assert "final:" not in out1 and "step 10/10" not in err1
    multi = _final(out0)
    assert multi["step"] == 10
    for key in ("eval/loss", "eval/top1", "eval/top5"):
        np.testing.assert_allclose(multi[key], reference[key], rtol=1e-3, atol=1e-3)
    records = _metrics(workdir)
    assert [r["step"] for r in records] == [5, 10, 10]  # written once, by process 0
    for mine, theirs in zip(records, _metrics(tmp_path / "one"), strict=True):
        for key in ("train/loss", "train/grad_norm", "eval/loss"):
            if key in mine:
                np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-4)

    # Both processes restore the step-5 checkpoint and reach the same result.
    shutil.rmtree(workdir / "checkpoints" / "10")
    (out0, err0), _ = _two_processes(workdir)
    assert "resumed from" in err0 and "at step 5" in err0
    resumed = _final(out0)
    assert {k: v for k, v in resumed.items() if k != "elapsed_s"} == {
        k: v for k, v in multi.items() if k != "elapsed_s"
    }
