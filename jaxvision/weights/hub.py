"""Pretrained weights by name from the Hugging Face hub: `hf-hub:ORG/NAME[@REVISION]`.

`huggingface_hub` downloads the repository's weight file and its `config.json` into its cache
(or finds them there: `HF_HUB_OFFLINE=1` never touches the network, `HF_HUB_CACHE` says where
the cache is). Only `.safetensors` and big_vision `.npz` files are read; a repository that holds
pickles only (`pytorch_model.bin`) is refused, as a local pickle is.

timm's `config.json` names its architecture (`"architecture": "vit_small_patch16_224"`);
`zoo_model` maps the timm names whose layout jaxvision's zoo shares to the zoo's name and options
(`vit_base_patch16_384` -> `vit_b16` with image_size 384). Other architectures still load when
the caller names the zoo model.
"""

import dataclasses
import os
import re

from jaxvision.errors import UserError

PREFIX = "hf-hub:"

# timm architecture (without its resolution suffix) -> zoo model. timm's DeiT (not distilled) is
# its ViT with DeiT's weights; timm's default ResNets have torchvision's layout and names.
_TIMM_VITS = {
    "vit_tiny_patch16": "vit_ti16",
    "vit_small_patch16": "vit_s16",
    "vit_base_patch16": "vit_b16",
    "vit_base_patch32": "vit_b32",
    "vit_large_patch16": "vit_l16",
    "vit_huge_patch14": "vit_h14",
    "vit_giant_patch14": "vit_g14",
    "vit_gigantic_patch14": "vit_bigg14",
    "vit_base_r50_s16": "vit_b16_r50",
    "deit_tiny_patch16": "vit_ti16",
    "deit_small_patch16": "vit_s16",
    "deit_base_patch16": "vit_b16",
    "mixer_b16": "mixer_b16",
}
_TIMM_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# Weight files in the order they are preferred: timm's, then any other safetensors / .npz.
_PREFERRED = ("model.safetensors",)
_PICKLES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclasses.dataclass(frozen=True)
class HubWeights:
    """A hub repository's weights in the local cache.

    path: the weight file; config: its config.json ({} when it has none); architecture: the
    architecture the config names (None when it names none); model / model_kwargs: the zoo model
    it maps to (None when jaxvision knows no mapping) and the options that fit it."""

    source: str
    path: str
    config: dict
    architecture: str | None
    model: str | None
    model_kwargs: dict


def is_hub_name(source) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def parse(source: str) -> tuple[str, str | None]:
    """`hf-hub:ORG/NAME[@REVISION]` -> ("ORG/NAME", REVISION or None)."""
    name, _, revision = source[len(PREFIX) :].partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name) or ("@" in source and not revision):
        raise UserError(
            f"{source} is not a hub name: write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION "
            "(e.g. hf-hub:timm/resnet50.a1_in1k)"
        )
    return name, revision or None


def zoo_model(config: dict) -> tuple[str | None, str | None, dict]:
    """A repository's config.json -> (its architecture, the zoo model, that model's options);
    the model is None when jaxvision knows no zoo model with the same layout."""
    architecture = config.get("architecture") or config.get("pretrained_cfg", {}).get(
        "architecture"
    )
    if not architecture:
        names = config.get("architectures") or [config.get("model_type")]
        named = [str(n) for n in names if n]
        return (f"{named[0]} (transformers)" if named else None), None, {}
    base = architecture.split(".")[0]  # timm's "resnet50.a1_in1k": architecture.tag
    if base in _TIMM_RESNETS:
        return architecture, base, {}
    found = re.fullmatch(r"(.+)_(\d+)", base)
    if found and found.group(1) in _TIMM_VITS:
        size = int(found.group(2))
        return architecture, _TIMM_VITS[found.group(1)], {} if size == 224 else {"image_size": size}
    return architecture, None, {}


def fetch(source: str) -> HubWeights:
    """Downloads (or finds in the cache) the weights and config.json of `source`,
    `hf-hub:ORG/NAME[@REVISION]`. UserError, one line, for anything that stops it."""
    repo, revision = parse(source)
    try:
        import huggingface_hub
    except ImportError:
        raise UserError(
            f"{source} needs the huggingface_hub package: pip install huggingface_hub"
        ) from None
    files = _repo_files(huggingface_hub, repo, revision, source)
    weight_file = _weight_file(files, source)
    path = _download(huggingface_hub, repo, weight_file, revision, source)
    config = {}
    if "config.json" in files:
        import json

        with open(_download(huggingface_hub, repo, "config.json", revision, source)) as f:
            config = json.load(f)
    architecture, model, model_kwargs = zoo_model(config)
    return HubWeights(source, path, config, architecture, model, model_kwargs)


