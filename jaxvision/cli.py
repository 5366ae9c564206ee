"""The command line every experiment shares: `--config=<file.py> --workdir=DIR [--config.k=v]`.

Bad input never ends in a traceback: it is reported as one `error: ...` line on stderr with exit
status 2. Bugs still raise, with their traceback.
"""

import ast
import os
import runpy
import sys
from collections.abc import Callable

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxvision import xla_flags
from jaxvision.errors import UserError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_BAD_INPUT)


def _config_path(argv: list[str], default: str | None) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return default


def _unknown_override(
    argv: list[str], config: ml_collections.ConfigDict
) -> tuple[str, ml_collections.ConfigDict] | None:
    """The first `--config.a.b=...` whose path `a.b` is not a field of `config`, with the
    ConfigDict that lacks it."""
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config.") :].split("=", 1)[0]
        node = config
        for part in path.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                return path, node
            node = node[part]
    return None


def _explain_parse_error(argv: list[str], default_config: str | None, error: Exception) -> str:
    path_of_file = _config_path(argv, default_config)
    try:
        config = runpy.run_path(path_of_file)["get_config"]()
    except Exception as load_error:  # the config file itself is the problem
        return f"cannot load config file '{path_of_file}': {' '.join(str(load_error).split())}"
    unknown = _unknown_override(argv, config)
    if unknown is not None:
        path, parent = unknown
        keys = (
            ", ".join(sorted(parent.keys()))
            if isinstance(parent, ml_collections.ConfigDict)
            else ""
        )
        return f"unknown config key '{path}' in {path_of_file}: valid keys there are {keys}"
    return " ".join(str(error).split())


def initialize_distributed(
    *, distributed: bool, coordinator_address: str | None, num_processes: int, process_id: int
) -> None:
    """Joins a multi-process run before anything touches the devices.

    Explicit (`--num_processes=2 --process_id=i --coordinator_address=host:port`, e.g. several
    processes on one machine) or found by JAX from the cluster's environment (`--distributed`).
    """
    if num_processes > 1:
        if not coordinator_address:
            fail("--num_processes > 1 needs --coordinator_address=host:port (of process 0)")
        # CPU devices of different processes talk through gloo; GPUs and TPUs use their own
        # collectives and ignore this.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif distributed:
        jax.distributed.initialize()


# Config fields that hold a model's or dataset's own options: `--config.model_kwargs.NAME=VALUE`
# may set any option of the configured model, whether or not the config file sets it (likewise a
# detector's post-processing options, `detection`, and a dataset's, `dataset_options`).
OPEN_FIELDS = ("model_kwargs", "detection", "dataset_options", "yolo_augment_options")


