"""Weights by name from the Hugging Face hub (`hf-hub:ORG/NAME[@REVISION]`), from an offline
cache laid out as huggingface_hub lays it out: no network is used."""

import hashlib
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxvision import models, weights
from jaxvision.errors import UserError
from jaxvision.models import image_text
from jaxvision.predictor import Predictor
from jaxvision.weights import hub

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import constants as hub_constants  # noqa: E402
from huggingface_hub import errors as hub_errors  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# A timm config.json as timm's push_to_hf_hub writes it (fields jaxvision reads, and some more).
TINY_VIT_CONFIG = {
    "architecture": "vit_tiny_patch16_32",
    "num_classes": 10,
    "num_features": 192,
    "global_pool": "token",
    "pretrained_cfg": {
        "tag": "test",
        "input_size": [3, 32, 32],
        "interpolation": "bicubic",
        "crop_pct": 0.9,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "num_classes": 10,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    },
}


def lay_out_cache(cache, repo: str, files: dict[str, bytes], ref: str = "main") -> str:
    """A hub cache entry as huggingface_hub writes one: the files' contents in blobs/ (named by
    their sha256, as LFS files are), snapshots/<commit>/<file> links to them, refs/<ref> naming
    the commit. Returns the snapshot folder."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot, blobs = folder / "snapshots" / COMMIT, folder / "blobs"
    for path in (folder / "refs", snapshot, blobs):
        path.mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(COMMIT)
    for name, data in files.items():
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return str(snapshot)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty hub cache that huggingface_hub uses offline (HF_HUB_OFFLINE=1, HF_HUB_CACHE)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # The library reads both once, when imported: this process imported it already.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def _fresh(name, channels=3, **options):
    """The model's variables as zeros of their shapes (no init is run)."""
    model = models.build(name, **options)
    size = options.get("image_size", 32)
    image = jax.ShapeDtypeStruct((1, size, size, channels), np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), image)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _random_file(path, name, channels=3, seed=0, **options) -> str:
    """Random weights for the zoo model `name` saved with the reference's (torch) names."""
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(
        lambda x: rng.normal(0, 0.02, x.shape).astype(x.dtype), _fresh(name, channels, **options)
    )
    weights.save_safetensors(str(path), weights.export_weights(name, variables))
    return str(path)


@pytest.fixture(scope="module")
def tiny_vit_file(tmp_path_factory):
    """A randomly initialised vit_ti16 (32 px, 10 classes) saved with timm's names."""
    folder = tmp_path_factory.mktemp("vit")
    return _random_file(folder / "model.safetensors", "vit_ti16", num_classes=10, image_size=32)


def _tiny_vit_repo(cache, path, repo="someone/tiny-vit", ref="main"):
    with open(path, "rb") as f:
        data = f.read()
    config = json.dumps(TINY_VIT_CONFIG).encode()
    return lay_out_cache(cache, repo, {"model.safetensors": data, "config.json": config}, ref)


def test_weights_by_hub_name_equal_the_same_file_by_path(offline_cache, tiny_vit_file):
    _tiny_vit_repo(offline_cache, tiny_vit_file)
    fresh = _fresh("vit_ti16", num_classes=10, image_size=32)
    by_path, kept_path = weights.load_weights(tiny_vit_file, "vit_ti16", fresh)
    for source in ("hf-hub:someone/tiny-vit", f"hf-hub:someone/tiny-vit@{COMMIT}"):
        by_name, kept = weights.load_weights(source, "vit_ti16", fresh)
        assert kept == kept_path == []
        jax.tree.map(np.testing.assert_array_equal, by_name, by_path)

    found = hub.fetch("hf-hub:someone/tiny-vit")
    assert found.path.startswith(str(offline_cache))
    assert (found.architecture, found.model, found.model_kwargs) == (
        "vit_tiny_patch16_32",
        "vit_ti16",
        {"image_size": 32},
    )


