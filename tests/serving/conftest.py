"""The served models the serving tests share (a classifier and a detector), and their servers.

The tests that use a server run in one xdist worker (ONE_WORKER in tests/conftest.py), so each
server starts once per test session; the bundles are built once per session too (the session
cache)."""

import pytest

from tests.experiments.helpers import TINY_SHAPES, load_config, run_tool
from tests.serving.helpers import serve


@pytest.fixture(scope="session")
def digits_bundle(session_cache, digits_run):
    """The session's tiny digits run (tests/conftest.py), exported with buckets 1-8."""
    workdir, _ = digits_run

    def build(folder):
        out = f"{folder}/bundle"
        run_tool("export", f"--workdir={workdir}", f"--out={out}", "--max_batch=8", check=True)
        return out

    return session_cache.get("digits_bundle", build)[1]


@pytest.fixture(scope="session")
def server(digits_bundle):
    """(base url, bundle path): the tiny digits bundle served with small limits the bad-input
    tests cross."""
    flags = ["--max_batch_size=8", "--max_delay_ms=30", "--max_images=4"]
    flags += ["--max_body_mb=0.25", "--max_pixels=250000"]
    process, url = serve(digits_bundle, *flags)
    yield url, digits_bundle
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="session")
def detector_bundle(shapes_detector_bundle):
    """(bundle path, shapes config): the session's tiny shapes RetinaNet (tests/conftest.py:
    four steps, every box kept up to 20 per image), exported with buckets 1-2."""
    return shapes_detector_bundle, load_config("detection/retinanet_shapes.py", **TINY_SHAPES)


@pytest.fixture(scope="session")
def detector_server(models_server, detector_bundle):
    """(base url, bundle path, shapes config): the tiny detector as models_server serves it,
    named "shapes": the routes take ?model=shapes (one server process for both models)."""
    url, _, out = models_server
    _, config = detector_bundle
    return url, out, config


@pytest.fixture(scope="session")
def models_server(digits_bundle, detector_bundle):
    """(base url, digits bundle, detector bundle): one server of three models, the digits
    bundle as "digits" versions 1 and 2 and the detector as "shapes" (whose tests ask for
    ?model=shapes)."""
    out, _ = detector_bundle
    process, url = serve(
        f"digits={digits_bundle}",
        f"--bundle=digits@2={digits_bundle}",
        f"--bundle=shapes={out}",
        "--max_batch_size=2",
        "--max_images=4",
    )
    yield url, digits_bundle, out
    process.terminate()
    process.wait(timeout=20)
