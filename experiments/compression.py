"""The compression programs' work, without their flags (experiments.quantize and
experiments.prune parse those): quantizing a trained run into an int8 workdir, pruning it and
fine-tuning with the mask kept, and their reports. Tests and forks call these directly."""

import os

import jax
import numpy as np

from experiments import classification
from experiments.runs import load_config, split_source
from jaxvision import data, models
from jaxvision.compress import detection as quantized_detection
from jaxvision.compress import measure, prune
from jaxvision.compress.quantize import QuantizedClassification, Scheme, calibrate, weight_bytes
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor, eval_transform
from jaxvision.tasks.images import normalize


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
    experiments.evaluate runs) and how closely the int8 detections follow the float ones
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


def shares(values: list[str], flag: str) -> list[float]:
    """--flag=0.3,0.5 -> [0.3, 0.5], each checked to be in [0, 1)."""
    try:
        shares = [float(v) for v in values]
    except ValueError:
        raise UserError(f"--{flag}={','.join(values)}: give numbers in [0, 1)") from None
    if any(not 0 <= s < 1 for s in shares):
        raise UserError(f"--{flag}={','.join(values)}: every share must be in [0, 1)")
    return shares


def finetune(workdir: str, start: str, masks_path: str, out: str, steps: int, lr) -> dict:
    """Fine-tunes the pruned weights in `start` with the masks kept; returns the final eval."""
    config = load_config(workdir)
    config.init_from = start
    config.init_new_head = False
    config.prune_masks = masks_path
    config.total_steps = steps
    config.learning_rate = lr if lr is not None else config.learning_rate / 10
    config.warmup_epochs = 0.0
    config.ema_decay = 0.0
    config.eval_every_steps = 0
    config.checkpoint_every_steps = min(config.checkpoint_every_steps or steps, steps)
    return classification.train_and_evaluate(config, out)


def prune_run(
    workdir: str, out: str, sparsities, *, structured: bool, norm: str, steps: int, lr, sweep
):
    """Prunes `workdir`'s model at each of `sparsities` (and evaluates `sweep`); returns the
    report's rows: {"sparsity", "top1_pruned", "top1_finetuned" (None: not fine-tuned)}."""
    source = Predictor.from_workdir(workdir)
    if source.kind != "classification" or isinstance(source.task, QuantizedClassification):
        raise UserError(f"{workdir} is not a float classifier: prune a trained classifier")
    variables = jax.device_get(source.variables)
    skip = (models.classifier(source.record["model"]),)
    test, batch_size = split_source(workdir, "test")
    rows = {}
    for share in sorted(set(sweep) | set(sparsities)):
        masks = prune.magnitude_masks(
            variables["params"], share, structured=structured, norm=norm, skip=skip
        )
        pruned = {**variables, "params": prune.apply_masks(variables["params"], masks)}
        predicted, labels = measure.split_predictions(source, test, batch_size, pruned)
        row = {"sparsity": share, "top1_pruned": float(np.mean(predicted == labels))}
        row["top1_finetuned"] = None
        if share in sparsities and steps > 0:
            kind = f"structured_{norm}_" if structured else ""  # a rerun of another kind
            run = os.path.join(out, f"{kind}sparsity_{share:.2f}")  # does not resume this one
            start, tuned = os.path.join(run, "start"), os.path.join(run, "finetune")
            masks_path = os.path.join(start, "masks.npz")
            if not os.path.isfile(masks_path):  # else: a rerun resumes the same fine-tune
                measure.write_workdir(
                    start,
                    workdir,
                    source.record,
                    pruned,
                    source.step,
                    {"eval/top1": row["top1_pruned"]},
                )
                prune.save_masks(masks_path, masks)
            final = finetune(workdir, start, masks_path, tuned, steps, lr)
            row["top1_finetuned"] = float(final["eval/top1"])
            tuned_params = Predictor.from_workdir(tuned).variables["params"]
            row["zeros_after_finetune"] = prune.sparsity_of(tuned_params, masks)
        row["weights_pruned"] = int(sum(np.size(m) - np.sum(m) for m in masks.values()))
        rows[share] = row
    return [rows[s] for s in sorted(rows)]


def prune_table(rows: list[dict], kind: str) -> str:
    """Test top-1 against sparsity, as a text table."""
    lines = [f"{kind} magnitude pruning: test top-1", f"{'sparsity':>8} {'pruned':>8} {'tuned':>8}"]
    for r in rows:
        tuned = "" if r["top1_finetuned"] is None else f"{r['top1_finetuned']:.4f}"
        lines.append(f"{r['sparsity']:>8.2f} {r['top1_pruned']:>8.4f} {tuned:>8}")
    return "\n".join(lines)


def plot(rows: list[dict], path: str, kind: str) -> None:
    """Test top-1 against sparsity: pruned as is, and after fine-tuning."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([r["sparsity"] for r in rows], [r["top1_pruned"] for r in rows], "o-", label="pruned")
    tuned = [r for r in rows if r["top1_finetuned"] is not None]
    if tuned:
        ax.plot(
            [r["sparsity"] for r in tuned],
            [r["top1_finetuned"] for r in tuned],
            "s",
            label="fine-tuned",
        )
    ax.set_xlabel(f"sparsity ({kind})")
    ax.set_ylabel("test top-1")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")


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
