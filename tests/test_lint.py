"""The tree stays ruff-clean: lint and format; test modules have names of their own."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*args):
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_ruff_check_is_clean():
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_modules_have_names_of_their_own():
    # The test folders are not packages: pytest imports each test module by its file name, so
    # two modules of one name (tests/a/test_x.py, tests/b/test_x.py) stop the whole collection.
    seen = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "tests")):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                seen.setdefault(name, []).append(os.path.relpath(folder, ROOT))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
