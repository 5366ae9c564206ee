"""Data parallel, FSDP and FSDP x tensor parallel on 8 simulated devices: the same losses and
BatchNorm statistics (over the global batch) as one device, the expected PartitionSpecs for
parameters and their optimizer state, one compile."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.experiments.helpers import devices

pytestmark = pytest.mark.slow  # every test here takes over ~10 s

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, **devices(8))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "sharding_run.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["vit", "resnet"])
@pytest.mark.parametrize("layout", ["replicated", "fsdp", "fsdp+tensor"])
def test_losses_match_one_device_and_compile_once(results, model, layout):
    single, sharded = results[model]["single"], results[model][layout]
    assert single["losses"][-1] != single["losses"][0]  # it trains
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=1e-5)
    for mine, reference in zip(sharded["batch_stats"], single["batch_stats"], strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-6)
    assert sharded["compiles"] == 1  # no retracing across steps


def test_vit_fsdp_x_tensor_specs(results):
    params = results["vit"]["fsdp+tensor"]["params"]
    # Megatron split on the model axis (MLP hidden units, attention heads), FSDP on the largest
    # remaining dimension, norms and small biases replicated.
    assert params["blocks_0/mlp/fc1/kernel"] == "('fsdp', 'model')"
    assert params["blocks_0/mlp/fc2/kernel"] == "('model', 'fsdp')"
    assert params["blocks_0/attn/query/kernel"] == "('fsdp', 'model', None)"
    assert params["blocks_0/attn/out/kernel"] == "('model', None, 'fsdp')"
    assert params["blocks_0/mlp/fc1/bias"] == "('model',)"
    assert params["blocks_0/norm1/scale"] == "(None,)"
    # The optimizer state follows its parameters.
    mu = results["vit"]["fsdp+tensor"]["mu"]
    for name in ("blocks_0/mlp/fc1/kernel", "blocks_1/attn/out/kernel", "blocks_0/norm1/scale"):
        assert mu[name] == params[name]


def test_fsdp_shards_large_parameters_and_saves_memory(results):
    vit = results["vit"]["fsdp"]["params"]
    assert vit["blocks_0/mlp/fc1/kernel"] == "(None, 'fsdp')"  # [32, 64]: the larger dim
    assert results["resnet"]["fsdp"]["params"]["layer4_0/conv2/kernel"] == (
        "(None, None, 'fsdp', None)"
    )
    assert all(spec.count("'") == 0 for spec in results["vit"]["replicated"]["params"].values())
    for model in ("vit", "resnet"):
        full = results[model]["replicated"]["param_bytes_per_device"]
        assert results[model]["fsdp"]["param_bytes_per_device"] < 0.4 * full


@pytest.mark.parametrize("model", ["vit", "resnet"])
def test_saving_a_replicated_state_on_cpu_compiles_nothing(results, model):
    # Orbax's replica-parallel saving sliced every replicated array on every device: one
    # program per device and shape (16 for two arrays on 8 devices, ~190 for a ResNet-18).
    assert results[model]["replicated"]["save_compiles"] == 0
