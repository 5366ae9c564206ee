"""int8 post-training quantization of a trained classifier or detector with qwix
(jaxvision.compress).

  jaxvision quantize --workdir=DIR --out=DIR_INT8 \\
      [--mode=weights|weights+activations] [--calibration_batches=8] [--ema]

Per-output-channel symmetric int8 weights for every conv and dense layer; with
`weights+activations`, int8 inputs to them too, with static scales calibrated on the first N
batches of the run's training split (evaluation preprocessing). DIR_INT8 is a workdir like any
other: `jaxvision evaluate --workdir=DIR_INT8`, `jaxvision export --workdir=DIR_INT8` (a
bundle of int8 weights + scales) and `jaxvision serve` read it.

Prints and writes DIR_INT8/quantize.json and quantize.txt: top-1 of the float and the int8
model on the test split and their top-1 agreement (a detector: the 12 COCO stats of both, AP /
AP50 in the table, and the share of float detections scoring >= 0.3 that an int8 detection of
the same class matches at IoU >= 0.9), weight bytes, and predict img/s of the compiled
forward on this machine for float32, bfloat16 compute and int8.

  jaxvision quantize --model=resnet50 --image_size=224 --out=DIR [--mode=...]

A zoo model with random weights instead: float32 and int8 bundle sizes (one bucket, CPU) and
predict img/s, no accuracy.
"""

import json
import os

import jax
import numpy as np
from absl import flags

from jaxvision import cli, data
from jaxvision.compress import detection as quantized_detection
from jaxvision.compress import measure
from jaxvision.compress.quantize import MODES, Scheme, calibrate, weight_bytes
from jaxvision.errors import UserError
from jaxvision.evaluation.workdirs import load_config, split_source
from jaxvision.predictor import Predictor, eval_transform
from jaxvision.tasks.images import normalize

FLAGS = flags.FLAGS


def calibration_batches(workdir: str, predictor: Predictor, count: int):
    """The first `count` training batches of the run, normalised as the model's inputs."""
    source, batch_size = split_source(workdir, "train")
    task = predictor.task  # a detector normalises with its model's statistics, not model.json's
    transform = eval_transform(predictor.record)
    batches = data.eval_batches(source, transform, global_batch_size=batch_size)
    for i, batch in enumerate(batches):
        if i == count:
            return
        yield normalize(batch["image"][np.asarray(batch["mask"])], task.mean, task.std)


def quantize(
    workdir: str,
    out: str,
    mode: str,
    calibration: int,
    *,
    step=None,
    ema=True,
    speed_batch: int = 64,
    repeats: int = 5,
    min_score: float = 0.3,
) -> dict:
    """Quantizes `workdir`'s model (a classifier or a detector) into the workdir `out`;
    returns the report (speed_batch 0: no timing; min_score: the float detections whose
    agreement a detector's report measures)."""
    source = Predictor.from_workdir(workdir, step, ema=ema)
    if source.kind not in ("classification", "detection") or source.record.get("quantization"):
        raise UserError(
            f"{workdir} is not a float classifier or detector: quantize a trained float run"
        )
    if calibration < 1:
        raise UserError(f"--calibration_batches={calibration}: give at least 1")
    if os.path.isdir(out) and os.listdir(out):
        raise UserError(f"--out {out} is not empty: give a new directory")
    record = source.record
    shape = (record["image_size"], record["image_size"], record["channels"])
    float_variables = jax.device_get(source.variables)
    scheme = Scheme.of(source.task.model, mode, shape)
    scales = None
    if mode != "weights":
        scales = calibrate(
            scheme, float_variables, calibration_batches(workdir, source, calibration)
        )
    stored = scheme.quantize(float_variables, scales)

    test, batch_size = split_source(workdir, "test")
    quantization = {"mode": mode, "qtype": "int8", "scheme": "per-channel symmetric absmax"}
    if scales is not None:
        quantization["calibration_batches"] = calibration
    int8_record = {**record, "quantization": quantization}
    quantized = Predictor(int8_record, stored, step=source.step)
    if source.kind == "detection":
        scores, metrics = detection_scores(source, quantized, test, batch_size, min_score)
    else:
        predicted, labels = measure.split_predictions(source, test, batch_size)
        predicted_int8, _ = measure.split_predictions(quantized, test, batch_size)
        scores = {
            "test_images": int(len(labels)),
            "top1_float": float(np.mean(predicted == labels)),
            "top1_int8": float(np.mean(predicted_int8 == labels)),
            "top1_agreement": float(np.mean(predicted == predicted_int8)),
        }
        metrics = {"eval/top1": scores["top1_int8"]}
    measure.write_workdir(out, workdir, int8_record, stored, source.step, metrics)

    bf16 = Predictor({**record, "dtype": "bfloat16"}, float_variables)
    speed = {"float32": None, "bfloat16": None, "int8": None}
    if speed_batch:
        compared = {"float32": source, "bfloat16": bf16, "int8": quantized}
        speed = measure.images_per_s(compared, speed_batch, repeats)
    config = load_config(workdir)
    return {
        "workdir": workdir,
        "out": out,
        "model": record["model"],
        "dataset": config.dataset,
        "mode": mode,
        "step": source.step,
        **scores,
        "weight_bytes_float": weight_bytes(float_variables),
        "weight_bytes_int8": weight_bytes(stored),
        "img_per_s": speed,
        "speed_batch": speed_batch,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
    }


