"""Model loading: specs such as ``"timm:NAME"`` to a model and its preprocessing.

A registry of loaders, one per library (:func:`register_loader`); the preprocessing
comes from the weights where they carry their own (torchvision weights, a Hugging
Face image processor, open_clip's published configs), else from the model's family
adapter (:func:`captum_paths.families.default_transform`). The output wrappers
(:class:`LogitsOnly`) live in :mod:`captum_paths.outputs` and are re-exported here.
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from captum_paths.families import default_transform
from captum_paths.families._timm import timm_transform
from captum_paths.outputs import LogitsOnly, as_logits_model, to_logits
from captum_paths.transforms import HFImageTransform, ToRGB, Transform, standard_transform

__all__ = ["LogitsOnly", "to_logits", "as_logits_model"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Model loading
# ---------------------------------------------------------------------------

__all__ += ["ModelLoadError", "load_model", "load_checkpoint", "has_random_weights", "weights_fingerprint",
            "register_loader", "LoadRequest"]


@dataclass(frozen=True)
class LoadRequest:
    """What a loader receives: the spec, the name after its prefix and the weight options."""

    spec: str
    name: str
    pretrained: bool
    checkpoint: Optional[Path]
    num_classes: Optional[int]
    model_kwargs: Dict[str, Any]
    classnames: Optional[Sequence[str]] = None


@dataclass(frozen=True)
class _Loader:
    load: Callable[[LoadRequest], Tuple[nn.Module, "Transform"]]
    form: str
    random_without_weights: bool


_LOADERS: Dict[str, _Loader] = {}


def register_loader(prefix: str, form: str, random_without_weights: bool = False):
    """Decorator: ``fn(request: LoadRequest) -> (model, transform)`` loads specs ``"PREFIX:NAME"``.

    ``form`` shows the spec in messages (``'"timm:NAME"'``); ``random_without_weights``
    says that the loader builds random weights when neither ``pretrained`` nor a
    checkpoint is given (such specs are then refused by run folders unless seeded).
    """
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise ValueError(f"prefix must be a non-empty name without ':'; got {prefix!r}")

    def register(fn: Callable[[LoadRequest], Tuple[nn.Module, "Transform"]]):
        _LOADERS[prefix] = _Loader(fn, form, random_without_weights)
        return fn
    return register


def _forms() -> str:
    return ", ".join(loader.form for loader in _LOADERS.values())


def _random_forms() -> str:
    return " and ".join(f"{p}:" for p, loader in _LOADERS.items() if loader.random_without_weights)


_STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema")
_NETWORK_MODULES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib", "socket", "ssl")


class ModelLoadError(RuntimeError):
    """Pretrained weights or a hub model could not be fetched (usually: no network)."""


def load_model(
    spec: str,
    pretrained: bool = False,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    num_classes: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    random_weights: Optional[int] = None,
    classnames: Optional[Sequence[str]] = None,
    **model_kwargs: Any,
) -> Tuple[nn.Module, Transform]:
    """Build a vision model and its evaluation preprocessing from a spec string.

    Args:
        spec: ``"timm:NAME"``, ``"torchvision:NAME"``, ``"hf:NAME_OR_PATH"``,
            ``"open_clip:ARCH"`` (``ARCH@TAG`` for published weights, or
            ``hf-hub:ORG/NAME``) or ``"demo"``, or the prefix of a loader added with
            :func:`register_loader`. A bare ``NAME`` is accepted when timm knows it.
        pretrained: download the published weights (timm / torchvision hub).
            Ignored for ``hf:`` (its weights always come from ``NAME_OR_PATH``)
            and for ``demo`` (weights ship with the package).
        checkpoint: local ``.safetensors`` or torch state dict (``.pt``, ``.pth``,
            ``.bin``) loaded strictly into the model. It takes precedence over
            ``pretrained``: nothing is downloaded, and ``pretrained=True`` only
            selects the pretrained preprocessing where that differs.
        num_classes: size of the classifier head (``num_labels`` for ``hf:``).
        device: device to move the model to.
        random_weights: a seed: build a ``timm:`` / ``torchvision:`` model with
            random weights drawn from it (the same network on every load with
            the same torch). Without ``pretrained``, ``checkpoint`` or a seed such
            a model gets unseeded random weights, a different network on every
            load, with a warning.
        classnames: the class names, in index order, of a zero-shot classifier
            (``open_clip:``): each becomes a text prompt.
        **model_kwargs: passed to the model constructor (timm / torchvision /
            open_clip) or to ``from_pretrained`` (``hf:``), e.g. ``img_size=32, depth=2``.

    Returns:
        ``(model, transform)``: the model in eval mode, whose forward maps
        ``(N, C, H, W)`` images to ``(N, num_classes)`` logits, and a transform
        mapping one PIL image to a ``(C, H, W)`` tensor the model accepts.

    Raises:
        ValueError: unknown spec prefix or model name, bad argument values, or a
            checkpoint that does not fit the model. With ``model_kwargs``, whatever
            building the model raises (an assertion, a division by zero, a negative
            size) and a failing probe forward of one image of its own preprocessing
            become a ValueError naming the spec, the args and the cause.
        FileNotFoundError: ``checkpoint`` does not exist.
        ModelLoadError: pretrained weights or a hub model could not be downloaded.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str such as {_forms()}; got {type(spec).__name__}")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool; got {pretrained!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int or None; got {num_classes!r}")
    if random_weights is not None and (isinstance(random_weights, bool) or not isinstance(random_weights, int)
                                       or random_weights < 0):
        raise ValueError(f"random_weights must be a non-negative int seed or None; got {random_weights!r}")
    checkpoint_path = _checkpoint_path(checkpoint)
    torch_device = _as_device(device)

    kind, name = _parse_spec(spec)
    loader = _LOADERS[kind]
    random = loader.random_without_weights and not pretrained and checkpoint_path is None
    if random_weights is not None and not random:
        raise ValueError(f"random_weights applies to {_random_forms()} models without pretrained weights or "
                         f"a checkpoint; spec {spec!r} has its weights")
    if random and random_weights is None:
        logger.warning("%s gets random, unseeded weights: a different network on every load; pass pretrained=True, "
                       "a checkpoint, or random_weights=SEED", spec)
    # a seed draws the weights from a generator of their own, leaving the caller's untouched;
    # without one they come from the global generator, a new network on every load
    seeded = torch.random.fork_rng(devices=[]) if random_weights is not None else contextlib.nullcontext()
    with seeded, _naming_model_args(spec, model_kwargs, ""):
        if random_weights is not None:
            torch.manual_seed(random_weights)
        model, transform = loader.load(LoadRequest(spec, name, pretrained, checkpoint_path, num_classes,
                                                   dict(model_kwargs), classnames))

    if torch_device is not None:
        model = model.to(torch_device)
    model = model.eval()
    if model_kwargs:  # a model built with other args may not run at all: find out now, with the args named
        with _naming_model_args(spec, model_kwargs, " fails on a probe image of its own preprocessing"):
            _probe(model, transform)
    return model, transform


