"""Full-size parity with timm: a random timm model's logits equal jaxvision's after import.

Needs torch and timm (skipped otherwise, e.g. in CI). Run with
`/tmp/venv-torch/bin/python -m pytest -q -s tests/weights/test_parity_timm.py`; `-s` prints the
measured max |logits difference| per model.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from jaxvision import models, weights  # noqa: E402
from jaxvision.weights.common import load_safetensors, save_safetensors  # noqa: E402

# jaxvision name -> timm name
PAIRS = {
    "vit_b16": "vit_base_patch16_224",
    "mixer_b16": "mixer_b16_224",
    "vit_b16_r50": "vit_base_r50_s16_224",
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_logits_match_timm(tmp_path, name):
    torch.manual_seed(0)
    reference = timm.create_model(PAIRS[name], pretrained=False, num_classes=1000).eval()
    with torch.no_grad():
        # timm zero-initialises some heads (Mixer); noise makes every logit depend on the weights.
        reference.head.weight.add_(0.02 * torch.randn_like(reference.head.weight))
        x = torch.randn(2, 3, 224, 224)
        expected = reference(x).numpy()
    path = str(tmp_path / f"{name}.safetensors")
    save_safetensors(path, {k: v.numpy() for k, v in reference.state_dict().items()})

    model = models.build(name, num_classes=1000)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    abstract = nn.meta.unbox(abstract)  # logical-partitioning boxes, as the train state strips
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    variables, kept = weights.import_weights(name, load_safetensors(path), fresh)
    assert kept == []
    logits = jax.jit(model.apply)(variables, jnp.asarray(x.permute(0, 2, 3, 1).numpy()))
    diff = float(np.abs(np.asarray(logits) - expected).max())
    scale = float(np.abs(expected).max())
    print(
        f"\n{name} vs {PAIRS[name]}: max |logits diff| {diff:.3g}, max |logit| {scale:.3g}", end=""
    )
    assert scale > 1e-2  # the comparison is not between zeros
    assert diff < 1e-4
