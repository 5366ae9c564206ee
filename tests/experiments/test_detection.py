"""Detection end to end at tiny settings: the shapes program trains, evaluates with COCO metrics
and resumes exactly; `jaxvision evaluate` prints the COCO table and draws boxes in the images'
own pixels; init_from takes a classification backbone or a detector's torchvision-named file;
the COCO recipes build; bad COCO input ends in one line."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from experiments import detection
from jaxvision import weights
from jaxvision.errors import UserError
from jaxvision.evaluation.coco import STAT_NAMES
from jaxvision.models import detection as detectors
from jaxvision.predictor import Predictor
from jaxvision.train.state import ModelState
from tests.experiments.helpers import (
    TINY_SHAPES,
    config_flags,
    devices,
    jaxvision_in_process,
    load_config,
    read_metrics,
    run_module,
    without_timings,
)

TINY = TINY_SHAPES


def _config(name="detection/retinanet_shapes.py", **overrides):
    return load_config(name, **{**TINY, **overrides})


@pytest.fixture(scope="session")
def trained(shapes_detector_run):
    """The session's tiny shapes run (tests/conftest.py, TINY): (workdir, its final metrics)."""
    return shapes_detector_run


@pytest.mark.slow
def test_shapes_run_reports_coco_metrics_and_resumes_exactly(trained, tmp_path):
    workdir, final = trained
    assert final["step"] == 4
    assert {f"eval/{name}" for name in STAT_NAMES} <= set(final)
    assert all(-1.0 <= final[f"eval/{name}"] <= 1.0 for name in STAT_NAMES)
    records = read_metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == [2, 4]
    assert {"train/cls_loss", "train/box_loss", "train/lr", "train/grad_norm"} <= set(train[0])
    assert records[-1]["eval/AP50"] == pytest.approx(final["eval/AP50"], abs=1e-6)
    with open(os.path.join(workdir, "eval", "eval_step4.json")) as f:
        report = json.load(f)
    assert set(report["per_class"]) == {"circle", "rectangle", "triangle", "star", "cross"}
    for name in ("pr_eval.png", "detections_eval.png", "curves.png"):
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 0

    # Lose the last checkpoint, as a crash would: the rerun replays steps 3-4 exactly.
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, "checkpoints", "4"))
    again = detection.train_and_evaluate(_config(), copy)
    assert {k: v for k, v in again.items() if k != "elapsed_s"} == {
        k: v for k, v in final.items() if k != "elapsed_s"
    }
    assert without_timings(read_metrics(copy)) == without_timings(records)


@pytest.mark.slow
def test_fsdp_over_8_devices_trains_as_one_device(trained, tmp_path):
    """The same run sharded (data 2 x fsdp 4, simulated devices): the same losses and AP,
    within float tolerance (another layout reduces in another order)."""
    workdir = str(tmp_path / "fsdp")
    result = run_module(
        "experiments.detection",
        f"--workdir={workdir}",
        *config_flags(TINY),
        "--config.sharding=fsdp",
        '--config.mesh=(("data", 2), ("fsdp", -1))',
        env=devices(8),
        check=True,
    )
    ours = [r for r in read_metrics(workdir) if "train/loss" in r]
    one = [r for r in read_metrics(trained[0]) if "train/loss" in r]
    for key in ("train/loss", "train/cls_loss", "train/box_loss"):
        # At lr 4e-3 another reduction order moves the 4th step's loss by ~1.4e-4 relative.
        np.testing.assert_allclose([r[key] for r in ours], [r[key] for r in one], rtol=1e-3)
    assert "8 devices, mesh {'data': 2, 'fsdp': 4}" in result.stderr
    final = json.loads(result.stdout.strip().splitlines()[-1].removeprefix("final: "))
    assert final["eval/AP50"] == pytest.approx(trained[1]["eval/AP50"], abs=0.01)