def _literal(text: str):
    """A command-line value as Python: numbers, booleans, tuples and None by their literal
    syntax (`true`/`false` too); anything else stays a string (`stem=small`)."""
    lowered = {"true": True, "false": False, "none": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_open_overrides(
    argv: list[str], default_config: str | None
) -> tuple[list[str], dict[str, dict]]:
    """Takes `--config.<open field>.NAME=VALUE` arguments whose NAME the config file does not
    set out of `argv` (ml_collections would call them unknown keys); returns the remaining
    argv and {field: {NAME: value}} to apply once the config is loaded."""
    prefixes = tuple(f"--config.{f}." for f in OPEN_FIELDS)
    wanted = [a for a in argv[1:] if a.startswith(prefixes)]
    if not wanted:
        return argv, {}
    try:
        config = runpy.run_path(_config_path(argv[1:], default_config))["get_config"]()
    except Exception:  # reported by the normal parse, with its own message
        return argv, {}
    open_fields = [f for f in OPEN_FIELDS if isinstance(config.get(f), ml_collections.ConfigDict)]
    rest, extra = [argv[0]], {}
    for arg in argv[1:]:
        path, _, value = arg[len("--config.") :].partition("=")
        field, _, name = path.partition(".")
        if (
            arg in wanted
            and field in open_fields
            and "=" in arg
            and "." not in name
            and name not in config[field]
        ):
            extra.setdefault(field, {})[name] = _literal(value)
        else:
            rest.append(arg)
    return rest, extra


def _apply_open_overrides(config: ml_collections.ConfigDict, extra: dict[str, dict]) -> None:
    for field, values in extra.items():
        with config.unlocked():
            if field not in config:
                config[field] = ml_collections.ConfigDict()
            for name, value in values.items():
                config[field][name] = value
    model_options = extra.get("model_kwargs")
    if model_options and "model" in config:
        from jaxvision import models
        from jaxvision.models import detection, image_text

        # The registry that holds the name: a detector's, an image-text model's, else a
        # classifier's (whose lookup says an unknown name is unknown).
        found = (r for r in (detection, image_text) if config.model in r.names())
        registry = next(found, models)
        try:
            valid = registry.options(config.model)
        except UserError as e:
            fail(str(e))
        unknown = sorted(set(model_options) - set(valid))
        if unknown:
            fail(
                f"--config.model_kwargs.{unknown[0]}: model '{config.model}' has no option "
                f"'{unknown[0]}'; its options are {', '.join(valid) or '(none)'}"
            )


def parse_flags(argv: list[str], explain=None) -> list[str]:
    """absl's flag parsing with one `error:` line (exit 2) for bad flags; library chatter
    (Orbax logs every save and restore at INFO) stays out of the output unless `--verbosity`
    is given. `explain(error) -> message` may say more about a parse error."""
    try:
        rest = flags.FLAGS(argv)
    except Exception as e:  # absl and ml_collections raise several types for bad flags
        fail(explain(e) if explain else " ".join(str(e).split()))
    if not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
        flags.FLAGS.verbosity = logging.WARNING
    return rest


def run(
    train_and_evaluate: Callable[[ml_collections.ConfigDict, str], object],
    *,
    default_config: str | None = None,
    needs_workdir: bool = True,
) -> None:
    """Defines the flags, parses them and calls `train_and_evaluate(config, workdir)`; a
    command that writes nothing (`needs_workdir=False`, a benchmark) gets workdir None unless
    one is given."""
    xla_flags.apply()  # before anything initialises a JAX backend
    # With a default file, overrides on the command line are applied at definition already:
    # options of the model that the file leaves unset are taken out first.
    sys.argv, open_overrides = split_open_overrides(sys.argv, default_config)
    try:
        config_flags.DEFINE_config_file(
            "config",
            default_config,
            "Experiment config file (a .py with get_config()).",
            lock_config=True,
        )
    except Exception as e:  # an unknown or malformed --config.key=value
        fail(_explain_parse_error(sys.argv[1:], default_config, e))
    flags.DEFINE_string("workdir", None, "Directory for config.json, metrics and checkpoints.")
    flags.DEFINE_bool(
        "distributed",
        False,
        "Multi-process run set up by the cluster (SLURM, TPU pod slice, Kubernetes): "
        "jax.distributed.initialize() finds its peers itself.",
    )
    flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0, for an explicit multi-process run."
    )
    flags.DEFINE_integer("num_processes", 1, "Processes in an explicit multi-process run.")
    flags.DEFINE_integer("process_id", 0, "This process's index in an explicit multi-process run.")

    def parse(argv: list[str]) -> list[str]:
        return parse_flags(
            argv, explain=lambda e: _explain_parse_error(argv[1:], default_config, e)
        )

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}: pass options as --name=value")
        if needs_workdir and not flags.FLAGS.workdir:
            fail("--workdir is required: the directory for checkpoints, metrics and config.json")
        if flags.FLAGS.config is None:
            example = "experiments/configs/classification/resnet50_imagenet.py"
            fail(f"--config is required: e.g. --config={example}")
        try:
            config = flags.FLAGS.config
            config.keys()  # a config file that failed to load raises here
        except UserError:
            raise
        except Exception as e:
            path = _config_path(sys.argv[1:], default_config)
            if not os.path.isfile(path):
                fail(f"config file '{path}' not found: pass --config=<a .py with get_config()>")
            fail(f"cannot load config file '{path}': {' '.join(str(e).split())}")
        _apply_open_overrides(config, open_overrides)
        initialize_distributed(
            distributed=flags.FLAGS.distributed,
            coordinator_address=flags.FLAGS.coordinator_address,
            num_processes=flags.FLAGS.num_processes,
            process_id=flags.FLAGS.process_id,
        )
        try:
            train_and_evaluate(config, flags.FLAGS.workdir)
        except UserError as e:
            fail(str(e))
        except KeyboardInterrupt:  # a second Ctrl-C: any checkpoint being written completed
            print(
                "interrupted: rerun the same command to continue from the latest checkpoint",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(EXIT_INTERRUPTED)

    app.run(main, flags_parser=parse)
