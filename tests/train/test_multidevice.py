"""1 device vs 8 simulated CPU devices: the same steps give the same losses (global BatchNorm)."""

import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))


def test_eight_devices_match_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "multidevice_run.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    one, eight = json.loads(out.stdout.strip().splitlines()[-1])
    assert one["devices"] == 1 and eight["devices"] == 8
    assert eight["batch_sharded_over"] == 8
    # The loss must move (a real training run), and the two runs must agree closely.
    assert one["losses"][-1] != one["losses"][0]
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4, atol=1e-5)
    # BatchNorm running statistics are over the global batch, so they agree as well.
    np.testing.assert_allclose(
        eight["batch_stats_first"], one["batch_stats_first"], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(eight["param_sum"], one["param_sum"], rtol=1e-5)
