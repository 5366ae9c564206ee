"""Things found by name (jaxvision.registry), and the proof that a new kind of task costs one
file: a task kind and a model defined in this file alone are trained through the shared loop,
evaluated, exported as a bundle and served, with nothing else in jaxvision changed."""

import base64
import io
import json
import os
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import requests
from flax import linen as nn
from PIL import Image

from jaxvision import bundle, data, evaluation, models
from jaxvision.data.dataset import ArraySource, Dataset
from jaxvision.data.sources import DATASETS
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor, eval_transform
from jaxvision.registry import ModelRegistry, Registry
from jaxvision.tasks import TASK_KINDS
from jaxvision.tasks.images import image_model_init, normalize
from jaxvision.tasks.kinds import TaskKind, model_options
from tests.experiments.helpers import ROOT, serve_in_thread

# ---------------------------------------------------------------------------------------------
# The mechanism


def test_a_declared_entry_is_imported_on_first_use(tmp_path, monkeypatch):
    module = "jaxvision_test_lazy_entry"
    (tmp_path / f"{module}.py").write_text("def factory():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    widgets = Registry("widget")
    widgets.declare("answer", f"{module}:factory", colour="blue")
    widgets.declare("itself", module)
    try:
        # Listing, membership and information import nothing.
        assert widgets.names() == ["answer", "itself"] and "answer" in widgets
        assert widgets.info("answer") == {"colour": "blue"} and widgets.info("itself") == {}
        assert module not in sys.modules
        assert widgets["answer"]() == 42
        assert module in sys.modules and widgets["itself"] is sys.modules[module]
    finally:
        sys.modules.pop(module, None)


def test_an_unknown_name_is_one_line_with_the_names_and_the_closest():
    widgets = Registry("widget")
    for name in ("resnet101", "resnet18", "vgg16", "resnet34"):
        widgets.register(name, object())
    with pytest.raises(UserError) as info:
        widgets["resnet43"]
    assert str(info.value) == (
        "unknown widget 'resnet43': choose one of resnet18, resnet34, resnet101, vgg16 "
        "(did you mean 'resnet34'?)"
    )
    with pytest.raises(UserError) as info:
        widgets["mobilenet"]  # nothing close: the list alone
    assert str(info.value).endswith("resnet101, vgg16")
    # The registries in use answer the same way.
    with pytest.raises(UserError) as info:
        models.build("resnet51", num_classes=10)
    assert "\n" not in str(info.value) and str(info.value).endswith("(did you mean 'resnet50'?)")
    with pytest.raises(UserError, match="unknown dataset 'digit'.*did you mean 'digits'"):
        data.open_dataset("digit")


def test_a_name_is_registered_once():
    widgets = Registry("widget")
    widgets.declare("dumps", "json:dumps")
    with pytest.raises(ValueError, match="widget 'dumps' is already registered"):
        widgets.register("dumps", object())
    with pytest.raises(ValueError, match="already registered"):
        widgets.declare("dumps", "json:loads")
    widgets.declare("dumps", "json:dumps")  # the same entry again changes nothing
    assert widgets["dumps"] is json.dumps
    widgets.declare("dumps", "json:dumps")  # also once it is imported
    thing = object()
    widgets.register("thing", thing)
    widgets.register("thing", thing)
    with pytest.raises(ValueError, match="already registered"):
        widgets.register("thing", object())
    assert widgets["dumps"] is json.dumps and widgets["thing"] is thing and len(widgets) == 2


def test_the_decorator_registers_and_returns_what_it_decorates():
    widgets = Registry("widget")

    @widgets.register("double", arity=1)
    def double(x):
        return 2 * x

    assert double(3) == 6 and widgets["double"] is double and widgets.info("double") == {"arity": 1}
    assert list(widgets) == ["double"] and dict(widgets.items()) == {"double": double}


def test_names_sort_numbers_as_numbers():
    widgets = Registry("widget")
    for name in ("vit_b16", "resnet101", "resnet18", "vit_b32", "resnet34", "densenet121"):
        widgets.register(name, name)
    assert widgets.names() == [
        "densenet121", "resnet18", "resnet34", "resnet101", "vit_b16", "vit_b32"
    ]  # fmt: skip
    assert models.names().index("resnet34") < models.names().index("resnet101")
    assert "brightness_net" not in models.names()  # this file's model is registered per test


class _Net(nn.Module):
    num_classes: int
    width: int = 8
    depth: int = 2
    dtype: Any = jnp.float32


def test_model_registry_options_defaults_and_fixed_fields():
    import functools

    nets = ModelRegistry("net")
    nets.register("net", _Net)
    nets.register("net_deep", functools.partial(_Net, depth=5))
    nets.register("net_small", _Net, defaults={"width": 2})
    assert nets.options("net") == ["depth", "width"] and nets.options("net_deep") == ["width"]
    assert nets.module_class("net_deep") is _Net and nets.defaults("net_small") == {"width": 2}
    assert nets.create("net_small", num_classes=3).width == 2
    assert nets.create("net_small", num_classes=3, width=4).width == 4
    assert nets.create("net_deep", num_classes=3).depth == 5
    with pytest.raises(UserError) as info:
        nets.create("net_deep", num_classes=3, depth=1)  # fixed by the entry
    assert str(info.value) == "net 'net_deep' has no option 'depth': choose from width"


def test_a_dataset_registered_here_opens_by_name():
    from jaxvision.data.dataset import Dataset
    from jaxvision.data.sources import DATASETS

    def open_ramp(request):
        images = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8, 1)
        source = ArraySource(images, np.array([0, 1, 0, 1]))
        scale = request.options.get("scale", 1)
        return Dataset(source, source, 2, ("a", "b"), (0.0,), (float(scale),), 8)

    DATASETS.register("test_ramp", open_ramp, takes_options=True)
    try:
        opened = data.open_dataset("test_ramp", options={"scale": 3})
        assert opened.num_classes == 2 and opened.std == (3.0,) and len(opened.train) == 4
        having = (
            "'captions', 'coco', 'coco_json', 'shapes', 'shapes_captions', "
            "'shapes_classification', 'test_ramp'"
        )
        with pytest.raises(UserError, match=rf"drop them \(the datasets with options: {having}\)"):
            data.open_dataset("digits", options={"scale": 3})
    finally:
        DATASETS.unregister("test_ramp")
    assert "test_ramp" not in DATASETS
    with pytest.raises(UserError, match="unknown dataset 'test_ramp'"):
        DATASETS.unregister("test_ramp")