@contextlib.contextmanager
def _naming_model_args(spec: str, model_kwargs: Dict[str, Any], what: str):
    """Turn what building (or probing) a model with ``model_kwargs`` raises into a ValueError naming
    the spec, the args (the CLI's ``--model-arg``) and the cause: a timm assertion, a division by
    zero, a negative tensor size, a checkpoint that does not fit. Errors that are not about the args
    (no network, a missing file or package, out of memory) pass unchanged, as do all without args.
    With args, the warnings raised meanwhile are held back and shown only when no error follows
    (a model with ``embed_dim=0`` warns of zero-element tensors before failing)."""
    if not model_kwargs:
        yield
        return
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    except (ModelLoadError, ImportError, FileNotFoundError, MemoryError):
        raise
    except Exception as exc:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise
        shown = ", ".join(f"{key}={value!r}" for key, value in model_kwargs.items())
        cause = " ".join(str(exc).split())
        if not isinstance(exc, ValueError) or not cause:
            cause = f"{type(exc).__name__}: {cause}" if cause else type(exc).__name__
        raise ValueError(f"model {spec!r} with model args {shown} (--model-arg){what}: {cause}") from exc
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _probe(model: nn.Module, transform: Transform) -> None:
    """One forward of a gray image through ``transform`` and ``model``: it must give ``(1, classes)``
    logits (a single image, batch size 1, on the model's device)."""
    from PIL import Image

    x = transform(Image.new("RGB", (224, 224), (128, 128, 128)))
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"the preprocessing gives {type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}, "
                         "not a (channels, height, width) tensor")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        logits = to_logits(model(x[None].to(device)))
    if logits.ndim != 2 or logits.shape[0] != 1 or logits.shape[1] < 1:
        raise ValueError(f"the model's output for one image has shape {tuple(logits.shape)}, not (1, classes)")


