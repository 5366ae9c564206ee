"""Image-text weights from big_vision, open_clip and Hugging Face: a tiny reference model with
random weights (tests/weights/fixtures/make_big_vision_siglip_fixture.py and
make_image_text_fixtures.py) gives the same embeddings and logits as jaxvision's after import,
and files that do not fit give one-line errors naming the first tensor that does not.
Run with `-s` to print the measured max |difference| per reference."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import weights
from jaxvision.errors import UserError
from jaxvision.models import image_text
from jaxvision.weights.common import load_safetensors, save_safetensors

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
# fixture -> (model, options, weight file's suffix); the references' vocab is 64 tokens.
CASES = {
    "siglip_big_vision": ("siglip_tiny", {"vocab_size": 64}, ".npz"),
    "siglip_hf": ("siglip_tiny", {"vocab_size": 64}, ".safetensors"),
    "clip_open_clip": ("clip_tiny", {"vocab_size": 64}, ".safetensors"),
    "clip_hf": ("clip_tiny", {"vocab_size": 64, "activation": "quick_gelu"}, ".safetensors"),
}


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


def fresh_variables(model, image_size: int = 32) -> dict:
    """Zeros shaped as the model's parameters, without compiling an init."""
    abstract = jax.eval_shape(
        model.init,
        jax.random.key(0),
        jnp.zeros((1, image_size, image_size, 3)),
        jnp.zeros((1, 16), jnp.int32),
    )
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nn.meta.unbox(abstract))


