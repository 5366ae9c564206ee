"""The image-text task's loss: the model's own contrastive loss (SigLIP's sigmoid, CLIP's
softmax) or the one the options name, on the towers' embeddings, with t and b logged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models import image_text
from jaxvision.ops.contrastive import sigmoid_loss, softmax_loss
from jaxvision.tasks.image_text import ImageText, ImageTextOptions

SMALL = dict(image_depth=1, text_depth=1, vocab_size=32, context_length=8)
STATS = dict(mean=(127.5,) * 3, std=(127.5,) * 3)


def test_each_family_trains_with_its_own_loss_unless_told():
    clip = image_text.build("clip_tiny", **SMALL)
    assert ImageText(clip, **STATS).loss_name == "softmax"
    assert ImageText(clip, **STATS, options=ImageTextOptions("sigmoid")).loss_name == "sigmoid"
    with pytest.raises(ValueError, match="unknown image-text loss 'hinge'"):
        ImageTextOptions("hinge")


@pytest.mark.slow
def test_loss_is_the_contrastive_loss_of_the_embeddings():
    model = image_text.build("siglip_tiny", **SMALL)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
        "tokens": rng.integers(1, 32, (4, 8)).astype(np.int32),
    }
    own, softmax = (ImageText(model, **STATS, options=ImageTextOptions(o)) for o in ("", "softmax"))
    variables = jax.jit(own.init_variables(batch))(jax.random.PRNGKey(0))
    inputs, _ = own.prepare(batch, None, {})
    key = jax.random.PRNGKey(1)

    @jax.jit  # one program: a compile takes most of this test's time
    def losses(params):
        out = model.apply({"params": params}, inputs["image"], inputs["tokens"])
        return (
            own.loss(params, {}, inputs, key, {}),
            softmax.loss(params, {}, inputs, key, {}),
            out,
        )

    (loss, (metrics, mutable)), (soft, (soft_metrics, _)), out = losses(variables["params"])
    assert mutable == {}
    expected = sigmoid_loss(out["image"], out["text"], out["t"], out["b"])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(soft, softmax_loss(out["image"], out["text"], out["t"]), rtol=1e-6)
    # Logged: the logit scale exp(t) (10 at init) and the bias (-10); no bias under softmax.
    assert float(metrics["t"]) == pytest.approx(float(jnp.exp(out["t"]))) == pytest.approx(10)
    assert float(metrics["b"]) == -10.0
    assert set(soft_metrics) == {"t"}