def test_a_predictor_from_a_hub_name_takes_model_and_preprocessing_from_its_config(
    offline_cache, tiny_vit_file
):
    _tiny_vit_repo(offline_cache, tiny_vit_file)
    predictor = Predictor.from_weights("hf-hub:someone/tiny-vit")
    record = predictor.record
    assert (record["model"], record["model_kwargs"], record["num_classes"]) == (
        "vit_ti16",
        {"image_size": 32},
        10,
    )
    assert (record["image_size"], record["crop_ratio"]) == (32, 0.9)
    assert record["mean"] == [127.5] * 3 and record["std"] == [63.75] * 3
    by_path = Predictor.from_weights(tiny_vit_file, "vit_ti16", image_size=32)
    jax.tree.map(np.testing.assert_array_equal, predictor.variables, by_path.variables)
    probs = predictor.predict([np.full((40, 48, 3), 128, np.uint8)])["probs"]
    assert probs.shape == (1, 10) and abs(float(probs.sum()) - 1) < 1e-5


def test_a_branch_revision_reads_its_ref(offline_cache, tiny_vit_file):
    _tiny_vit_repo(offline_cache, tiny_vit_file, ref="v1")
    assert hub.fetch("hf-hub:someone/tiny-vit@v1").model == "vit_ti16"
    with pytest.raises(UserError, match=r"^hf-hub:someone/tiny-vit: HF_HUB_OFFLINE is set and"):
        hub.fetch("hf-hub:someone/tiny-vit")  # no refs/main in the cache


@pytest.mark.slow
def test_init_from_a_hub_name_trains_from_its_weights(offline_cache, tmp_path, capsys):
    """An experiment with --config.init_from=hf-hub:...: the run starts from the repository's
    weights (timm's "resnet18" is jaxvision's, torchvision's layout)."""
    from experiments.classification import train_and_evaluate
    from jaxvision.checkpoint import load_variables
    from tests.experiments.helpers import load_config

    options = {"num_classes": 10, "stem": "small", "width": 16}
    path = _random_file(tmp_path / "resnet18.safetensors", "resnet18", 1, **options)
    with open(path, "rb") as f:
        files = {"model.safetensors": f.read(), "config.json": b'{"architecture": "resnet18"}'}
    lay_out_cache(offline_cache, "someone/digits-resnet18", files)

    config = load_config(
        "classification/resnet18_digits.py",
        init_from="hf-hub:someone/digits-resnet18",
        total_steps=1,  # the program of tests/experiments/test_init_from.py's ONE_STEP runs
        learning_rate=0.0,
        warmup_epochs=0.0,
        eval_every_steps=0,
        checkpoint_every_steps=1,
    )
    train_and_evaluate(config, str(tmp_path / "run"))
    assert "initialised resnet18 from hf-hub:someone/digits-resnet18" in capsys.readouterr().err
    trained, _ = load_variables(str(tmp_path / "run"))
    expected, _ = weights.load_weights(path, "resnet18", _fresh("resnet18", 1, **options))
    np.testing.assert_array_equal(
        trained["params"]["conv1"]["kernel"], expected["params"]["conv1"]["kernel"]
    )


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"architecture": "vit_small_patch16_224"}, ("vit_s16", {})),
        (
            {"architecture": "vit_base_patch16_384.augreg_in21k_ft_in1k"},
            ("vit_b16", {"image_size": 384}),
        ),
        ({"architecture": "vit_gigantic_patch14_224"}, ("vit_bigg14", {})),
        ({"architecture": "vit_base_r50_s16_384"}, ("vit_b16_r50", {"image_size": 384})),
        ({"architecture": "deit_small_patch16_224"}, ("vit_s16", {})),
        ({"architecture": "mixer_b16_224"}, ("mixer_b16", {})),
        ({"architecture": "resnet50.a1_in1k"}, ("resnet50", {})),
        ({"pretrained_cfg": {"architecture": "resnet101"}}, ("resnet101", {})),
        # Layouts the zoo lacks: no mapping, the caller names the model.
        ({"architecture": "resnet50d"}, (None, {})),
        ({"architecture": "vit_base_patch16_clip_224"}, (None, {})),
        ({"architecture": "vit_base_patch16_siglip_224"}, (None, {})),
        ({"architectures": ["ViTForImageClassification"]}, (None, {})),
        ({}, (None, {})),
    ],
)
def test_architecture_names_map_to_zoo_models(config, expected):
    _, model, kwargs = hub.zoo_model(config)
    assert (model, kwargs) == expected
    if model is not None:
        assert model in weights.importable_models()


