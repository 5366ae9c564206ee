"""The progress line: percentages, throughput and ETA that leave the compiling first step out."""

import pytest

from jaxvision.train import reporting
from jaxvision.train.reporting import MetricsLog


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(reporting.time, "perf_counter", clock)
    return clock


def test_first_step_compile_stays_out_of_throughput_and_eta(tmp_path, clock, capsys):
    log = MetricsLog(str(tmp_path), total_steps=60, tensorboard=False)
    log.start_timer(0)
    clock.now += 10.0  # step 1: compiling
    log.first_step_done(1)
    clock.now += 9 * 0.1  # steps 2..10 at 0.1 s each
    img_per_s, seconds_per_step = log.throughput(10, global_batch_size=32)
    assert seconds_per_step == pytest.approx(0.1) and img_per_s == pytest.approx(320)
    log.progress(10, 0.5, img_per_s, seconds_per_step)
    clock.now += 30 * 0.2  # the next window: steps 11..40 at 0.2 s
    img_per_s, seconds_per_step = log.throughput(40, global_batch_size=32)
    assert seconds_per_step == pytest.approx(0.2)
    log.progress(40, 0.25, img_per_s, seconds_per_step)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "step 10/60 (17%) loss 0.5000 320 img/s ETA 0:00:05",
        "step 40/60 (67%) loss 0.2500 160 img/s ETA 0:00:04",
    ]


def test_a_log_line_at_the_first_step_reports_that_step(tmp_path, clock):
    log = MetricsLog(str(tmp_path), total_steps=5, tensorboard=False)
    log.start_timer(0)
    clock.now += 4.0
    log.first_step_done(1)
    assert log.throughput(1, global_batch_size=8) == (2.0, 4.0)


def test_percent_reaches_100_only_at_the_end(tmp_path, clock, capsys):
    log = MetricsLog(str(tmp_path), total_steps=1000, tensorboard=False)
    log.progress(999, 0.1, 1.0, 0.1)
    log.progress(1000, 0.1, 1.0, 0.1)
    assert [line.split()[2] for line in capsys.readouterr().err.splitlines()] == ["(99%)", "(100%)"]


def test_plural():
    assert reporting.plural(1, "device") == "1 device"
    assert reporting.plural(8, "device") == "8 devices"
    assert reporting.plural(1000, "step") == "1,000 steps"
