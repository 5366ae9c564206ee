"""Every command the docs show is checked against the code, so the docs never go stale.

The commands are taken from README.md, docs/*.md and docs/results/*.md: the lines of fenced and
indented code blocks and the inline code that starts like a command (`python -m ...`,
`jaxvision ...`). Each is checked without training anything:

- `python -m experiments.X`: the program exists, its config file (`--config=` or the program's
  default) exists and loads, every `--config.KEY` is a key of that config (an option of the
  configured model under `model_kwargs`, of a detector family under `detection`, of the
  dataset under `dataset_options`), every other flag is one the program defines;
- `jaxvision SUBCOMMAND` (or `python -m jaxvision`): `jaxvision --help` lists the subcommand
  and every flag used is one its module defines;
- `python -m benchmarks.X` and `python -m jaxvision.X`: the module exists and defines every
  flag used (and a benchmark's `--config` is checked as above);
- `python -m pytest`: the paths exist and `-m` names registered markers;
- `python -c CODE` runs (where the packages it imports are installed); `pip install` extras
  and requirement files exist; a script or file a command names exists.

Other tools (curl, tensorboard, gcloud, ...) are left alone. Links between the pages, the files
the pages name in inline code and the anchors they point at must exist as well.
"""

import ast
import contextlib
import dataclasses
import functools
import importlib.util
import io
import pathlib
import re
import runpy
import shlex
import subprocess
import sys
import tomllib

import ml_collections
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "docs" / "results").glob("*.md")),
]
# Programs whose commands are ours to check; any other first word is another tool's.
OURS = ("python", "jaxvision", "pip", "bash")
OTHER_TOOLS = ("curl", "ruff", "tensorboard", "tfds", "gcloud", "srun", "safetensors")
# Flags absl defines for every program.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "verbosity", "v"}
OPEN_FIELDS = ("model_kwargs", "detection", "dataset_options")
# Placeholders a doc writes instead of a value: the check skips what they stand for.
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|…")


@dataclasses.dataclass(frozen=True)
class Shown:
    """A command as a doc shows it."""

    doc: str
    line: int
    text: str

    def __str__(self):
        return f"{self.doc}:{self.line}: {self.text}"


def _code_lines(lines):
    """(line number, logical line) of the fenced and indented code blocks, with backslash
    continuations joined and `# comments` dropped."""
    fenced, pending, start = False, "", 0
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        indented = not fenced and line.startswith("    ") and not line.lstrip().startswith("-")
        if not (fenced or indented or pending):
            continue
        text = line.strip()
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        yield start, re.sub(r"\s+#\s.*$", "", pending + text)
        pending = ""


def _inline_spans(text):
    """(line number, span) of the inline code outside code blocks, a span's line breaks as
    spaces."""
    outside = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            outside.append("")
            continue
        outside.append("" if fenced or line.startswith("    ") else line)
    joined = "\n".join(outside)
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", joined):
        yield joined.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split())


def _is_command(text):
    words = text.split()
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]
    return bool(words) and words[0] in OURS + OTHER_TOOLS


def documented_commands():
    shown = []
    for path in DOCS:
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        found = list(_code_lines(text.splitlines()))
        found += [(n, s) for n, s in _inline_spans(text) if s.startswith(("python ", "jaxvision "))]
        for number, line in found:
            for part in line.split(" && "):
                if _is_command(part.strip()):
                    shown.append(Shown(name, number, part.strip()))
    return shown


COMMANDS = documented_commands()


# What the code defines.


@functools.cache
def _parse(path):
    return ast.parse(path.read_text(), filename=str(path))