def has_random_weights(spec: str, pretrained: bool = False, checkpoint: Optional[Union[str, os.PathLike]] = None
                       ) -> bool:
    """Whether :func:`load_model` builds ``spec`` with random weights (timm / torchvision /
    open_clip without ``pretrained`` or a checkpoint)."""
    return _LOADERS[_parse_spec(spec)[0]].random_without_weights and not pretrained and checkpoint is None


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (names, dtypes, shapes and bytes)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def load_checkpoint(
    model: nn.Module, checkpoint: Union[str, os.PathLike], spec: Optional[str] = None
) -> nn.Module:
    """Load a local checkpoint strictly into ``model`` (in place) and return it.

    ``.safetensors`` files are read with safetensors, anything else with
    ``torch.load(..., weights_only=True)``. A state dict nested under
    ``"state_dict"``, ``"model"`` or ``"state_dict_ema"`` is unwrapped and a
    ``module.`` (DataParallel / DDP) prefix is stripped. ``spec`` only
    improves error messages.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    path = _checkpoint_path(checkpoint)
    state_dict = _read_state_dict(path)
    target = model.model if isinstance(model, LogitsOnly) else model
    state_dict = _match_prefixes(state_dict, target.state_dict())
    _check_fits(target, state_dict, path, spec)
    target.load_state_dict(state_dict, strict=True)
    return model


# -- spec parsing -------------------------------------------------------------


def _parse_spec(spec: str) -> Tuple[str, str]:
    text = spec.strip()
    if text == "demo":
        return "demo", ""
    prefix, sep, name = text.partition(":")
    if sep and prefix in _LOADERS:
        if not name.strip():
            raise ValueError(f"spec {spec!r} has no model name after {prefix + ':'!r}; allowed forms: {_forms()}")
        return prefix, name.strip()
    if sep and prefix not in ("hf-hub", "local-dir"):  # timm's own schemes, bare
        raise ValueError(
            f"unknown model spec prefix {prefix + ':'!r} in {spec!r}; allowed forms: {_forms()}"
        )
    import timm

    if sep or timm.is_model(_timm_arch(text)):
        return "timm", text
    raise ValueError(
        f"model spec {spec!r} has no prefix and is not a timm model name; allowed forms: "
        f"{_forms()}{_suggest(text, timm.list_models())}"
    )


def _suggest(name: str, candidates: Sequence[str], n: int = 5) -> str:
    lowered = name.lower()
    matches = difflib.get_close_matches(lowered, candidates, n=n, cutoff=0.6)
    if len(matches) < n:
        matches += [c for c in candidates if lowered in c and c not in matches][: n - len(matches)]
    return f". Close matches: {', '.join(matches)}" if matches else ""


def _timm_arch(name: str) -> str:
    return name.split(".", 1)[0]


# -- timm -------------------------------------------------------------------------


def _load_timm(
    spec: str,
    name: str,
    pretrained: bool,
    checkpoint: Optional[Path],
    num_classes: Optional[int],
    model_kwargs: Dict[str, Any],
) -> Tuple[nn.Module, Transform]:
    import timm

    hub_scheme = name.startswith(("hf-hub:", "local-dir:"))
    if not hub_scheme and not timm.is_model(_timm_arch(name)):
        raise ValueError(f"unknown timm model name {name!r} (spec {spec!r}){_suggest(_timm_arch(name), timm.list_models())}")
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    download = pretrained and checkpoint is None
    try:
        model = timm.create_model(name, pretrained=download, **kwargs)
    except Exception as exc:
        if (download or name.startswith("hf-hub:")) and _is_download_error(exc):
            raise ModelLoadError(_download_message(spec, exc, _timm_weights_hint(name))) from exc
        raise
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)

    return model, default_transform(model) or timm_transform(model)


def _timm_weights_hint(name: str) -> str:
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if hub_id:
            return f" (timm's weights file is model.safetensors at https://huggingface.co/{hub_id})"
        url = getattr(cfg, "url", None) if cfg is not None else None
        if url:
            return f" (timm's weights file is {url})"
    except Exception:
        pass
    return ""


# -- torchvision ----------------------------------------------------------------


def _load_torchvision(
    spec: str,
    name: str,
    pretrained: bool,
    checkpoint: Optional[Path],
    num_classes: Optional[int],
    model_kwargs: Dict[str, Any],
) -> Tuple[nn.Module, Transform]:
    import torchvision

    available = torchvision.models.list_models()
    if name not in available:
        raise ValueError(f"unknown torchvision model name {name!r} (spec {spec!r}){_suggest(name, available)}")
    weights = None
    if pretrained:
        try:
            weights = torchvision.models.get_model_weights(name).DEFAULT
        except Exception as exc:
            raise ValueError(f"torchvision model {name!r} has no pretrained weights; use pretrained=False") from exc
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    download = weights is not None and checkpoint is None
    try:
        model = torchvision.models.get_model(name, weights=weights if download else None, **kwargs)
    except Exception as exc:
        if download and _is_download_error(exc):
            hint = f" (torchvision's weights file is {weights.url})" if weights is not None else ""
            raise ModelLoadError(_download_message(spec, exc, hint)) from exc
        raise
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)

    if weights is not None:
        from torchvision import transforms as T

        transform: Transform = T.Compose([ToRGB(), weights.transforms()])
    else:  # the family's preprocessing at the size the model was built for
        transform = default_transform(model) or standard_transform(getattr(model, "image_size", 224))
    return model, transform


# -- Hugging Face ---------------------------------------------------------------


def _load_hf(
    spec: str,
    name: str,
    checkpoint: Optional[Path],
    num_classes: Optional[int],
    model_kwargs: Dict[str, Any],
) -> Tuple[nn.Module, Transform]:
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            f"spec {spec!r} needs the transformers package: pip install captum-paths[hf]"
        ) from exc

    local = Path(name).expanduser()
    is_local = local.is_dir()
    if not is_local and (local.exists() or name.startswith((".", "/", "~")) or "\\" in name):
        raise FileNotFoundError(f"hf model directory {name!r} (spec {spec!r}) does not exist or is not a directory")
    source = str(local) if is_local else name
    kwargs = dict(model_kwargs)
    if is_local:
        kwargs.setdefault("local_files_only", True)
    if num_classes is not None:
        kwargs.setdefault("num_labels", num_classes)
    auto = transformers.AutoModelForImageClassification
    try:
        if checkpoint is None:
            if num_classes is not None:
                kwargs.setdefault("ignore_mismatched_sizes", True)
            model = auto.from_pretrained(source, **kwargs)
        else:
            config = transformers.AutoConfig.from_pretrained(source, **kwargs)
            model = auto.from_config(config)
    except Exception as exc:
        if not is_local and _is_download_error(exc):
            hint = (
                "; or pass a local directory made with save_pretrained() or "
                f"`hf download {name} --local-dir DIR`: load_model('hf:DIR')"
            )
            raise ModelLoadError(_download_message(spec, exc, "", extra=hint)) from exc
        if is_local:
            raise ValueError(
                f"could not load a Hugging Face image-classification model from directory {source!r} "
                f"(spec {spec!r}): {type(exc).__name__}: {exc}"
            ) from exc
        raise
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)

    transform: Optional[Transform] = None
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=is_local)
        transform = HFImageTransform(processor)
    except Exception as exc:  # no preprocessor_config.json, or hub unreachable
        transform = default_transform(as_logits_model(model)) or standard_transform(
            getattr(model.config, "image_size", 224))
        logger.warning("no image processor found for %r (%s); using the family's preprocessing: %r",
                       source, type(exc).__name__, transform)
    return as_logits_model(model), transform


# -- demo -------------------------------------------------------------------------


def _load_demo(
    spec: str, checkpoint: Optional[Path], num_classes: Optional[int], model_kwargs: Dict[str, Any]
) -> Tuple[nn.Module, Transform]:
    if num_classes is not None or model_kwargs:
        given = dict(model_kwargs, **({"num_classes": num_classes} if num_classes is not None else {}))
        raise ValueError(f"the demo model takes no num_classes or model kwargs; got {given!r}")
    from captum_paths.demo import demo_transform, load_demo_model

    model = load_demo_model()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)
    return model, demo_transform()


# -- open_clip ---------------------------------------------------------------------


def _load_open_clip(request: LoadRequest) -> Tuple[nn.Module, Transform]:
    """An open_clip model under a zero-shot head over ``classnames`` (see :mod:`captum_paths.zero_shot`)."""
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError(f"spec {request.spec!r} needs the open_clip package: pip install captum-paths[open_clip]"
                          ) from exc
    from captum_paths.zero_shot import ZeroShotClassifier

    if request.num_classes is not None:
        raise ValueError("open_clip models take no num_classes: their classes are the classnames")
    if not request.classnames:
        raise ValueError(f"spec {request.spec!r} is a zero-shot classifier: pass classnames (the pipeline uses "
                         "the data's class folder names, or the names of a Keras-style label map)")
    arch, _, tag = request.name.partition("@")
    if request.checkpoint is not None:
        weights = str(request.checkpoint)
    elif arch.startswith("hf-hub:"):
        weights = None
    elif request.pretrained:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag and tag not in tags:
            raise ValueError(f"open_clip has no weights {tag!r} for {arch!r}; it has {tags}")
        if not tags:
            raise ValueError(f"open_clip publishes no weights for {arch!r}; pass a checkpoint")
        weights = tag or tags[0]
    else:
        weights = None
    if arch not in open_clip.list_models() and not arch.startswith("hf-hub:"):
        raise ValueError(f"unknown open_clip model {arch!r} (spec {request.spec!r})"
                         f"{_suggest(arch, open_clip.list_models())}")
    try:
        model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=weights,
                                                                    **request.model_kwargs)
    except Exception as exc:
        if _is_download_error(exc):
            raise ModelLoadError(_download_message(request.spec, exc, "")) from exc
        raise
    tokenizer = open_clip.get_tokenizer(arch)
    classifier = ZeroShotClassifier.from_open_clip(model.eval(), tokenizer, list(request.classnames))
    from torchvision import transforms as T

    return classifier, T.Compose([ToRGB(), transform])


register_loader("timm", '"timm:NAME"', random_without_weights=True)(
    lambda r: _load_timm(r.spec, r.name, r.pretrained, r.checkpoint, r.num_classes, r.model_kwargs))
register_loader("torchvision", '"torchvision:NAME"', random_without_weights=True)(
    lambda r: _load_torchvision(r.spec, r.name, r.pretrained, r.checkpoint, r.num_classes, r.model_kwargs))
register_loader("hf", '"hf:NAME_OR_PATH"')(
    lambda r: _load_hf(r.spec, r.name, r.checkpoint, r.num_classes, r.model_kwargs))
register_loader("open_clip", '"open_clip:ARCH[@TAG]"', random_without_weights=True)(_load_open_clip)
register_loader("demo", '"demo"')(lambda r: _load_demo(r.spec, r.checkpoint, r.num_classes, r.model_kwargs))


# -- checkpoints ------------------------------------------------------------------


def _checkpoint_path(checkpoint: Optional[Union[str, os.PathLike]]) -> Optional[Path]:
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path (str or os.PathLike) or None; got {type(checkpoint).__name__}")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint file {str(path)!r} {what}")
    return path


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise ValueError(f"checkpoint {str(path)!r} is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"checkpoint {str(path)!r} could not be read with torch.load(weights_only=True): {exc}. "
            "Re-save it as a plain state dict (torch.save(model.state_dict(), path)) or as .safetensors"
        ) from exc
    for _ in range(3):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            nested = next((obj[k] for k in _STATE_DICT_KEYS if isinstance(obj.get(k), dict)), None)
            if nested is None:
                break
            obj = nested
    if not _is_tensor_dict(obj):
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"checkpoint {str(path)!r} does not hold a state dict (a mapping of names to tensors, "
            f"optionally under {', '.join(map(repr, _STATE_DICT_KEYS))}); found {keys}"
        )
    return obj


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _match_prefixes(state_dict: Dict[str, torch.Tensor], model_state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Strip ``module.`` (DataParallel) and a ``model.`` wrapper prefix when the model lacks it."""
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state_dict) and not any(k.startswith(prefix) for k in model_state):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _check_fits(model: nn.Module, state_dict: Dict[str, torch.Tensor], path: Path, spec: Optional[str]) -> None:
    model_state = model.state_dict()
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(model_state[k].shape))
        for k in model_state
        if k in state_dict and tuple(state_dict[k].shape) != tuple(model_state[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    def listing(items: List[str], n: int = 5) -> str:
        more = f", ... ({len(items) - n} more)" if len(items) > n else ""
        return ", ".join(items[:n]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {listing(unexpected)}")
    if mismatched:
        parts.append(
            f"{len(mismatched)} shape mismatch(es): "
            + listing([f"{k}: checkpoint {c} vs model {m}" for k, c, m in mismatched])
        )
    head = [c for k, c, m in mismatched if c and m and c[1:] == m[1:] and _is_head_key(k)]
    hint = (
        f" The classifier head differs: the checkpoint has {head[0][0]} classes, so pass "
        f"num_classes={head[0][0]} (CLI --num-classes {head[0][0]})."
        if head
        else " Check that the checkpoint was saved from the same architecture and model kwargs, "
        "and that num_classes matches the checkpoint's classifier."
    )
    target = f" {spec!r}" if spec else ""
    raise ValueError(
        f"checkpoint {str(path)!r} does not fit the model{target}: " + "; ".join(parts) + "." + hint
    )


def _is_head_key(key: str) -> bool:
    parts = key.split(".")
    return any(p in ("head", "heads", "fc", "classifier", "last_linear") for p in parts[:-1])


# -- helpers ----------------------------------------------------------------------


def _as_device(device: Optional[Union[str, torch.device]]) -> Optional[torch.device]:
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a str, torch.device or None; got {type(device).__name__}")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a valid torch device (e.g. 'cpu', 'cuda', 'cuda:0')") from exc


def _is_download_error(exc: BaseException) -> bool:
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__ or ""
        if isinstance(current, OSError) or module.startswith(_NETWORK_MODULES):
            return True
        current = current.__cause__ or current.__context__
    return False


def _download_message(spec: str, exc: BaseException, where: str, extra: str = "") -> str:
    return (
        f"could not download the weights for {spec!r}: no network access, or the model hub is "
        f"unreachable{where}. Download the weights on a machine with network access and pass the "
        f"local file instead: load_model({spec!r}, checkpoint='path/to/weights.safetensors') or, on "
        f"the command line, --checkpoint path/to/weights.safetensors{extra}. "
        f"Original error: {type(exc).__name__}: {exc}"
    )