def test_the_mapping_names_the_architecture_it_read():
    assert hub.zoo_model({"architectures": ["ViTForImageClassification"]})[0] == (
        "ViTForImageClassification (transformers)"
    )


def test_a_repository_of_another_architecture_is_refused_by_name(offline_cache, tiny_vit_file):
    _tiny_vit_repo(offline_cache, tiny_vit_file)
    with pytest.raises(UserError) as raised:
        weights.load_weights("hf-hub:someone/tiny-vit", "resnet18", {})
    assert str(raised.value) == (
        "hf-hub:someone/tiny-vit holds vit_tiny_patch16_32, which is jaxvision's vit_ti16, not "
        "resnet18: pass --config.model=vit_ti16 (or model_name='vit_ti16')"
    )


def test_an_unknown_architecture_asks_for_the_model(offline_cache):
    files = {"model.safetensors": b"", "config.json": b'{"architecture": "convnext_tiny"}'}
    lay_out_cache(offline_cache, "someone/convnext", files)
    with pytest.raises(UserError) as raised:
        Predictor.from_weights("hf-hub:someone/convnext")
    assert str(raised.value).startswith(
        "hf-hub:someone/convnext holds convnext_tiny, which jaxvision maps to no zoo model: name "
        "the zoo model with the same layout (e.g. model='vit_b16')"
    )


def test_a_repository_not_in_the_offline_cache_says_what_to_do(offline_cache):
    with pytest.raises(UserError) as raised:
        hub.fetch("hf-hub:timm/resnet50.a1_in1k")
    message = str(raised.value)
    assert message.startswith(
        "hf-hub:timm/resnet50.a1_in1k: HF_HUB_OFFLINE is set and timm/resnet50.a1_in1k is not in "
        f"the hub cache ({offline_cache}): connect and run once to download it"
    )
    assert "\n" not in message


def test_a_repository_of_pickles_only_is_refused(offline_cache):
    lay_out_cache(offline_cache, "someone/old", {"pytorch_model.bin": b"x", "config.json": b"{}"})
    with pytest.raises(UserError, match=r"^hf-hub:someone/old has no \.safetensors or \.npz "):
        hub.fetch("hf-hub:someone/old")
    with pytest.raises(UserError, match=r"only pickles \(pytorch_model\.bin\), which can run"):
        hub.fetch("hf-hub:someone/old")


def test_a_big_vision_npz_is_read_from_the_hub(offline_cache):
    lay_out_cache(offline_cache, "someone/bv", {"ViT-Ti_16.npz": b"npz", "README.md": b"#"})
    found = hub.fetch("hf-hub:someone/bv")
    assert found.path.endswith("ViT-Ti_16.npz") and found.model is None and found.config == {}


def test_several_weight_files_ask_for_one(offline_cache):
    lay_out_cache(offline_cache, "someone/two", {"a.safetensors": b"", "b.safetensors": b""})
    with pytest.raises(UserError, match=r"holds several weight files \(a.safetensors, b.safe"):
        hub.fetch("hf-hub:someone/two")


@pytest.mark.parametrize("source", ["hf-hub:resnet50", "hf-hub:a/b/c", "hf-hub:a/b@"])
def test_a_malformed_hub_name_is_refused(source):
    with pytest.raises(UserError, match=rf"^{source} is not a hub name: write hf-hub:ORG/NAME"):
        hub.parse(source)


def _raising(error_type, message="404 Client Error"):
    """A function raising huggingface_hub's `error_type` (built without an HTTP response)."""
    error = error_type.__new__(error_type)
    Exception.__init__(error, message)

    def fail(*args, **kwargs):
        raise error

    return fail


@pytest.mark.parametrize(
    "error_type, expected",
    [
        (
            hub_errors.RepositoryNotFoundError,
            "hf-hub:someone/nothing@v9: no repository someone/nothing on the Hugging Face hub (or "
            "it is private: log in with hf auth login): check the name",
        ),
        (
            hub_errors.GatedRepoError,
            "hf-hub:someone/nothing@v9 is gated: accept its terms at "
            "https://huggingface.co/someone/nothing and log in (hf auth login, or set HF_TOKEN)",
        ),
        (
            hub_errors.RevisionNotFoundError,
            "hf-hub:someone/nothing@v9: someone/nothing has no revision 'v9': check it at "
            "https://huggingface.co/someone/nothing",
        ),
        (
            hub_errors.HfHubHTTPError,
            "hf-hub:someone/nothing@v9: cannot fetch from the Hugging Face hub (404 Client Error)",
        ),
    ],
)
def test_errors_from_the_hub_are_one_line(monkeypatch, error_type, expected):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", _raising(error_type))
    with pytest.raises(UserError) as raised:
        hub.fetch("hf-hub:someone/nothing@v9")
    assert str(raised.value) == expected