@pytest.mark.slow
def test_bfloat16_trains_like_float32(trained, tmp_path):
    """dtype=bfloat16 computes in bf16 (float32 master weights): the same losses to bf16's
    precision, every metric finite."""
    workdir = str(tmp_path / "bf16")
    final = detection.train_and_evaluate(_config(dtype="bfloat16"), workdir)
    ours = [r for r in read_metrics(workdir) if "train/loss" in r]
    one = [r for r in read_metrics(trained[0]) if "train/loss" in r]
    for key in ("train/loss", "train/cls_loss", "train/box_loss"):
        np.testing.assert_allclose([r[key] for r in ours], [r[key] for r in one], rtol=0.05)
    assert all(np.isfinite(v) for k, v in final.items() if k.startswith("eval/"))
    with open(os.path.join(workdir, "model.json")) as f:
        assert json.load(f)["dtype"] == "bfloat16"


def _jaxvision(capsys, *args) -> str:
    """`jaxvision *args` run in this process: its stdout, once it exited 0."""
    code, out, err = jaxvision_in_process(capsys, *args)
    assert code == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_evaluate_prints_the_coco_table_and_draws_boxes_in_image_pixels(trained, tmp_path, capsys):
    workdir, final = trained
    stdout = _jaxvision(capsys, "evaluate", f"--workdir={workdir}")
    rows = dict(line.split()[:2] for line in stdout.splitlines() if line.startswith("eval/"))
    assert float(rows["eval/AP50"]) == pytest.approx(final["eval/AP50"], abs=1e-4)
    assert "class" in stdout and "circle" in stdout

    # A test image at twice its size: the boxes come back in its own pixels.
    predictor = Predictor.from_workdir(workdir)
    test_source = detection.open_dataset(_config()).test
    image = test_source[0]["image"]
    big = np.asarray(Image.fromarray(image).resize((128, 96), Image.BILINEAR))
    inputs, scales = predictor.preprocess([big])
    np.testing.assert_allclose(scales, [[64 / 96, 64 / 128]])
    # Beside the test image itself: a batch of 2, the program `evaluate --images` below runs.
    outputs = predictor.predict([image, big])
    model = {"model": ModelState(predictor.variables, opt_state=None, step=0, rng=None)}
    canvas = jax.device_get(predictor.task.predict(model, inputs["images"], inputs["sizes"]))
    # Two computations (the Predictor's compiled one, this one op by op): equal up to float32
    # rounding.
    np.testing.assert_allclose(
        outputs["boxes"][1], canvas["boxes"][0] / [64 / 128, 64 / 96, 64 / 128, 64 / 96], atol=1e-3
    )

    paths = []
    for name, pixels in (("small.png", image), ("big.png", big)):
        paths.append(str(tmp_path / name))
        Image.fromarray(pixels).save(paths[-1])
    out = tmp_path / "drawn"
    stdout = _jaxvision(
        capsys,
        "evaluate",
        f"--workdir={workdir}",
        "--images",
        *paths,
        f"--out={out}",
        "--score_threshold=0",
    )
    assert f"{paths[1]}: " in stdout and " boxes" in stdout
    lines = [line for line in stdout.splitlines() if line.startswith("  ")]
    x2 = [float(line.split("[")[1].rstrip("]").split(", ")[2]) for line in lines]
    assert lines and max(x2) <= 128.0  # clipped to the larger image, not to the canvas
    assert Image.open(out / "big.png").size == (128, 96)
    assert Image.open(out / "small.png").size == (64, 64)