def detection_scores(
    source: Predictor, quantized: Predictor, test, batch_size: int, min_score: float = 0.3
):
    """(report entries, the int8 model's metrics.jsonl record) of a float detector `source`
    and its int8 `quantized` on the test split: COCO box stats of both (the evaluator
    jaxvision evaluate runs) and how closely the int8 detections follow the float ones
    scoring >= min_score (jaxvision.compress.detection.agreement)."""
    coco, found = {}, {}
    for name, predictor in (("float", source), ("int8", quantized)):
        coco[name], found[name] = quantized_detection.split_evaluation(predictor, test, batch_size)
    agreement = quantized_detection.agreement(found["float"], found["int8"], min_score=min_score)
    scores = {
        "test_images": len(found["float"]),
        "ap_float": coco["float"]["AP"],
        "ap_int8": coco["int8"]["AP"],
        "ap50_float": coco["float"]["AP50"],
        "ap50_int8": coco["int8"]["AP50"],
        "coco_float": coco["float"],
        "coco_int8": coco["int8"],
        "detection_agreement": agreement,
    }
    return scores, {f"eval/{k}": v for k, v in coco["int8"].items()}


def table(report: dict) -> str:
    """The report as a text table."""
    if "ap_float" in report:
        found = report["detection_agreement"]
        rows = [
            ("COCO AP (test)", f"{report['ap_float']:.4f}", f"{report['ap_int8']:.4f}"),
            ("COCO AP50 (test)", f"{report['ap50_float']:.4f}", f"{report['ap50_int8']:.4f}"),
            (
                f"detections matched (IoU {found['iou']})",
                f"{found['detections']:,} at score >= {found['min_score']}",
                f"{found['matched']:.4f}",
            ),
            (
                "max |score| / box px diff",
                "",
                f"{found['max_score_diff']:.3f} / {found['max_box_diff_px']:.2f}",
            ),
        ]
    else:
        rows = [
            ("top-1 (test)", f"{report['top1_float']:.4f}", f"{report['top1_int8']:.4f}"),
            ("top-1 agreement", "", f"{report['top1_agreement']:.4f}"),
        ]
    rows.append(
        ("weight bytes", f"{report['weight_bytes_float']:,}", f"{report['weight_bytes_int8']:,}")
    )
    speed = report["img_per_s"]
    if speed["int8"] is not None:
        rows.append(
            (
                f"predict img/s (batch {report['speed_batch']})",
                f"{speed['float32']:,.0f} (bf16 {speed['bfloat16']:,.0f})",
                f"{speed['int8']:,.0f}",
            )
        )
    head = f"{report['model']} on {report['dataset']}, int8 {report['mode']}"
    lines = [head, f"{'':32} {'float32':>22} {'int8':>12}"]
    lines += [f"{name:32} {a:>22} {b:>12}" for name, a, b in rows]
    ratio = report["weight_bytes_float"] / report["weight_bytes_int8"]
    lines.append(f"weights {ratio:.2f}x smaller; {report['devices']}")
    return "\n".join(lines)


