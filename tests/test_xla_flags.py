"""The launchers' XLA flag defaults: added to the user's XLA_FLAGS, never over them."""

import os

from jaxvision import xla_flags

FLAG = "xla_gpu_enable_latency_hiding_scheduler"


def test_defaults_are_added_to_the_users_flags():
    assert xla_flags.with_defaults("") == f"--{FLAG}=true"
    assert xla_flags.with_defaults(" --xla_force_host_platform_device_count=8 ") == (
        f"--xla_force_host_platform_device_count=8 --{FLAG}=true"
    )


def test_the_users_value_wins():
    assert xla_flags.with_defaults(f"--{FLAG}=false") == f"--{FLAG}=false"
    assert xla_flags.with_defaults(f"-{FLAG}=false --xla_dump_to=/tmp/x") == (
        f"-{FLAG}=false --xla_dump_to=/tmp/x"
    )


def test_apply_sets_the_environment(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    xla_flags.apply()
    assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x --{FLAG}=true"
    monkeypatch.delenv("XLA_FLAGS")
    xla_flags.apply()
    assert os.environ["XLA_FLAGS"] == f"--{FLAG}=true"