@pytest.mark.parametrize("case", sorted(CASES))
def test_embeddings_and_logits_match_the_reference(case):
    name, options, suffix = CASES[case]
    expected = np.load(fixture(f"{case}_expected.npz"))
    model = image_text.build(name, **options)
    variables, kept = weights.load_weights(fixture(case + suffix), name, fresh_variables(model))
    assert kept == []
    out = jax.jit(model.apply)(variables, expected["images"], expected["tokens"])
    diffs = {k: float(np.abs(np.asarray(out[k]) - expected[k]).max()) for k in ("image", "text")}
    diffs["logits"] = float(np.abs(np.asarray(out["logits"]) - expected["logits"]).max())
    print(f"\n{case} vs {name}: max |diff| " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    assert float(np.std(expected["logits"])) > 0.1  # the comparison is not between constants
    # float32 noise: unit-norm embeddings within ~10 ulps, logits (|logit| <= ~14) within 1e-5.
    assert diffs["image"] < 1e-6 and diffs["text"] < 1e-6
    assert diffs["logits"] < 1e-5


def test_quick_gelu_matters_for_openai_style_weights():
    # HF's CLIP (quick GELU) read into the exact-GELU default moves the embeddings visibly:
    # the option is needed, and the parity test above would catch a wrong one.
    expected = np.load(fixture("clip_hf_expected.npz"))
    model = image_text.build("clip_tiny", vocab_size=64)
    variables, _ = weights.load_weights(
        fixture("clip_hf.safetensors"), "clip_tiny", fresh_variables(model)
    )
    # The whole model, as clip_open_clip's case runs it: the same program, compiled once.
    out = jax.jit(model.apply)(variables, expected["images"], expected["tokens"])
    assert float(np.abs(np.asarray(out["image"]) - expected["image"]).max()) > 1e-3


def test_scanned_big_vision_encoders_import_as_blocks(tmp_path):
    # big_vision's scan=True stores each encoder's blocks stacked under `encoderblock`.
    with np.load(fixture("siglip_big_vision.npz")) as npz:
        arrays = dict(npz)
    scanned = {}
    for name in list(arrays):
        head, sep, tail = name.partition("/encoderblock_")
        if sep:
            index, rest = tail.split("/", 1)
            scanned.setdefault(f"{head}/encoderblock/{rest}", {})[int(index)] = arrays.pop(name)
    arrays |= {k: np.stack([v[i] for i in sorted(v)]) for k, v in scanned.items()}
    np.savez(tmp_path / "scanned.npz", **arrays)
    model = image_text.build("siglip_tiny", vocab_size=64)
    plain, _ = weights.load_weights(
        fixture("siglip_big_vision.npz"), "siglip_tiny", fresh_variables(model)
    )
    stacked, _ = weights.load_weights(
        str(tmp_path / "scanned.npz"), "siglip_tiny", fresh_variables(model)
    )
    jax.tree.map(np.testing.assert_array_equal, plain, stacked)


def test_position_embedding_is_resampled_for_another_image_size():
    model = image_text.build("siglip_tiny", vocab_size=64, image_size=16)
    variables, _ = weights.load_weights(
        fixture("siglip_hf.safetensors"), "siglip_tiny", fresh_variables(model, 16)
    )
    assert variables["params"]["img"]["pos_embed"].shape == (1, 4, 64)


def _error(path: str, name: str, **options) -> str:
    model = image_text.build(name, **options)
    with pytest.raises(UserError) as error:
        weights.load_weights(path, name, fresh_variables(model))
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_file_for_another_size_names_its_first_misfit():
    assert _error(fixture("clip_open_clip.safetensors"), "clip_tiny") == (
        "tensor 'token_embedding.weight' of the open_clip file has shape (64, 64), clip_tiny "
        "expects (1024, 64) for txt/token_embed/embedding: pick the model size (or options) the "
        "file was trained with"
    )


def test_a_clip_file_does_not_load_into_siglip():
    assert _error(fixture("clip_hf.safetensors"), "siglip_tiny", vocab_size=64) == (
        "tensor 'vision_model.embeddings.class_embedding' of the Hugging Face file has no place "
        "in siglip_tiny (it would be img/cls_token): is the file for another model, or does "
        "siglip_tiny need other options?"
    )


def test_unknown_and_missing_tensors(tmp_path):
    tensors = load_safetensors(fixture("clip_open_clip.safetensors"))
    extra = {**tensors, "visual.transformer.resblocks.0.ls_1.gamma": np.ones(64, np.float32)}
    save_safetensors(str(tmp_path / "extra.safetensors"), extra)
    assert _error(str(tmp_path / "extra.safetensors"), "clip_tiny", vocab_size=64) == (
        "tensor 'visual.transformer.resblocks.0.ls_1.gamma' of the open_clip file has no place in "
        "jaxvision's image-text models (another architecture or an unsupported variant?)"
    )
    missing = {k: v for k, v in tensors.items() if not k.startswith("ln_final.")}
    save_safetensors(str(tmp_path / "missing.safetensors"), missing)
    assert _error(str(tmp_path / "missing.safetensors"), "clip_tiny", vocab_size=64) == (
        "the open_clip file has no weights for clip_tiny's txt/norm/bias (and 1 more): is it for "
        "another model?"
    )


def test_a_classifier_file_is_no_image_text_layout():
    message = _error(fixture("vit_tiny.safetensors"), "clip_tiny")
    assert message.startswith("the weight file (blocks.0.attn.proj.bias, ")
    assert message.endswith(
        "is in none of the image-text layouts jaxvision reads (big_vision, Hugging Face, "
        "open_clip): give a big_vision .npz or an open_clip / Hugging Face .safetensors"
    )


def test_init_from_a_big_vision_file_as_the_loop_does(capsys):
    # `--config.init_from=FILE`: the loop hands the run's fresh model to init_model_from.
    from jaxvision.state import ModelState
    from jaxvision.train.init_from import init_model_from

    model = image_text.build("siglip_tiny", vocab_size=64)
    path = fixture("siglip_big_vision.npz")
    fresh = ModelState(fresh_variables(model), None, np.int32(0), np.zeros(2, np.uint32))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    loaded = init_model_from(path, "siglip_tiny", fresh, device, new_head=False, heads=[])
    assert f"initialised siglip_tiny from {path}\n" in capsys.readouterr().err
    with np.load(path) as npz:
        np.testing.assert_array_equal(
            loaded.params["txt"]["proj"]["kernel"], npz["params/txt/head/kernel"]
        )
        np.testing.assert_array_equal(loaded.params["b"], npz["params/b"])
