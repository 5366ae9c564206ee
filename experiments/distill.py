"""Knowledge distillation: a student classifier trained on a frozen teacher's outputs.

  python -m experiments.distill --config=experiments/configs/distillation/simple_cnn_digits.py \
      --workdir=DIR --config.teacher=TEACHER_WORKDIR

The teacher is another run's workdir (its model, classes and preprocessing from model.json; its
EMA weights when it kept them) or a weight file with `--config.teacher_model=NAME`. It sits
frozen in the train state beside the student, sharded like it, and is saved with it, so a
resumed run distils from the same teacher. The student's workdir evaluates, serves and
initialises other runs like any classifier's.
"""

from jaxvision import signals

signals.remember_sigterm()  # first: the imports below take seconds

import functools  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import classification as cls  # noqa: E402
from jaxvision import cli, models, predictor, weights  # noqa: E402
from jaxvision.checkpoint import load_model  # noqa: E402
from jaxvision.errors import UserError  # noqa: E402
from jaxvision.tasks.distillation import Distillation, DistillOptions, Teacher  # noqa: E402
from jaxvision.train import build, loop, reporting, steps  # noqa: E402
from jaxvision.train.setup import NamedModel, make_run  # noqa: E402
from jaxvision.train.state import image_model_init  # noqa: E402


def load_teacher(config, dataset) -> tuple[Teacher, dict]:
    """(the teacher, its variables as numpy) from `config.teacher`: a workdir or a weight file."""
    path = config.teacher
    if not path:
        raise UserError(
            "set --config.teacher to a trained workdir (or a weight file with "
            "--config.teacher_model=NAME)"
        )
    if os.path.isdir(path):
        record = predictor.read_record(path)
        if record["class_names"] != [str(n) for n in dataset.class_names]:
            raise UserError(
                f"teacher {path} was trained on other classes than {config.dataset}: distil on "
                "the teacher's data"
            )
        model = predictor.build_task(record).model
        found, step, _ = load_model(path, None, record.get("model_key"))
        variables = found["variables"]
        if found["ema_params"] is not None:  # the average is the better teacher
            variables = {**variables, "params": found["ema_params"]}
        reporting.note(f"teacher {record['model']} from {path} (step {step})")
        return Teacher(model, record["mean"], record["std"], record["image_size"]), variables
    if not config.teacher_model:
        raise UserError(
            f"--config.teacher={path} is a weight file: name its model with "
            "--config.teacher_model (e.g. resnet50)"
        )
    model = models.build(config.teacher_model, num_classes=dataset.num_classes)
    size = config.teacher_image_size or config.image_size
    channels = dataset.train[0]["image"].shape[-1]
    fresh = jax.device_get(
        image_model_init(model, np.zeros((1, size, size, channels)))(jax.random.PRNGKey(0))
    )
    variables, kept = weights.load_weights(path, config.teacher_model, fresh)
    if kept:
        raise UserError(
            f"teacher {path} has another classifier ({', '.join(kept)}): a teacher "
            f"must predict the {dataset.num_classes} classes of {config.dataset}"
        )
    reporting.note(f"teacher {config.teacher_model} from {path}")
    return Teacher(model, dataset.mean, dataset.std, size), variables


def setup(config) -> loop.Run:
    """Classification's mesh, input, student and optimizer, plus the frozen teacher."""
    mesh = build.mesh(config)
    dataset = cls.open_dataset(config)
    channels = dataset.train[0]["image"].shape[-1]
    total_steps = config.total_steps or math.ceil(
        config.num_epochs * len(dataset.train) / config.batch_size
    )
    train_transform, eval_transform = cls.transforms(config)

    if config.get("quantize_training") or config.get("prune_masks"):
        import jaxvision.compress.training  # noqa: F401  (registers QAT, pruning masks)

    model_options = build.ModelOptions.from_config(config)
    student = model_options.build(models, num_classes=dataset.num_classes)
    image_shape = (config.image_size, config.image_size, channels)
    tx, schedule, frozen = build.optimizer(
        build.OptimizerOptions.from_config(config),
        student,
        image_shape,
        total_steps,
        len(dataset.train) / config.batch_size,
    )
    teacher, teacher_variables = load_teacher(config, dataset)
    task = Distillation(
        student,
        teacher,
        mean=dataset.mean,
        std=dataset.std,
        loss=cls.loss_options(config, dataset),
        distill=DistillOptions(config.distill_temperature, config.distill_weight),
    )
    train_step = steps.make_train_step(task, tx, build.update_options(config, frozen, schedule))

    # The run: the student with its optimizer, the teacher without one (its weights placed when
    # the run starts); both laid out by the same sharding rules.
    example = {"image": np.zeros((1, *image_shape), np.uint8)}
    teacher_example = np.zeros((1, teacher.image_size, teacher.image_size, channels), np.uint8)
    return make_run(
        task,
        {
            "student": NamedModel(task.init_variables(example), tx, ema=config.ema_decay > 0),
            "teacher": NamedModel(
                image_model_init(teacher.model, teacher_example), weights=teacher_variables
            ),
        },
        mesh=mesh,
        sharding=config.sharding,
        seed=config.seed,
        train_step=train_step,
        train_source=dataset.train,
        train_transform=train_transform,
        eval_transform=eval_transform,
        evals=build.evals(config, {"test": dataset.test, "train": dataset.train}),
        class_names=dataset.class_names,
        total_steps=total_steps,
        schedule=schedule,
        predictor=cls.predictor_record(
            config, dataset, model_options.kwargs, channels, name="student"
        ),
    )


train_and_evaluate = functools.partial(loop.train_and_evaluate, setup=setup)

if __name__ == "__main__":
    cli.run(
        train_and_evaluate,
        default_config=os.path.join(
            os.path.dirname(__file__), "configs", "distillation", "simple_cnn_digits.py"
        ),
    )
