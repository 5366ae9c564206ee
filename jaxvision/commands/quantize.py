"""int8 post-training quantization of a trained classifier or detector with qwix
(jaxvision.compress).

  python -m experiments.quantize --workdir=DIR --out=DIR_INT8 \\
      [--mode=weights|weights+activations] [--calibration_batches=8] [--ema]

Per-output-channel symmetric int8 weights for every conv and dense layer; with
`weights+activations`, int8 inputs to them too, with static scales calibrated on the first N
batches of the run's training split (evaluation preprocessing). DIR_INT8 is a workdir like any
other: `experiments.evaluate --workdir=DIR_INT8`, `experiments.export --workdir=DIR_INT8` (a
bundle of int8 weights + scales) and `experiments.serve` read it.

Prints and writes DIR_INT8/quantize.json and quantize.txt: top-1 of the float and the int8
model on the test split and their top-1 agreement (a detector: the 12 COCO stats of both, AP /
AP50 in the table, and the share of float detections scoring >= 0.3 that an int8 detection of
the same class matches at IoU >= 0.9), weight bytes, and predict img/s of the compiled
forward on this machine for float32, bfloat16 compute and int8.

  python -m experiments.quantize --model=resnet50 --image_size=224 --out=DIR [--mode=...]

A zoo model with random weights instead: float32 and int8 bundle sizes (one bucket, CPU) and
predict img/s, no accuracy.
"""

import json
import os
import sys

from absl import app, flags

from experiments.compression import quantize, random_model_report, table
from jaxvision import cli
from jaxvision.compress.quantize import MODES
from jaxvision.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained classifier's or detector's workdir.")
_OUT = flags.DEFINE_string("out", None, "The quantized model's new workdir.")
_MODE = flags.DEFINE_enum("mode", "weights", list(MODES), "What is int8.")
_CALIBRATION = flags.DEFINE_integer(
    "calibration_batches", 8, "Training batches that calibrate the activation scales."
)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
_EMA = flags.DEFINE_bool("ema", True, "Quantize the EMA weights when the run kept them.")
_SPEED_BATCH = flags.DEFINE_integer("speed_batch", 64, "Images per timed forward.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed forwards per model (median).")
_MODEL = flags.DEFINE_string(
    "model", None, "Instead of --workdir: a zoo classifier with random weights (size and speed)."
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "With --model: the input size.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    if _MODEL.value and _OUT.value:
        try:
            report = random_model_report(
                _MODEL.value,
                _IMAGE_SIZE.value,
                _OUT.value,
                _MODE.value,
                speed_batch=_SPEED_BATCH.value,
                repeats=_REPEATS.value,
            )
        except UserError as e:
            cli.fail(str(e))
        os.makedirs(_OUT.value, exist_ok=True)
        with open(os.path.join(_OUT.value, "quantize.json"), "w") as f:
            json.dump(report, f, indent=1)
        print(json.dumps(report, indent=1))
        return
    if not _WORKDIR.value or not _OUT.value:
        cli.fail(
            "--workdir=DIR (a trained classifier or detector) and --out=DIR_INT8 (new) are required"
        )
    try:
        report = quantize(
            _WORKDIR.value,
            _OUT.value,
            _MODE.value,
            _CALIBRATION.value,
            step=_STEP.value,
            ema=_EMA.value,
            speed_batch=_SPEED_BATCH.value,
            repeats=_REPEATS.value,
        )
    except UserError as e:
        cli.fail(str(e))
    text = table(report)
    with open(os.path.join(_OUT.value, "quantize.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(_OUT.value, "quantize.txt"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