def test_no_network_falls_back_to_the_cache(offline_cache, tiny_vit_file, monkeypatch):
    """Online mode without a network: the cached snapshot is used, as offline."""
    _tiny_vit_repo(offline_cache, tiny_vit_file)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", _raising(ConnectionError, "no net"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _cached_download(offline_cache))
    assert hub.fetch("hf-hub:someone/tiny-vit").model == "vit_ti16"


def _cached_download(cache):
    """hf_hub_download as it behaves without a network: from the cache only."""
    original = huggingface_hub.hf_hub_download

    def download(repo, filename, revision=None):
        return original(
            repo, filename, revision=revision, cache_dir=str(cache), local_files_only=True
        )

    return download


def test_a_predictor_needs_a_classifier_in_the_weights(tmp_path, tiny_vit_file):
    tensors = weights.load_safetensors(tiny_vit_file)
    path = str(tmp_path / "no_head.safetensors")
    weights.save_safetensors(path, {k: v for k, v in tensors.items() if not k.startswith("head")})
    with pytest.raises(UserError, match=r"^the weights have no classifier \(head\.bias\)"):
        Predictor.from_weights(path, "vit_ti16")
    with pytest.raises(UserError, match=r"^name the zoo model .* holds: Predictor\.from_weights"):
        Predictor.from_weights(path)


def test_a_detector_reads_a_classifier_repository_as_its_backbone(offline_cache, tiny_vit_file):
    """Detectors import classification backbones (timm's resnet50 into retinanet_resnet50_fpn):
    the architecture check leaves them to the detector's own import."""
    with open(tiny_vit_file, "rb") as f:
        data = f.read()
    files = {"model.safetensors": data, "config.json": b'{"architecture": "resnet50"}'}
    lay_out_cache(offline_cache, "someone/r50", files)
    tensors = weights.read_tensors("hf-hub:someone/r50", "retinanet_resnet50_fpn")
    assert set(tensors) == set(weights.load_safetensors(tiny_vit_file))
    with pytest.raises(UserError, match=r"which is jaxvision's resnet50, not resnet34: pass"):
        weights.read_tensors("hf-hub:someone/r50", "resnet34")


@pytest.mark.parametrize("name", ["ConnectError", "ConnectionError", "ConnectTimeout"])
def test_the_http_clients_no_network_errors_are_recognised(name):
    """httpx's ConnectError / ConnectTimeout, requests' ConnectionError (none is the builtin)."""
    bases = {"ConnectTimeout": (type("TimeoutException", (Exception,), {}),)}
    error = type(name, bases.get(name, (OSError,)), {})("down")
    assert hub._is_connection_error(error)
    assert not hub._is_connection_error(ValueError("x"))


def test_an_image_text_model_reads_a_transformers_repository(offline_cache):
    # A SiglipModel repository as transformers saves one: model.safetensors in its own names.
    path = os.path.join(os.path.dirname(__file__), "fixtures", "siglip_hf.safetensors")
    with open(path, "rb") as f:
        files = {"model.safetensors": f.read()}
    files["config.json"] = json.dumps({"architectures": ["SiglipModel"]}).encode()
    lay_out_cache(offline_cache, "someone/tiny-siglip", files)
    model = image_text.build("siglip_tiny", vocab_size=64)
    abstract = jax.eval_shape(
        model.init, jax.random.key(0), np.zeros((1, 32, 32, 3)), np.zeros((1, 16), np.int32)
    )
    abstract = nn.meta.unbox(abstract)
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    by_name, _ = weights.load_weights("hf-hub:someone/tiny-siglip", "siglip_tiny", fresh)
    by_path, _ = weights.load_weights(path, "siglip_tiny", fresh)
    jax.tree.map(np.testing.assert_array_equal, by_name, by_path)