def _random_variables(abstract, seed):
    """`abstract`'s structure filled by numpy (nothing compiled): values to tell files apart."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: rng.normal(size=a.shape).astype(a.dtype), abstract)


@pytest.mark.slow  # alone, it compiles the run's init
def test_init_from_a_classification_backbone_or_a_detector_file(tmp_path, capsys):
    """The run's fresh state initialised from a file as the loop does for config.init_from
    (jaxvision.train.init_from; the loop's wiring of it: tests/experiments/test_init_from.py).
    The run's state is the session's tiny run's init (the same compiled program)."""
    from jaxvision import models
    from jaxvision.train.init_from import init_model_from

    config = _config()
    run = detection.setup(config)
    name = run.task.trained
    fresh = jax.jit(run.init, out_shardings=run.state_sharding)(run.rng).models[name]

    def init_from(path):
        model = init_model_from(
            path,
            config.model,
            fresh,
            run.state_sharding.models[name],
            new_head=config.init_new_head,
            heads=run.task.head_paths,
        )
        return jax.device_get(model.variables)

    # A ResNet-18 classifier at the detector's body width, saved with torchvision's names.
    width = config.model_kwargs.get("width", detectors.defaults(config.model)["width"])
    classifier = models.build("resnet18", num_classes=10, width=width)
    abstract = jax.eval_shape(classifier.init, jax.random.key(3), np.zeros((1, 32, 32, 3)))
    variables = _random_variables(abstract, seed=3)
    backbone_file = str(tmp_path / "resnet18.safetensors")
    weights.save_safetensors(backbone_file, weights.export_weights("resnet18", variables))
    loaded = init_from(backbone_file)
    err = capsys.readouterr().err
    assert f"initialised {config.model} from {backbone_file} (kept fresh, not in the file:" in err
    np.testing.assert_array_equal(
        loaded["params"]["backbone"]["layer1_0"]["conv1"]["kernel"],
        variables["params"]["layer1_0"]["conv1"]["kernel"],
    )

    # That detector, exported with torchvision's names, initialises another run exactly (its
    # parameters and BatchNorm statistics).
    detector_file = str(tmp_path / "detector.safetensors")
    weights.save_safetensors(detector_file, weights.export_weights(config.model, loaded))
    again = init_from(detector_file)
    assert f"initialised {config.model} from {detector_file}" in capsys.readouterr().err
    jax.tree.map(np.testing.assert_array_equal, again, loaded)


@pytest.mark.slow
def test_ssd_trains_through_the_same_loop(tmp_path):
    final = detection.train_and_evaluate(_config("detection/ssd_shapes.py"), str(tmp_path))
    assert final["step"] == 4 and np.isfinite(final["eval/AP"])


@pytest.mark.slow
def test_fasterrcnn_trains_and_resumes_through_the_same_loop(tmp_path):
    """The two-stage detector in the same loop: 4 steps, its four loss terms, gradients in both
    stages, COCO metrics; losing the last checkpoint, the rerun replays steps 3-4 exactly (its
    RoI and anchor samples are drawn from the step's key)."""
    small = {
        "model_kwargs": {"width": 8, "representation_size": 32},
        "detection": {
            "score_thresh": 0.0,
            "detections_per_img": 20,
            "box_batch_size_per_image": 32,
        },
    }
    config = _config("detection/fasterrcnn_shapes.py", **small)
    workdir = str(tmp_path / "run")
    final = detection.train_and_evaluate(config, workdir)
    assert final["step"] == 4 and np.isfinite(final["eval/AP"])
    train = [r for r in read_metrics(workdir) if "train/loss" in r]
    parts = ("train/rpn_objectness", "train/rpn_box", "train/roi_cls", "train/roi_box")
    logged = {"step", "train/loss", "train/lr", "train/grad_norm", "train/img_per_s"}
    assert set(train[0]) - logged == set(parts)
    # The loss is its four terms' sum; the box head sees RoIs of every class.
    for record in train:
        assert np.isfinite(record["train/loss"]) and record["train/roi_cls"] > 0
        np.testing.assert_allclose(record["train/loss"], sum(record[k] for k in parts), rtol=1e-5)
    # The gradients reach both stages and the FPN: AdamW moves a parameter with a gradient by
    # about the learning rate (~1e-3 here), one without by the decay alone (lr * 1e-4 * |w|).
    # Training updates the BatchNorm statistics. (The run's init program: cached.)
    from jaxvision.checkpoint import load_variables

    run = detection.setup(config)
    fresh = jax.jit(run.init, out_shardings=run.state_sharding)(run.rng)
    fresh = jax.device_get(fresh.models[run.task.trained].variables)
    trained, _ = load_variables(workdir)
    for path in (("rpn_head", "cls_logits"), ("box_predictor", "cls_score"), ("fpn",)):
        before, after = fresh["params"], trained["params"]
        for key in path:
            before, after = before[key], after[key]
        moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before, after)
        assert all(m > 1e-5 for m in jax.tree.leaves(moved)), (path, moved)
    assert set(trained) == {"params", "batch_stats"}
    moved = jax.tree.map(
        lambda a, b: float(np.abs(a - b).max()), fresh["batch_stats"], trained["batch_stats"]
    )
    assert max(jax.tree.leaves(moved)) > 0

    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
    again = detection.train_and_evaluate(config, workdir)
    assert {k: v for k, v in again.items() if k != "elapsed_s"} == {
        k: v for k, v in final.items() if k != "elapsed_s"
    }