def _module_path(module):
    """The file of a module of this repository, or None."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py", base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _flags_in(path):
    """Flags one module defines (absl's DEFINE_*, argparse's add_argument), and the modules of
    this repository it imports."""
    names, imports = set(), set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            if node.func.attr.startswith("DEFINE"):
                names.add(first.value)
            elif node.func.attr == "add_argument" and first.value.startswith("--"):
                names.add(first.value[2:])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for module in [node.module] + [f"{node.module}.{a.name}" for a in node.names]:
                imported = _module_path(module)
                if module.startswith(("jaxvision", "benchmarks", "experiments")) and imported:
                    imports.add(imported)
    return names, imports


@functools.cache
def defined_flags(path):
    """Flags a module defines, with those of the modules of this repository that it imports,
    directly or not (jaxvision.cli's shared flags among them)."""
    names, seen, todo = set(), set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        own, imports = _flags_in(current)
        names |= own
        todo.extend(imports)
    return frozenset(names)


@functools.cache
def default_config(path):
    """The config file a program falls back on (its `DEFAULT_CONFIG` or `default_config=`)."""
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "join":
            parts = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if parts and parts[-1].endswith(".py"):
                return path.parent.joinpath(*parts)
    return None


@functools.cache
def load_config(path):
    return runpy.run_path(str(path))["get_config"]()


@functools.cache
def jaxvision_help():
    result = subprocess.run(
        [sys.executable, "-m", "jaxvision", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"`jaxvision --help` failed: {result.stderr[-2000:]}"
    return result.stdout + result.stderr


@functools.cache
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def open_options(field, model):
    """The names `--config.<field>.NAME` may take beyond what the config file sets."""
    if field == "model_kwargs":
        from jaxvision import models
        from jaxvision.models import detection, image_text

        found = (r for r in (detection, image_text) if model in r.names())
        registry = next(found, models)
        return set(registry.options(model))
    if field == "detection":
        from jaxvision.tasks.detection import FAMILIES

        return {f.name for how in FAMILIES.values() for f in dataclasses.fields(how.Options)}
    from jaxvision.data import shapes, sources

    names = set(shapes.OPTIONS)
    for name in sources.DATASETS.names():  # the option names other datasets declare
        declared = sources.DATASETS.info(name).get("takes_options")
        names |= set(declared) if isinstance(declared, tuple) else set()
    return names


# The checks.


def _words(command):
    try:
        words = shlex.split(command)
    except ValueError as e:
        pytest.fail(f"cannot split the command into words ({e})")
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]  # environment settings
    return [w.strip("[]") for w in words if w.strip("[]|")]


def _flags(words):
    """{name: value or None} of the `--name[=value]` words."""
    found = {}
    for word in words:
        if word.startswith("--"):
            name, _, value = word[2:].partition("=")
            found[name] = value if "=" in word else None
    return found


def _check_flags(flags, defined, what):
    for name in flags:
        if name == "config" or name.startswith("config."):
            continue
        bare = name[2:] if name.startswith("no") and name[2:] in defined else name
        assert bare in defined | ABSL_FLAGS, (
            f"{what} has no flag --{name}; it defines {', '.join(sorted(defined))}"
        )


def _check_repo_paths(words):
    for word in words:
        value = word.partition("=")[2] if word.startswith("--") else word
        for path in value.split(","):
            ours = path.startswith(("experiments/", "jaxvision/", "benchmarks/", "tests/", ".ci/"))
            if ours and not PLACEHOLDER.search(path) and "*" not in path:
                assert (ROOT / path).exists(), f"{path} does not exist"


def _check_config(config_path, flags):
    if config_path is None:
        assert "config" in flags or not any(f.startswith("config.") for f in flags), (
            "--config.KEY overrides without a config file"
        )
        return
    if PLACEHOLDER.search(str(config_path)):
        return
    assert config_path.is_file(), f"config file {config_path.relative_to(ROOT)} does not exist"
    config = load_config(config_path)
    model = flags.get("config.model") or config.get("model")
    for name in flags:
        if not name.startswith("config.") or PLACEHOLDER.search(name):
            continue
        parts = name.split(".")[1:]
        node = config
        for depth, part in enumerate(parts):
            if isinstance(node, ml_collections.ConfigDict) and part in node:
                node = node[part]
                continue
            if depth == 1 and parts[0] in OPEN_FIELDS and len(parts) == 2:
                assert part in open_options(parts[0], model), (
                    f"--{name}: '{part}' is not an option of {parts[0]} (model {model!r})"
                )
                break
            pytest.fail(f"--{name}: no key '{'.'.join(parts)}' in {config_path.relative_to(ROOT)}")


def check_python_module(module, args):
    if module == "pytest":
        return check_pytest(args)
    if module == "jaxvision":
        return check_jaxvision(args)
    if PLACEHOLDER.search(module):
        return  # a template: python -m experiments.<program> ...
    path = _module_path(module)
    assert path is not None, f"no module {module} in this repository"
    flags = _flags(args)
    _check_flags(flags, defined_flags(path), f"python -m {module}")
    if "config" in flags or any(f.startswith("config.") for f in flags):
        config = flags.get("config")
        _check_config(ROOT / config if config else default_config(path), flags)


def check_jaxvision(args):
    if not args or args[0].startswith("-"):
        _check_flags(_flags(args), set(), "jaxvision")
        return
    name = args[0]
    if PLACEHOLDER.search(name):
        return  # a template: jaxvision <subcommand> ...
    assert re.search(rf"\b{re.escape(name)}\b", jaxvision_help()), (
        f"`jaxvision --help` does not list the subcommand {name}"
    )
    path = ROOT / "jaxvision" / "commands" / (name.replace("-", "_") + ".py")
    assert path.is_file(), f"the subcommand {name} has no module {path.relative_to(ROOT)}"
    _check_flags(_flags(args[1:]), defined_flags(path), f"jaxvision {name}")


def check_pytest(args):
    markers = {
        m.split(":")[0].strip()
        for m in pyproject()["tool"]["pytest"]["ini_options"].get("markers", [])
    }
    words = iter(args)
    for word in words:
        if word == "-m":
            expression = next(words)
            for name in re.findall(r"[A-Za-z_]\w*", expression):
                assert name in {"and", "or", "not"} | markers, f"marker {name} is not registered"
        elif word in ("-n", "-k", "-p"):
            next(words)
        elif not word.startswith("-"):
            assert (ROOT / word.split("::")[0]).exists(), f"{word} does not exist"


def check_python_code(code):
    tree = ast.parse(code)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if importlib.util.find_spec(name.split(".")[0]) is None:
                pytest.skip(f"{name} is not installed here")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("load", "save_file"):
            pytest.skip("reads or writes the user's files")
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(tree, "<doc>", "exec"), {})


def check_pip(args):
    words = iter(args[1:])
    for word in words:
        if word == "-r":
            requirements = next(words)
            assert (ROOT / requirements).is_file(), f"{requirements} does not exist"
        elif word.startswith("."):
            extras = re.findall(r"\[([^\]]*)\]", word)
            known = pyproject()["project"].get("optional-dependencies", {})
            for extra in ",".join(extras).split(",") if extras else []:
                assert extra in known, f"pyproject.toml has no extra [{extra}]"


@pytest.mark.parametrize("shown", COMMANDS, ids=str)
def test_documented_command(shown):
    words = _words(shown.text)
    if not words or words[0] in OTHER_TOOLS:
        return
    _check_repo_paths(words)
    program, args = words[0], words[1:]
    if program == "jaxvision":
        check_jaxvision(args)
    elif program == "pip":
        check_pip(args)
    elif program == "bash":
        assert (ROOT / args[0]).is_file(), f"{args[0]} does not exist"
    elif args[:1] == ["-m"] and len(args) > 1:
        check_python_module(args[1], args[2:])
    elif args[:1] == ["-c"] and len(args) > 1:
        check_python_code(args[1])
    elif args and not args[0].startswith(("-", ".device/")):  # .device/: the user's own copy
        assert (ROOT / args[0]).is_file(), f"{args[0]} does not exist"


def test_the_docs_show_the_commands():
    """The extraction itself works: the Quickstart, a tool, a benchmark are among them."""
    texts = {c.text for c in COMMANDS}
    assert "python -m experiments.digits --workdir=workdirs/digits" in texts
    assert any(t.startswith("jaxvision serve ") for t in texts)
    assert any(t.startswith("python -m benchmarks.") for t in texts)
    assert len(COMMANDS) > 100


def _top_level_names(path):
    names = set()
    for node in _parse(path).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _names_resolve(dotted):
    """`jaxvision.a.b.attr`: the longest module prefix exists and defines the next name."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        path = _module_path(".".join(parts[:end]))
        if path is not None:
            return end == len(parts) or parts[end] in _top_level_names(path)
    return False


@functools.cache
def all_configs():
    return [
        load_config(path)
        for path in sorted((ROOT / "experiments" / "configs").rglob("*.py"))
        if "get_config" in path.read_text()
    ]


@functools.cache
def all_open_options(field):
    if field != "model_kwargs":
        return frozenset(open_options(field, None))
    from jaxvision import models
    from jaxvision.models import detection

    names = set()
    for registry in (models, detection):
        for model in registry.names():
            names |= set(registry.options(model))
    return frozenset(names)


def _in_some_config(parts):
    for config in all_configs():
        node = config
        for part in parts:
            if not (isinstance(node, ml_collections.ConfigDict) and part in node):
                break
            node = node[part]
        else:
            return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_overrides_in_prose_exist(doc):
    """`--config.KEY=...` written in prose is a key of some config (or an option of some model,
    detector family or dataset under the open fields)."""
    for number, span in _inline_spans(doc.read_text()):
        if not span.startswith("--config."):
            continue
        for word in span.split():
            name = word.strip("[]").partition("=")[0][len("--config.") :]
            if not word.startswith("--config.") or PLACEHOLDER.search(name):
                continue
            parts = name.split(".")
            if parts[-1].isupper() or parts[-1] == "key":
                continue  # NAME, key: placeholders
            if parts[0] in OPEN_FIELDS and len(parts) == 2:
                known = parts[1] in all_open_options(parts[0])
            else:
                known = _in_some_config(parts)
            assert known, f"{doc.name}:{number}: no config has --config.{name}"


def _slug(heading):
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@functools.cache
def _anchors(path):
    return {_slug(m) for m in re.findall(r"(?m)^#+ (.*)$", path.read_text())}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_named_files_exist(doc):
    text = doc.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.exists(), f"{doc.name}: the link {target} leads nowhere"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{doc.name}: no heading #{anchor} in {path}"
    for _, span in _inline_spans(text):
        if re.fullmatch(r"(experiments|benchmarks)\.\w+", span):
            assert _module_path(span), f"{doc.name}: no module {span}"
        elif re.fullmatch(r"jaxvision(\.\w+)+(\(.*\))?", span):
            name = span.split("(")[0]
            assert _names_resolve(name), f"{doc.name}: no {name} in jaxvision"
        elif re.fullmatch(r"(experiments|jaxvision|benchmarks|tests|docs)/[\w/.\-]+", span):
            assert (ROOT / span).exists(), f"{doc.name}: {span} does not exist"


def test_quickstart_block_is_what_ci_runs():
    """.ci/run takes the two lines of the first fenced block after "## Quickstart"."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quickstart", 1)[1].split("```", 2)[1]
    assert block.strip().splitlines() == [
        "pip install -e . && python -m experiments.digits --workdir=workdirs/digits",
        "pip install -e '.[test]' && python -m pytest -q -n 2 tests",
    ]
