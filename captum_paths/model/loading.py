"""Model loading: specs such as ``"timm:NAME"`` to a model and its preprocessing.

:func:`load_model` parses the spec and asks the loader registered for its prefix
(:mod:`captum_paths.model.loaders`; each library's loader lives with its family in
``captum_paths/model/families/``). The preprocessing comes from the weights where
they carry their own (torchvision weights, a Hugging Face image processor,
open_clip's published configs), else from the model's family adapter
(:func:`captum_paths.model.families.default_transform`). Checkpoints are read and
matched by :mod:`captum_paths.model.checkpoints`; the output wrappers
(:class:`LogitsOnly`) live in :mod:`captum_paths.model.outputs`; all are re-exported here.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

import captum_paths.model.families  # noqa: F401  (the built-in families register their loaders)
from captum_paths.model.checkpoints import checkpoint_path, load_checkpoint
from captum_paths.model.families._timm import timm_arch
from captum_paths.model.loaders import (
    LoadRequest,
    ModelLoadError,
    get_loader,
    loader_prefixes,
    random_spec_forms,
    register_loader,
    spec_forms,
    suggest,
)
from captum_paths.model.outputs import LogitsOnly, as_logits_model, to_logits
from captum_paths.model.transforms import Transform

__all__ = ["LogitsOnly", "to_logits", "as_logits_model", "ModelLoadError", "load_model", "load_checkpoint",
           "has_random_weights", "weights_fingerprint", "register_loader", "LoadRequest"]

logger = logging.getLogger(__name__)


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
        raise TypeError(f"spec must be a str such as {spec_forms()}; got {type(spec).__name__}")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool; got {pretrained!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int or None; got {num_classes!r}")
    if random_weights is not None and (isinstance(random_weights, bool) or not isinstance(random_weights, int)
                                       or random_weights < 0):
        raise ValueError(f"random_weights must be a non-negative int seed or None; got {random_weights!r}")
    checkpoint_file = checkpoint_path(checkpoint)
    torch_device = _as_device(device)

    kind, name = _parse_spec(spec)
    loader = get_loader(kind)
    random = loader.random_without_weights and not pretrained and checkpoint_file is None
    if random_weights is not None and not random:
        raise ValueError(f"random_weights applies to {random_spec_forms()} models without pretrained weights or "
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
        model, transform = loader.load(LoadRequest(spec, name, pretrained, checkpoint_file, num_classes,
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
    return get_loader(_parse_spec(spec)[0]).random_without_weights and not pretrained and checkpoint is None


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (names, dtypes, shapes and bytes)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


# -- spec parsing -------------------------------------------------------------


def _parse_spec(spec: str) -> Tuple[str, str]:
    text = spec.strip()
    if text == "demo":
        return "demo", ""
    prefix, sep, name = text.partition(":")
    if sep and prefix in loader_prefixes():
        if not name.strip():
            raise ValueError(f"spec {spec!r} has no model name after {prefix + ':'!r}; allowed forms: {spec_forms()}")
        return prefix, name.strip()
    if sep and prefix not in ("hf-hub", "local-dir"):  # timm's own schemes, bare
        raise ValueError(
            f"unknown model spec prefix {prefix + ':'!r} in {spec!r}; allowed forms: {spec_forms()}"
        )
    import timm

    if sep or timm.is_model(timm_arch(text)):
        return "timm", text
    raise ValueError(
        f"model spec {spec!r} has no prefix and is not a timm model name; allowed forms: "
        f"{spec_forms()}{suggest(text, timm.list_models())}"
    )


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


register_loader("demo", '"demo"')(lambda r: _load_demo(r.spec, r.checkpoint, r.num_classes, r.model_kwargs))


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


