"""The `jaxvision` command: tools that act on finished runs, one subcommand each.

  jaxvision <command> [--flag=value ...]     (or: python -m jaxvision <command> ...)
  jaxvision --help                           lists the commands
  jaxvision <command> --help                 a command's usage and flags

Each command is a module of this package (`evaluate` is `jaxvision.commands.evaluate`,
`explain-checks` `jaxvision.commands.explain_checks`), imported only when it runs. An absl
command defines its flags in `define_flags()` when it runs, not on import, so commands that
share flag names (--workdir, --out) can be imported side by side; `make-shapes-folder` parses
its own arguments.
Bad input is one `error: ...` line on stderr and exit status 2, as for the training programs.
"""

import difflib
import importlib
import sys

from jaxvision import cli

# Command name -> (module in this package, what it does in one line).
COMMANDS = {
    "evaluate": ("evaluate", "metrics of a trained run, labels or boxes of images, ensembles"),
    "export": ("export", "a trained run as a self-contained bundle of jax.export artefacts"),
    "serve": ("serve", "bundles (or a run's model) over HTTP, /v1 and the v2 protocol"),
    "explain": ("explain", "heat maps of a classifier's predictions on images"),
    "explain-checks": ("explain_checks", "sanity checks of the explanation methods on a run"),
    "quantize": ("quantize", "int8 post-training quantization of a classifier or detector"),
    "prune": ("prune", "magnitude pruning of a classifier, then a fine-tune keeping the mask"),
    "generate": ("generate", "samples of a trained GAN as PNG files"),
    "soup": ("soup", "a model soup: the averaged weights of fine-tunes of one model"),
    "blend": ("blend", "two images blended: alpha or a Laplacian-pyramid seam"),
    "make-shapes-folder": ("make_shapes_folder", "an image folder of the synthetic shapes"),
}


def usage() -> str:
    """The command list that `jaxvision --help` prints."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: jaxvision <command> [--flag=value ...]   (python -m jaxvision <command> ...)",
        "",
        "Tools that act on finished runs (training is `python -m experiments.<program>`):",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`jaxvision <command> --help` prints a command's usage and flags."]
    return "\n".join(lines)


def unknown_command(name: str) -> str:
    """The one-line error for a name that is not a command, with the close matches."""
    close = difflib.get_close_matches(name, COMMANDS, n=3, cutoff=0.7)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"unknown command '{name}': {hint}the commands are {', '.join(COMMANDS)}"


def _command_help(module, name: str) -> str:
    """A command's docstring and the flags it defines."""
    from absl import flags

    text = (module.__doc__ or "").strip()
    defined = flags.FLAGS.module_help(module.__name__)
    return (
        f"jaxvision {name}: {text}\n\nflags:\n{defined}" if defined else f"jaxvision {name}: {text}"
    )


def main(argv: list[str] | None = None) -> None:
    """Runs `argv[1]`'s command with the rest of `argv` (default: sys.argv)."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) > 1 else cli.EXIT_BAD_INPUT)
    name, args = argv[1], argv[2:]
    if name not in COMMANDS:
        cli.fail(unknown_command(name))
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    program = f"jaxvision {name}"
    define_flags = getattr(module, "define_flags", None)
    if define_flags is None:  # a command that parses its own arguments
        module.main([program, *args])
        return
    define_flags()
    if any(a in ("-h", "--help", "--helpshort") for a in args):
        print(_command_help(module, name))
        sys.exit(0)
    from absl import app

    app.run(module.main, argv=[program, *args], flags_parser=cli.parse_flags)
