"""The GAN experiment end to end: metrics, pictures, exact resume of both models, samples."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from experiments import gan
from jaxvision.checkpoint import load_model
from jaxvision.commands.generate import generate
from jaxvision.errors import UserError
from tests.experiments.helpers import (
    jaxvision_in_process,
    load_config,
    read_metrics,
    without_timings,
)

TINY = dict(
    total_steps=8,
    eval_every_steps=4,
    log_every_steps=4,
    checkpoint_every_steps=4,
    batch_size=32,
    g_width=4,
    d_width=4,
    latent_dim=16,
)


def _config(**overrides):
    config = load_config("generation/dcgan_digits.py", **{**TINY, **overrides})
    config.evals.eval.split = "test"  # 360 real images against 360 fakes: a quick pass
    return config


def _models(workdir):
    return {name: load_model(workdir, None, name)[0] for name in ("generator", "discriminator")}


@pytest.mark.slow
def test_gan_run_logs_metrics_draws_pictures_and_resumes_exactly(tmp_path, capsys):
    workdir = str(tmp_path / "gan")
    final = gan.train_and_evaluate(_config(), workdir)
    assert final["step"] == 8
    for prefix in ("eval", "eval_ema"):
        assert {f"{prefix}/{k}" for k in ("fid", "kid", "kid_std", "cond_acc")} <= set(final)
        assert final[f"{prefix}/fid"] > 0 and 0 <= final[f"{prefix}/cond_acc"] <= 1
    records = read_metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == [4, 8]
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"} <= set(train[0])
    assert [r["step"] for r in records if "eval/fid" in r] == [4, 8]

    # A film: the same fixed latents at every evaluation, so the tiles move between steps.
    plots = os.path.join(workdir, "plots")
    film = [np.asarray(Image.open(os.path.join(plots, f"eval_samples_{s}.png"))) for s in (4, 8)]
    assert film[0].shape == film[1].shape == (2 + 8 * (64 + 2), 2 + 8 * (64 + 2))
    assert np.abs(film[0].astype(int) - film[1]).max() > 0
    strip = Image.open(os.path.join(plots, "eval_ema_interpolation_8.png"))
    assert strip.size == (2 + 10 * 66, 2 + 10 * 66)  # 10 steps x one row per digit
    assert np.asarray(strip)[2:66, 2:66].min() > 0  # drawn, not the other batches' zeros

    # Lose step 8; the rerun must reproduce it: both models, both optimizers, the EMA.
    before = _models(workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "8"))
    again = gan.train_and_evaluate(_config(), workdir)
    assert {k: v for k, v in again.items() if k != "elapsed_s"} == {
        k: v for k, v in final.items() if k != "elapsed_s"
    }
    assert without_timings(read_metrics(workdir)) == without_timings(records)
    after = _models(workdir)
    for name in before:
        for part in ("variables", "ema_params"):
            np.testing.assert_equal(after[name][part], before[name][part])

    # Samples of a given class, the same for the same seed; a bad label says what to do.
    images, labels, step = generate(workdir, 12, "3", seed=0)
    assert images.shape == (12, 32, 32, 1) and images.dtype == np.uint8 and step == 8
    assert (labels == 3).all()
    np.testing.assert_array_equal(generate(workdir, 12, "3", seed=0)[0], images)
    assert np.abs(generate(workdir, 12, "3", seed=1)[0].astype(int) - images).max() > 0
    with pytest.raises(UserError, match="--label=12 is not a class of this GAN: use 0..9"):
        generate(workdir, 4, "12", seed=0)
    out = tmp_path / "samples"
    code, stdout, stderr = jaxvision_in_process(
        capsys, "generate", f"--workdir={workdir}", "--num=10", f"--out={out}"
    )
    assert code == 0, stderr[-3000:]
    assert "wrote 10 samples of step 8" in stdout
    names = sorted(os.listdir(out))
    assert names[:2] == ["0000_class0.png", "0001_class1.png"] and "grid.png" in names


def test_bad_gan_configs_are_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match="DCGAN image_size must be 4 \\* 2\\^k"):
        gan.setup(_config(image_size=24))
    with pytest.raises(UserError, match="digits-FID features take 32x32 grey images"):
        gan.setup(_config(image_size=16))
    with pytest.raises(UserError, match="unknown gan_loss 'wgan'"):
        gan.setup(_config(gan_loss="wgan"))
    with pytest.raises(UserError, match="need pytorch-fid's weights"):
        gan.setup(_config(fid_features="inception"))