def check_model(hub: HubWeights, model_name: str) -> None:
    """Raises UserError when the repository's architecture maps to another zoo model."""
    if hub.model is not None and hub.model != model_name:
        raise UserError(
            f"{hub.source} holds {hub.architecture}, which is jaxvision's {hub.model}, not "
            f"{model_name}: pass --config.model={hub.model} (or model_name='{hub.model}')"
        )


def unknown_architecture(hub: HubWeights) -> UserError:
    what = f"holds {hub.architecture}" if hub.architecture else "has no config.json naming it"
    return UserError(
        f"{hub.source} {what}, which jaxvision maps to no zoo model: name the zoo model with "
        "the same layout (e.g. model='vit_b16'), or convert the weights as "
        "docs/models_and_weights.md says"
    )


def _repo_files(hub, repo: str, revision: str | None, source: str) -> list[str]:
    """The repository's files: from the hub, or (offline) from its snapshot in the cache."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        try:
            return hub.list_repo_files(repo, revision=revision)
        except Exception as e:  # noqa: BLE001 - the hub's errors, mapped to one line
            if not _is_connection_error(e):
                raise _user_error(e, source, repo, revision) from None
    # Offline (or the hub unreachable): the files of the cached snapshot.
    try:
        folder = hub.snapshot_download(repo, revision=revision, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise _user_error(e, source, repo, revision) from None
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )


def _weight_file(files: list[str], source: str) -> str:
    for name in _PREFERRED:
        if name in files:
            return name
    readable = [f for f in files if f.endswith((".safetensors", ".npz"))]
    if len(readable) == 1:
        return readable[0]
    if readable:
        raise UserError(
            f"{source} holds several weight files ({', '.join(readable[:5])}): download the one "
            "you want (hf download ORG/NAME FILE) and pass its path"
        )
    pickles = [f for f in files if f.endswith(_PICKLES)]
    if pickles:
        raise UserError(
            f"{source} has no .safetensors or .npz weights, only pickles ({', '.join(pickles[:3])}"
            "), which can run code when loaded: convert one where you trust it and pass the path "
            "(docs/models_and_weights.md)"
        )
    raise UserError(
        f"{source} has no .safetensors or .npz weights (its files: "
        f"{', '.join(files[:5]) or 'none'}): is it a model repository?"
    )


def _download(hub, repo: str, filename: str, revision: str | None, source: str) -> str:
    try:
        return hub.hf_hub_download(repo, filename, revision=revision)
    except Exception as e:  # noqa: BLE001
        raise _user_error(e, source, repo, revision, filename) from None


# The HTTP clients' names for "no network" (requests' ConnectionError is not the builtin one).
_CONNECTION_ERRORS = {"ConnectionError", "ConnectError", "Timeout", "TimeoutException"}


def _is_connection_error(error: Exception) -> bool:
    if isinstance(error, (ConnectionError, TimeoutError)):  # OfflineModeIsEnabled is one
        return True
    return any(cls.__name__ in _CONNECTION_ERRORS for cls in type(error).__mro__)


def _user_error(error, source, repo, revision, filename=None) -> Exception:
    """The hub library's exception as one line saying what to do; other exceptions as they are."""
    from huggingface_hub import constants, errors

    page = f"https://huggingface.co/{repo}"
    if isinstance(error, errors.GatedRepoError):
        return UserError(
            f"{source} is gated: accept its terms at {page} and log in "
            "(hf auth login, or set HF_TOKEN)"
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return UserError(
            f"{source}: no repository {repo} on the Hugging Face hub (or it is private: log in "
            "with hf auth login): check the name"
        )
    if isinstance(error, errors.RevisionNotFoundError):
        return UserError(
            f"{source}: {repo} has no revision {revision or 'main'!r}: check it at {page}"
        )
    if isinstance(error, errors.LocalEntryNotFoundError):
        cache = constants.HF_HUB_CACHE
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub is unreachable"
        what = f"{filename} of {repo}" if filename else repo
        return UserError(
            f"{source}: {why} and {what} is not in the hub cache ({cache}): connect and run once "
            f"to download it, or copy a cache that has it (hf download {repo}) there"
        )
    if isinstance(error, errors.EntryNotFoundError):
        return UserError(f"{source}: {repo} has no file {filename}: check it at {page}")
    if isinstance(error, errors.HfHubHTTPError) or _is_connection_error(error):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return UserError(f"{source}: cannot fetch from the Hugging Face hub ({first})")
    return error
