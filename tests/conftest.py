"""What the whole suite shares: a compilation cache, the order in which xdist hands tests to its
workers (the modules that share an expensive fixture go to one worker each, slow tests first),
a session cache that builds an expensive thing (a trained run) once per test session for every
xdist worker, and the trained digits run that several folders share."""

import fcntl
import json
import os
import shutil
import tempfile

import pytest

# Many tests start the same experiments in fresh processes; JAX's persistent compilation cache
# (inherited by those processes through the environment) compiles each program once. Set before
# any test module imports JAX.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jaxvision-test-jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The suite's programs are small and run few steps: much of a test's time is XLA compiling them,
# most of that LLVM optimising the CPU code. LLVM's level 1 compiles nearly as fast as level 0
# and runs nearly as fast as the default level 3 (2-core AMD EPYC, quiet: a ResNet-50 train step
# at 32 px compiles in 6.5 / 7.4 / 8.4 s and runs in 1,647 / 510 / 507 ms at levels 0 / 1 / 3;
# the digits ResNet-18's 200 steps take 175 / 46 / 53 s end to end). Numbers differ from the
# default build's in the last float bits only; every comparison across builds already has a
# tolerance that holds on any x86 CPU. Subprocesses get it through the environment
# (tests/experiments/helpers.py: devices() keeps it).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
# The flags every jaxvision command adds (jaxvision.xla_flags), here too: XLA_FLAGS is part of the
# compilation cache's key, so a command the tests start then finds the programs the tests compiled
# in-process (and the other way round) instead of compiling them again.
from jaxvision import xla_flags  # noqa: E402 (imports os alone; JAX is not initialised)

os.environ["XLA_FLAGS"] = xla_flags.with_defaults(os.environ["XLA_FLAGS"])
import tensorflow_datasets as tfds  # noqa: E402 (the environment above comes first)

# Test modules (or folders) whose tests share an expensive module- or session-scoped fixture (a
# trained run, a server, a compiled network): xdist hands each one to a single worker, which
# builds the fixture once. (The `xdist_group` mark with --dist loadgroup would say this in the
# modules themselves, but it groups nothing with pytest 9.2: pytest-xdist issue #1386.)
ONE_WORKER = (
    "tests/compress/test_quantize.py",
    "tests/compress/test_quantize_detection.py",
    "tests/experiments/test_init_from.py",  # a worker would wait on the other's source run
    "tests/experiments/test_preemption.py",
    "tests/experiments/test_yolo.py",  # a worker would wait on the other's trained run
    "tests/explain/",
    "tests/models/test_fid_inception.py",
    "tests/ops/test_contrastive.py",  # the 8-device process runs once
    "tests/serving/test_page.py",  # with the other server tests: the servers start once
    "tests/serving/test_server.py",
    "tests/serving/test_tritonclient.py",
    "tests/serving/test_v2.py",
    "tests/train/test_loop_sync.py",
    "tests/train/test_sharding_strategies.py",
)


def _work_unit(nodeid):
    """The scheduling unit of a test: its ONE_WORKER entry, or the test alone."""
    for prefix in ONE_WORKER:
        if nodeid.startswith(prefix):
            return "tests/serving/" if prefix.startswith("tests/serving/test_") else prefix
    return nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """For -n's default distribution ("load"): xdist's scope scheduler over _work_unit's units,
    largest units first (its default order), then single tests in collection order (slow ones
    first: see below)."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return _work_unit(nodeid)

    return OneWorkerUnits(config, log)


def pytest_collection_modifyitems(config, items):
    """In an xdist worker, slow tests first (a stable sort): the workers then end at about the
    same time instead of one of them finishing a long test alone."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def mock_tfds(monkeypatch):
    """TFDS's random-example mock, plus what it leaves out: the dataset counts as prepared."""
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    array_record = tfds.core.FileFormat.ARRAY_RECORD
    monkeypatch.setattr(tfds.core.DatasetInfo, "file_format", property(lambda self: array_record))
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


class SessionCache:
    """Things built once per test session, on disk, shared by the session's xdist workers.

    `get(name, build)` calls `build(folder)` (which fills the new folder and returns something
    JSON can hold) in the first worker that asks; the others wait on a file lock and get the
    same folder and the stored result. A build that failed is retried by the next worker that
    asks (and fails there again, with its own error)."""

    def __init__(self, root):
        self.root = root
        os.makedirs(root, exist_ok=True)

    def get(self, name, build):
        folder = os.path.join(self.root, name)
        result_path = folder + ".json"
        with open(folder + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.exists(result_path):
                with open(result_path) as f:
                    return folder, json.load(f)
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            result = build(folder)
            with open(result_path + ".tmp", "w") as f:
                json.dump(result, f)
            os.replace(result_path + ".tmp", result_path)
            return folder, result


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """The session's SessionCache. Each xdist worker's base temporary folder is inside one made
    for this test run (shared by its workers alone); without xdist the base folder itself."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return SessionCache(str(root / "session-cache"))


@pytest.fixture(scope="session")
def digits_run(session_cache):
    """(workdir, final metrics) of the tiny digits run (TINY_DIGITS), trained once per session."""
    from experiments.classification import train_and_evaluate
    from tests.experiments.helpers import TINY_DIGITS, load_config

    def build(folder):
        return train_and_evaluate(
            load_config("classification/simple_cnn_digits.py", **TINY_DIGITS), f"{folder}/run"
        )

    folder, final = session_cache.get("digits_run", build)
    return f"{folder}/run", final


@pytest.fixture(scope="session")
def shapes_detector_run(session_cache):
    """(workdir, final metrics) of the tests' tiny shapes RetinaNet (TINY_SHAPES), trained once
    per session: the run tests/experiments/test_detection.py's `trained` fixture builds (the same
    session-cache entry and config), which the serving and compression tests reuse."""
    from experiments import detection
    from tests.experiments.helpers import TINY_SHAPES, load_config

    def build(folder):
        config = load_config("detection/retinanet_shapes.py", **TINY_SHAPES)
        return detection.train_and_evaluate(config, f"{folder}/run")

    folder, final = session_cache.get("shapes_retinanet_run", build)
    return f"{folder}/run", final


@pytest.fixture(scope="session")
def shapes_detector_bundle(session_cache, shapes_detector_run):
    """The session's tiny shapes RetinaNet (shapes_detector_run) exported in this process with
    buckets 1-2 for the CPU, as `jaxvision export --max_batch=2 --platforms=cpu` writes it:
    the bundle the detection and serving tests share."""
    workdir, _ = shapes_detector_run

    def build(folder):
        from jaxvision import bundle
        from jaxvision.predictor import Predictor

        out = f"{folder}/bundle"
        predictor = Predictor.from_workdir(workdir, max_batch=2)
        source = {
            "workdir": workdir,
            "step": predictor.step,
            "ema": predictor.variables is predictor.ema_variables,
            "metrics": bundle.last_eval(workdir),
        }
        bundle.write(predictor, out, platforms=("cpu",), source=source)
        return out

    return session_cache.get("shapes_detector_bundle", build)[1]
