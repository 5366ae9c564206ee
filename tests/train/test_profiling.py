"""--config.profile_steps=a,b: a jax.profiler trace of those steps under <workdir>/profile."""

import glob
import gzip
import json
import os

import pytest

from experiments import classification
from jaxvision.config_checks import check_training_config
from jaxvision.errors import UserError
from jaxvision.train import loop
from jaxvision.train.profiling import parse_steps
from tests.experiments.helpers import load_config


@pytest.mark.parametrize(
    "value, steps", [("", None), (None, None), ("7", (7, 7)), ("2,5", (2, 5)), (" 3, 3", (3, 3))]
)
def test_step_ranges(value, steps):
    assert parse_steps(value) == steps


@pytest.mark.parametrize("value", ["5,2", "0,3", "a,b", "1,2,3", "2-5"])
def test_bad_step_ranges_are_refused_with_what_to_write(value):
    with pytest.raises(UserError, match="profile_steps=.* e.g. --config.profile_steps=10,20"):
        parse_steps(value)
    with pytest.raises(UserError, match=r"profile_steps=.*must be .*'a,b' with 1 <= a <= b"):
        check_training_config({"profile_steps": value})


@pytest.mark.slow
def test_a_run_writes_a_trace_of_the_chosen_steps(tmp_path):
    config = load_config(
        "classification/simple_cnn_digits.py",
        batch_size=16,
        total_steps=4,
        log_every_steps=4,
        checkpoint_every_steps=0,
        profile_steps="2,3",
    )
    loop.train_and_evaluate(config, str(tmp_path), classification.setup)
    runs = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*"))
    assert len(runs) == 1, runs  # one trace, stopped after step 3
    assert glob.glob(os.path.join(runs[0], "*.xplane.pb"))  # TensorBoard's profile plugin
    with gzip.open(os.path.join(runs[0], "perfetto_trace.json.gz")) as f:
        events = json.load(f)["traceEvents"]
    # Each traced step is one host event "train" with its number; steps 1 and 4 are outside.
    marked = sorted(
        int(e["args"]["step_num"])
        for e in events
        if e.get("name") == "train" and "step_num" in e.get("args", {})
    )
    assert marked == [2, 3]
