"""The `jaxvision` command: its list of subcommands, one-line errors for unknown ones, modules
that import side by side without defining flags, and the console script that installs it."""

import importlib
import os
import tomllib

import pytest
from absl import flags

from jaxvision import commands
from tests.experiments.helpers import ROOT, run_tool

NAMES = (
    "evaluate",
    "export",
    "serve",
    "explain",
    "explain-checks",
    "quantize",
    "prune",
    "generate",
    "soup",
    "blend",
    "make-shapes-folder",
)


def test_help_lists_every_subcommand_with_a_line_about_it(capsys):
    assert tuple(commands.COMMANDS) == NAMES
    with pytest.raises(SystemExit) as stop:
        commands.main(["jaxvision", "--help"])
    assert stop.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name in NAMES:
        (line,) = [x for x in lines if x.split()[:1] == [name]]
        assert len(line.split()) > 2, line  # the name and what it does


def test_no_subcommand_prints_the_list_and_exits_2(capsys):
    with pytest.raises(SystemExit) as stop:
        commands.main(["jaxvision"])
    assert stop.value.code == 2
    assert "make-shapes-folder" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "close"), [("evalute", "evaluate"), ("make_shapes_folder", "make-shapes-folder")]
)
def test_an_unknown_subcommand_is_one_line_naming_close_matches(capsys, name, close):
    with pytest.raises(SystemExit) as stop:
        commands.main(["jaxvision", name])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: unknown command '{name}': did you mean {close}?"), line


def test_command_modules_import_together_and_define_flags_only_when_run():
    before = set(flags.FLAGS)
    modules = [
        importlib.import_module(f"jaxvision.commands.{m}") for m, _ in commands.COMMANDS.values()
    ]
    own = {"workdir", "out", "images", "step", "bundle", "mode", "sparsity", "recipe", "num", "a"}
    assert not own & (set(flags.FLAGS) - before)  # the commands' flags are not taken on import
    for name, module in zip(commands.COMMANDS, modules, strict=True):
        assert f"  jaxvision {name} " in module.__doc__, name  # the usage line


@pytest.mark.slow
def test_python_m_jaxvision_runs_a_subcommand_with_its_one_line_errors():
    result = run_tool("export")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --workdir=DIR (a training run) and --out=BUNDLE (a new directory) are required"
    ]
    result = run_tool("export", "--help")
    assert result.returncode == 0
    assert "jaxvision export --workdir=DIR --out=BUNDLE" in result.stdout
    assert "--max_batch" in result.stdout


def test_the_console_script_is_declared():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["jaxvision"] == "jaxvision.commands:main"