def test_generators_are_found_by_family():
    from jaxvision.models import generators
    from jaxvision.models.dcgan import Discriminator, Generator

    generator = generators.build("dcgan", image_size=16, channels=1, latent_dim=4, width=4)
    assert isinstance(generator, Generator) and (generator.latent_dim, generator.width) == (4, 4)
    assert isinstance(generators.discriminator("dcgan", image_size=16), Discriminator)
    with pytest.raises(UserError, match="generator 'dcgan' has no option 'latent'"):
        generators.build("dcgan", latent=4)
    with pytest.raises(UserError, match="unknown generator 'dcgna'.*did you mean 'dcgan'"):
        generators.build("dcgna")


# ---------------------------------------------------------------------------------------------
# A new task kind in this file alone: each image's mean brightness (0..1), regressed.


class BrightnessNet(nn.Module):
    """images [B, S, S, C] normalised -> [B, num_classes] float32 (num_classes: outputs)."""

    num_classes: int = 1
    width: int = 8
    dtype: Any = jnp.float32
    classifier = "head"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(self.width, (3, 3), dtype=self.dtype)(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


class MeanSquaredError:
    """The evaluator: adds the eval step's sums, answers {"<prefix>/mse"}."""

    def __init__(self, class_names):
        self.sums = None

    def add(self, outputs: dict, batch: dict | None = None) -> None:
        self.sums = outputs if self.sums is None else jax.tree.map(jnp.add, self.sums, outputs)

    def result(self, prefix: str, *, workdir=None, step: int = 0) -> dict:
        sums = jax.device_get(self.sums)
        return {f"{prefix}/mse": float(sums["squared_error"]) / max(float(sums["count"]), 1.0)}

    def table(self, metrics: dict) -> str:
        return "\n".join(f"{name} {value!r}" for name, value in metrics.items())


class Brightness:
    """The task: batches {"image": [B, S, S, C] uint8} (+ "mask" in evaluation)."""

    kind = "brightness"

    def __init__(self, model: nn.Module, *, mean, std, name: str = "model"):
        self.model, self.mean, self.std, self.trained = model, mean, std, name
        self.head_paths = [("params", "head")]

    def init_variables(self, batch: dict):
        return image_model_init(self.model, batch["image"])

    @staticmethod
    def target(images):
        return jnp.mean(images.astype(jnp.float32), axis=(1, 2, 3)) / 255.0

    def prepare(self, batch: dict, rng, models: dict):
        images = normalize(batch["image"], self.mean, self.std)
        return {"image": images, "target": self.target(batch["image"])}, rng

    def loss(self, params, mutable: dict, inputs: dict, rng, models: dict):
        guess = self.model.apply({"params": params, **mutable}, inputs["image"])[:, 0]
        loss = jnp.mean((guess - inputs["target"]) ** 2)
        return loss, ({"mse": loss}, {})

    def predict(self, models: dict, images) -> dict:
        """images: [B, S, S, C] uint8 -> {"brightness": [B] float32}."""
        x = normalize(images, self.mean, self.std)
        return {"brightness": self.model.apply(models[self.trained].variables, x)[:, 0]}

    def eval_outputs(self, models: dict, batch: dict) -> dict:
        error = self.predict(models, batch["image"])["brightness"] - self.target(batch["image"])
        mask = batch["mask"].astype(jnp.float32)
        return {"count": mask.sum(), "squared_error": jnp.sum(mask * error**2)}

    def evaluator(self, class_names) -> MeanSquaredError:
        return MeanSquaredError(class_names)


class BrightnessKind(TaskKind):
    """Inference takes TaskKind's defaults: resize and centre crop, rows as the answers."""

    def build(self, record: dict) -> Brightness:
        model = models.build(record["model"], **model_options(record))
        return Brightness(model, mean=record["mean"], std=record["std"])


SIZE, STEPS = 8, 60


def _images(count: int, seed: int) -> np.ndarray:
    """uint8 [count, 8, 8, 1]: each image a random brightness plus noise."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0, 255, (count, 1, 1, 1))
    noise = rng.normal(0, 20, (count, SIZE, SIZE, 1))
    return np.clip(np.rint(level + noise), 0, 255).astype(np.uint8)


def open_brightness(request) -> Dataset:
    """512 training and 64 test images (labels unused)."""
    train, test = _images(512, seed=0), _images(64, seed=1)
    return Dataset(
        train=ArraySource(train, np.zeros(len(train), np.int64)),
        test=ArraySource(test, np.zeros(len(test), np.int64)),
        num_classes=1,
        class_names=("brightness",),
        mean=(127.5,),
        std=(127.5,),
        image_size=SIZE,
    )


def register_brightness() -> list:
    """Registers this file's model, task kind and dataset; returns [(registry, name)] added.
    (A research fork would register them on import; the test removes them afterwards so other
    tests see the registries as jaxvision ships them.)"""
    models.MODELS.register("brightness_net", BrightnessNet)
    TASK_KINDS.register("brightness", BrightnessKind)
    DATASETS.register("brightness", open_brightness)
    return [(models.MODELS, "brightness_net"), (TASK_KINDS, "brightness"), (DATASETS, "brightness")]


@pytest.fixture
def brightness():
    added = register_brightness()
    yield
    for registry, name in added:
        registry.unregister(name)


RECORD = {
    "task": "brightness",
    "model": "brightness_net",
    "model_kwargs": {"width": 8},
    "model_key": "model",
    "dtype": "float32",
    "num_classes": 1,
    "class_names": ["brightness"],
    "image_size": SIZE,
    "crop_ratio": 1.0,
    "channels": 1,
    "mean": [127.5],
    "std": [127.5],
}


def _setup(config):
    """The Run of the brightness task: what an experiment program's setup builds."""
    from jaxvision.train import build, steps
    from jaxvision.train.setup import NamedModel, make_run

    task = BrightnessKind().build(RECORD)
    tx = optax.adam(config.learning_rate)
    example = {"image": np.zeros((1, SIZE, SIZE, 1), np.uint8)}
    dataset = data.open_dataset(config.dataset)
    return make_run(
        task,
        {task.trained: NamedModel(task.init_variables(example), tx)},
        mesh=build.mesh(config),
        sharding="replicated",
        seed=config.seed,
        train_step=steps.make_train_step(task, tx),
        train_source=dataset.train,
        train_transform=data.TrainTransform(SIZE, "none", False),
        eval_transform=eval_transform(RECORD),
        evals=[evaluation.Eval("eval", dataset.test, 0)],
        class_names=RECORD["class_names"],
        total_steps=STEPS,
        predictor=RECORD,
    )


def _config():
    from experiments.configs.common import base_config

    config = base_config()
    config.dataset = "brightness"
    config.model = "brightness_net"
    config.image_size = SIZE
    config.batch_size = 32
    config.total_steps = STEPS
    config.learning_rate = 0.03
    config.log_every_steps = 20
    config.checkpoint_every_steps = STEPS
    return config


def _command(*args: str) -> str:
    """`jaxvision *args` in a new process that first imports this file (the task kind, model
    and dataset it registers); its stdout."""
    argv = ["jaxvision", *args]
    code = (
        "import tests.test_registry as plugin; plugin.register_brightness(); "
        f"from jaxvision.commands import main; main({argv!r})"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _png(image: np.ndarray) -> str:
    out = io.BytesIO()
    Image.fromarray(image[:, :, 0]).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.slow
def test_a_task_kind_defined_here_trains_evaluates_exports_and_serves(tmp_path, brightness):
    from jaxvision.serving.app import create_app
    from jaxvision.train import loop

    # Trained through the shared loop: the task kind's evaluation is the loop's evaluation.
    workdir = str(tmp_path / "run")
    final = loop.train_and_evaluate(_config(), workdir, _setup)
    images = _images(64, seed=1)
    targets = images.astype(np.float64).mean(axis=(1, 2, 3)) / 255.0
    assert final["eval/mse"] < 0.1 * targets.var()  # far better than guessing the mean

    # Evaluated from the workdir alone: model.json names the kind, the registry builds it.
    predictor = Predictor.from_workdir(workdir)
    assert predictor.kind == "brightness" and predictor.step == STEPS
    assert predictor.explainer() is None
    found = predictor.predict(list(images))["brightness"]
    assert found.shape == (64,) and found.dtype == np.float32
    np.testing.assert_allclose(np.mean((found - targets) ** 2), final["eval/mse"], rtol=1e-4)

    # `jaxvision evaluate` and `jaxvision export`, in a process that loads this file's
    # definitions as a plugin: the same metric, and a bundle.
    evaluated = _command("evaluate", f"--workdir={workdir}")
    assert f"eval/mse {final['eval/mse']!r}" in evaluated.splitlines(), evaluated
    out = str(tmp_path / "bundle")
    _command("export", f"--workdir={workdir}", f"--out={out}", "--platforms=cpu", "--max_batch=8")
    exported = bundle.load(out)
    metadata = exported.metadata
    assert metadata["model"]["task"] == "brightness" and metadata["explain"] is None
    assert metadata["buckets"] == [1, 2, 4, 8]
    # The bundle predicts the Predictor's numbers without the model code's help.
    np.testing.assert_array_equal(exported.predict(list(images[:5]))["brightness"], found[:5])

    # Served: the kind's answers, one per image; no explanations for this kind.
    url, stop = serve_in_thread(create_app(exported, metadata))
    try:
        body = {"images": [_png(image) for image in images[:3]]}
        answer = requests.post(f"{url}/v1/predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        served = [row["brightness"] for row in answer.json()["predictions"]]
        np.testing.assert_allclose(served, found[:3], rtol=1e-6)
        explained = requests.post(f"{url}/v1/explain", json=body, timeout=60)
        assert explained.status_code == 404
        assert explained.json() == {"error": "this brightness model has no explanations"}
    finally:
        stop()


def test_a_record_of_an_unknown_task_kind_says_which_exist(brightness):
    with pytest.raises(UserError) as info:
        Predictor({**RECORD, "task": "brightnes"}, {})
    message = str(info.value)
    assert message.startswith("task 'brightnes' has no predictor: use one of brightness, ")
    assert "classification, detection" in message and "did you mean 'brightness'" in message


def test_inference_code_imports_nothing_from_training():
    import ast
    import pathlib

    import jaxvision

    root = pathlib.Path(jaxvision.__file__).parent
    inference = [root / "predictor.py", root / "bundle.py", root / "tasks" / "kinds.py"]
    inference += [*(root / "serving").glob("*.py"), *(root / "explain").glob("*.py")]
    for path in inference:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith("jaxvision.train") for n in names), (path, names)
