"""CPU compile choices (jaxvision.cpu_compile): every choice predicts what XLA's defaults
predict, within float32 reordering, through a Predictor and an exported bundle; the start-up
timing picks the fastest only by a clear margin; the service says which it took."""

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from jaxvision import bundle, cpu_compile
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor
from jaxvision.serving.app import create_service
from jaxvision.serving.models import Spec


@pytest.fixture(scope="module")
def predictor():
    # Convolutions, ReLU, pooling and dense layers: what the choices route differently.
    return Predictor.random("simple_cnn", image_size=16, num_classes=10, max_batch=2)


def _images(n, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, (n, 40, 48, 3), np.uint8))


def test_every_choice_predicts_as_the_default(predictor, tmp_path):
    images = _images(3)
    predictor.compile_with(cpu_compile.DEFAULT)
    expected = predictor.predict(images)["probs"]
    assert expected.shape == (3, 10)
    bundled = bundle.write(predictor, str(tmp_path / "b"), platforms=("cpu",), source={})
    assert bundled["buckets"] == [1, 2]
    exported = bundle.load(str(tmp_path / "b"))
    for choice in cpu_compile.CHOICES:
        for model in (predictor, exported):
            model.compile_with(choice)
            assert model.compile_choice == choice
            probs = model.predict(images)["probs"]
            # Measured: within 2e-7 of the default's probabilities; another image's differ by
            # ~1e-2 (random weights near uniform over 10 classes).
            np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(
        UserError, match="unknown CPU compile choice 'fast': use auto or one of xla"
    ):
        predictor.compile_with("fast")


def test_the_start_up_timing_takes_the_fastest_by_a_clear_margin():
    def runner(ms):
        return lambda name: time.sleep(ms[name] / 1e3)

    found = cpu_compile.fastest(runner({"xla": 20, "eigen": 2}), ("xla", "eigen"), rounds=3)
    assert found["chosen"] == "eigen" and found["ms"]["eigen"] < found["ms"]["xla"]
    assert found["cpu"] == cpu_compile.cpu_name() != ""
    # Within MIN_GAIN of the default: the default stays.
    near = {"xla": 20, "eigen": 20 * (1 - cpu_compile.MIN_GAIN / 4)}
    assert cpu_compile.fastest(runner(near), ("xla", "eigen"), rounds=3)["chosen"] == "xla"


def test_the_service_reports_its_choice(predictor, capfd):
    choices = tuple(cpu_compile.CHOICES)
    found = predictor.choose_compile(choices)
    assert found["chosen"] in choices and sorted(found["ms"]) == sorted(choices)
    assert predictor.compile_choice == found["chosen"]
    asked = Predictor.random("simple_cnn", image_size=16, num_classes=10, max_batch=2)
    metadata = {"model": predictor.record, "source": {}}
    specs = [
        Spec(predictor, metadata, name="timed", cpu_compile="auto"),
        Spec(asked, metadata, name="asked", cpu_compile="eigen"),
    ]
    with TestClient(create_service(specs)) as client:
        deadline = time.time() + 120
        while client.get("/readyz").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        timed = client.get("/v1/metadata?model=timed").json()["cpu_compile"]
        answer = client.get("/v1/metadata?model=asked").json()["cpu_compile"]
    assert timed["chosen"] in choices and sorted(timed["ms"]) == sorted(choices)
    assert timed["cpu"] == cpu_compile.cpu_name() and predictor.compile_choice == timed["chosen"]
    assert answer == {"chosen": "eigen", "cpu": cpu_compile.cpu_name()}
    assert asked.compile_choice == "eigen"
    err = capfd.readouterr().err
    assert f"model timed@1 compiles with {timed['chosen']}, the fastest on " in err
    assert "model asked@1 compiles with eigen, as asked, on " in err