@pytest.mark.parametrize(
    "name, model, params",
    [
        ("detection/retinanet_r50_fpn_coco.py", "retinanet_resnet50_fpn", 34_014_999),
        ("detection/ssd300_vgg16_coco.py", "ssd300_vgg16", 35_641_826),
        ("detection/fasterrcnn_r50_fpn_coco.py", "fasterrcnn_resnet50_fpn", 41_755_286),
        ("detection/fcos_r50_fpn_coco.py", "fcos_resnet50_fpn", 32_269_600),
    ],
)
def test_coco_recipes_build_torchvisions_models(name, model, params, tmp_path):
    """The recipes' runs on a COCO-format tree with COCO's 91 ids: torchvision's parameter
    counts, anchors for the recipe's canvas; built abstractly (nothing compiled)."""
    root = _coco_tree(tmp_path)
    config = load_config(name, dataset="coco_json", data_dir=str(root))
    run = detection.setup(config)
    assert config.model == model
    state = run.abstract_state.models["model"]
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params)) == params
    assert run.task.anchors.shape == (sum(run.task.anchors_per_level), 4)


def _coco_tree(root):
    """A COCO-format tree of two images whose categories span COCO's ids 1..90."""
    for split in ("train2017", "val2017"):
        os.makedirs(root / split, exist_ok=True)
        Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(root / split / "a.jpg")
    categories = [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]
    for split in ("train2017", "val2017"):
        os.makedirs(root / "annotations", exist_ok=True)
        data = {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 90, "bbox": [4, 4, 20, 10], "iscrowd": 0}
            ],
            "categories": categories,
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_malformed_coco_json_is_one_line(tmp_path):
    root = _coco_tree(tmp_path)
    (root / "annotations" / "instances_train2017.json").write_text('{"images": [')
    result = run_module(
        "experiments.detection",
        f"--workdir={tmp_path / 'w'}",
        "--config.dataset=coco_json",
        f"--config.data_dir={root}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "instances_train2017.json" in last
    # The shapes recipe's own dataset options do not apply to COCO data: said, not an error.
    assert (
        "dataset coco_json reads only labels: num_train, train_max_objects ignored" in result.stderr
    )


def test_another_familys_options_are_dropped_and_typos_refused(capsys):
    from jaxvision.tasks.detection import family_options

    options = family_options("ssd", box_loss="giou", score_thresh=0.2)
    assert options.score_thresh == 0.2 and not hasattr(options, "box_loss")
    assert "ssd has no option box_loss: ignored" in capsys.readouterr().err
    with pytest.raises(UserError, match="--config.detection.scor_thresh: ssd has no option"):
        family_options("ssd", scor_thresh=0.2)


@pytest.mark.slow
def test_a_detector_bundle_predicts_as_its_workdir(trained, shapes_detector_bundle):
    """The session's bundle of the tiny run (tests/conftest.py: bundle.write, buckets 1-2)."""
    from jaxvision import bundle

    workdir, _ = trained
    predictor = Predictor.from_workdir(workdir, max_batch=2)
    out = shapes_detector_bundle
    metadata = bundle.read_metadata(out)
    assert metadata["buckets"] == [1, 2] and metadata["model"]["task"] == "detection"
    test_source = detection.open_dataset(_config()).test
    images = [test_source[i]["image"] for i in range(3)]
    images[1] = np.asarray(Image.fromarray(images[1]).resize((96, 48)))  # boxes in its pixels
    expected = predictor.predict(images)
    got = bundle.load(out).predict(images)
    assert set(got) == set(expected) and expected["valid"].any()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