def random_model_report(
    name: str, image_size: int, out: str, mode: str, *, speed_batch: int = 8, repeats: int = 3
) -> dict:
    """Bundle sizes and predict speed of a zoo classifier with random weights (no accuracy):
    float32 and int8 bundles (one bucket, CPU) written under `out`; calibration on random
    normalised inputs for weights+activations."""
    from jaxvision import bundle

    source = Predictor.random(name, image_size=image_size, max_batch=speed_batch)
    shape = (image_size, image_size, source.record["channels"])
    float_variables = jax.device_get(source.variables)
    scheme = Scheme.of(source.task.model, mode, shape)
    scales = None
    if mode != "weights":
        x = np.random.default_rng(0).standard_normal((speed_batch, *shape), np.float32)
        scales = calibrate(scheme, float_variables, [x])
    stored = scheme.quantize(float_variables, scales)
    record = {**source.record, "quantization": {"mode": mode, "qtype": "int8"}}
    quantized = Predictor(record, stored, max_batch=speed_batch)
    bf16 = Predictor({**source.record, "dtype": "bfloat16"}, float_variables, max_batch=speed_batch)
    sizes = {}
    for label, p in (("float32", source), ("int8", quantized)):
        single = Predictor(p.record, p.variables, max_batch=1)
        path = os.path.join(out, f"bundle_{label}")
        bundle.write(single, path, platforms=("cpu",), source={"random": name})
        files = {f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)}
        sizes[label] = {"weights_msgpack": files[bundle.WEIGHTS], "total": sum(files.values())}
    compared = {"float32": source, "bfloat16": bf16, "int8": quantized}
    speed = measure.images_per_s(compared, speed_batch, repeats)
    return {
        "model": name,
        "image_size": image_size,
        "mode": mode,
        "bundle_bytes": sizes,
        "bundle_ratio": sizes["float32"]["total"] / sizes["int8"]["total"],
        "weights_ratio": sizes["float32"]["weights_msgpack"] / sizes["int8"]["weights_msgpack"],
        "weight_bytes_float": weight_bytes(float_variables),
        "weight_bytes_int8": weight_bytes(stored),
        "img_per_s": speed,
        "speed_batch": speed_batch,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
    }


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_string("workdir", None, "A trained classifier's or detector's workdir.")
    flags.DEFINE_string("out", None, "The quantized model's new workdir.")
    flags.DEFINE_enum("mode", "weights", list(MODES), "What is int8.")
    flags.DEFINE_integer(
        "calibration_batches", 8, "Training batches that calibrate the activation scales."
    )
    flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
    flags.DEFINE_bool("ema", True, "Quantize the EMA weights when the run kept them.")
    flags.DEFINE_integer("speed_batch", 64, "Images per timed forward.")
    flags.DEFINE_integer("repeats", 5, "Timed forwards per model (median).")
    flags.DEFINE_string(
        "model",
        None,
        "Instead of --workdir: a zoo classifier with random weights (size and speed).",
    )
    flags.DEFINE_integer("image_size", 224, "With --model: the input size.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    if FLAGS.model and FLAGS.out:
        try:
            report = random_model_report(
                FLAGS.model,
                FLAGS.image_size,
                FLAGS.out,
                FLAGS.mode,
                speed_batch=FLAGS.speed_batch,
                repeats=FLAGS.repeats,
            )
        except UserError as e:
            cli.fail(str(e))
        os.makedirs(FLAGS.out, exist_ok=True)
        with open(os.path.join(FLAGS.out, "quantize.json"), "w") as f:
            json.dump(report, f, indent=1)
        print(json.dumps(report, indent=1))
        return
    if not FLAGS.workdir or not FLAGS.out:
        cli.fail(
            "--workdir=DIR (a trained classifier or detector) and --out=DIR_INT8 (new) are required"
        )
    try:
        report = quantize(
            FLAGS.workdir,
            FLAGS.out,
            FLAGS.mode,
            FLAGS.calibration_batches,
            step=FLAGS.step,
            ema=FLAGS.ema,
            speed_batch=FLAGS.speed_batch,
            repeats=FLAGS.repeats,
        )
    except UserError as e:
        cli.fail(str(e))
    text = table(report)
    with open(os.path.join(FLAGS.out, "quantize.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(FLAGS.out, "quantize.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
