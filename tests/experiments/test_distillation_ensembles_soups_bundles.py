"""Several models of one task end to end, at tiny settings: distillation (a frozen teacher
beside the student), ensembles (one vmapped forward per architecture), model soups (a new
workdir that evaluates and trains like any other) and exported bundles."""

import json
import os

import jax
import numpy as np
import pytest
from jax import export

from experiments import distill
from experiments.classification import train_and_evaluate
from jaxvision import bundle
from jaxvision.checkpoint import load_model, load_variables
from jaxvision.errors import UserError
from jaxvision.evaluation.workdirs import group_probs, split_source
from jaxvision.predictor import Predictor
from jaxvision.sharding import make_mesh
from tests.experiments.helpers import (
    TINY_DIGITS,
    jaxvision_in_process,
    load_config,
    run_module,
)


def _jaxvision(capsys, *args) -> str:
    """`jaxvision *args` in this process (tests/experiments/helpers.py): its stdout, once it
    exited 0. The commands' exit status and stderr in a fresh process are checked once, by
    tests/explain/test_cli.py."""
    code, out, err = jaxvision_in_process(capsys, *args)
    assert code == 0, err[-3000:]
    return out


def _table(stdout: str) -> dict:
    """The `name value` rows of a printed metrics table."""
    rows = (line.split() for line in stdout.splitlines())
    return {row[0]: float(row[1]) for row in rows if len(row) == 2 and "/" in row[0]}


# The session's tiny digits runs (tests/conftest.py): 60 steps at 8x8.
TINY = TINY_DIGITS


@pytest.fixture(scope="session")
def members(digits_run, session_cache):
    """Two digits runs of one architecture (seeds 0 and 1, the first the session's shared run),
    each trained once per session: (workdirs, their final lines)."""

    def build(folder):
        return train_and_evaluate(
            load_config("classification/simple_cnn_digits.py", seed=1, **TINY), f"{folder}/run"
        )

    folder, final = session_cache.get("digits_run_seed1", build)
    return [digits_run[0], f"{folder}/run"], [digits_run[1], final]


@pytest.mark.slow
def test_distillation_trains_the_student_and_keeps_the_teacher_frozen(tmp_path, members):
    (teacher, _), _ = members
    config = load_config("distillation/simple_cnn_digits.py", teacher=teacher, **TINY)
    workdir = str(tmp_path / "student")
    final = distill.train_and_evaluate(config, workdir)

    assert final["eval/top1"] > 0.7  # a student that learned from its teacher
    assert final["eval/agreement"] > 0.7
    assert 0 <= final["eval/kl"] < 1.0
    # The teacher in the student's checkpoint is the teacher run's weights, untouched.
    frozen, _ = load_variables(workdir, model="teacher")
    original, _ = load_variables(teacher)
    jax.tree.map(np.testing.assert_array_equal, frozen, original)
    # The student's workdir serves its student like any classifier's.
    predictor = Predictor.from_workdir(workdir)
    assert predictor.record["model_key"] == "student"
    source, _ = split_source(workdir, "test")
    images = [source[i]["image"] for i in range(8)]
    probs = predictor.predict(images)["probs"]
    assert probs.shape == (8, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_teacher_must_know_the_classes(tmp_path):
    result = run_module(
        "experiments.distill",
        f"--workdir={tmp_path / 'w'}",
        "--config.teacher=",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: set --config.teacher")


@pytest.mark.slow
def test_ensemble_vmapped_equals_each_member_and_reports_calibration(members, capsys):
    workdirs, finals = members
    predictors = [Predictor.from_workdir(w) for w in workdirs]
    source, batch_size = split_source(workdirs[0], "test")

    probs, labels = group_probs(predictors, source, batch_size, make_mesh())
    assert probs.shape == (2, len(source), 10)
    for member, predictor in zip(probs, predictors, strict=True):
        alone = predictor.predict([source[i]["image"] for i in range(len(source))])["probs"]
        np.testing.assert_allclose(member, alone, atol=1e-6)

    table = _table(
        _jaxvision(capsys, "evaluate", f"--workdir={workdirs[0]}", f"--workdir={workdirs[1]}")
    )
    for i, final in enumerate(finals):
        assert table[f"member_{i}/top1"] == pytest.approx(final["eval/top1"], abs=1e-4)
    assert 0 <= table["ensemble/ece"] <= 1
    assert table["ensemble/top1"] >= min(f["eval/top1"] for f in finals) - 0.02


@pytest.mark.slow
def test_soup_is_a_workdir_that_evaluates_and_trains(tmp_path, members, capsys):
    workdirs, _ = members
    out = str(tmp_path / "soup")
    stdout = _jaxvision(capsys, "soup", *(f"--workdir={w}" for w in workdirs), f"--out={out}")
    soup_top1 = _table(stdout)["soup/top1"]
    # Its weights are the members' mean.
    soup, _ = load_variables(out)
    a, b = (load_variables(w)[0] for w in workdirs)
    for name in soup["params"]:
        for leaf in soup["params"][name]:
            np.testing.assert_allclose(
                soup["params"][name][leaf],
                (a["params"][name][leaf] + b["params"][name][leaf]) / 2,
                rtol=1e-6,
                atol=1e-7,
            )
    # Rerunning the members' training program on it evaluates the soup: the same top-1.
    rerun = train_and_evaluate(load_config("classification/simple_cnn_digits.py", **TINY), out)
    assert rerun["eval/top1"] == pytest.approx(soup_top1, abs=1e-4)
    assert load_model(out)[1] == TINY["total_steps"]


@pytest.mark.slow
def test_export_writes_a_bundle_that_predicts_as_the_workdir(tmp_path, members, capsys):
    (workdir, _), (final, _) = members
    out = str(tmp_path / "bundle")
    stdout = _jaxvision(capsys, "export", f"--workdir={workdir}", f"--out={out}", "--max_batch=4")
    assert "buckets [1, 2, 4], platforms cpu, cuda" in stdout
    with open(os.path.join(out, "metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["model"]["task"] == "classification"
    assert metadata["model"]["class_names"] == [str(i) for i in range(10)]
    assert metadata["source"]["step"] == final["step"] == TINY["total_steps"]
    assert metadata["source"]["metrics"]["eval/top1"] == pytest.approx(final["eval/top1"])
    assert metadata["versions"]["jax"] == jax.__version__
    with open(os.path.join(out, "forward_4.jaxexport"), "rb") as f:
        assert export.deserialize(bytearray(f.read())).platforms == ("cpu", "cuda")

    # Six images of other sizes: buckets 4 and 2, the same preprocessing, bitwise the same.
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (9 + i, 7 + 2 * i, 1), dtype=np.uint8) for i in range(6)]
    loaded = bundle.load(out)
    expected = Predictor.from_workdir(workdir, max_batch=4).predict(images)["probs"]
    np.testing.assert_array_equal(loaded.predict(images)["probs"], expected)
    assert loaded.class_names == metadata["model"]["class_names"]

    code, _, stderr = jaxvision_in_process(capsys, "export", f"--workdir={workdir}", f"--out={out}")
    assert code == 2 and stderr.strip().splitlines()[-1] == (
        f"error: --out {out} is not empty: give a new directory for the bundle"
    )
    with pytest.raises(UserError, match="metadata.json not found"):
        bundle.load(str(tmp_path))
