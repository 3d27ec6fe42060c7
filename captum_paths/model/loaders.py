"""The loader registry: one loader per library, registered where its family code lives.

A loader turns a spec ``"PREFIX:NAME"`` into ``(model, transform)``
(:func:`register_loader`); the built-in ones register in
``captum_paths/model/families/`` (``_timm.py``, ``_torchvision.py``, ``_hf.py``,
``open_clip.py``), installed plugins through the ``captum_paths.loaders`` entry points
(:mod:`captum_paths.model.plugins`; the entry point's name is the prefix), and
:func:`captum_paths.model.loading.load_model` asks this registry.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

from torch import nn

from captum_paths.model.plugins import LOADERS_GROUP, PluginError, plugin_objects

if TYPE_CHECKING:  # pragma: no cover
    from captum_paths.model.transforms import Transform

__all__ = ["LoadRequest", "ModelLoadError", "register_loader", "get_loader", "loader_prefixes", "spec_forms",
           "random_spec_forms", "suggest", "is_download_error", "download_message"]

_NETWORK_MODULES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib", "socket", "ssl")


class ModelLoadError(RuntimeError):
    """Pretrained weights or a hub model could not be fetched (usually: no network)."""


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


def _installed() -> Dict[str, _Loader]:
    """The registry, with the loaders of installed plugins added the first time it is asked."""
    for prefix, fn in plugin_objects(LOADERS_GROUP):
        if prefix in _LOADERS:
            continue
        if not callable(fn):
            raise PluginError(f"plugin loader {prefix!r} is a {type(fn).__name__}, not a function of a LoadRequest")
        register_loader(prefix, f'"{prefix}:NAME"', getattr(fn, "random_without_weights", False))(fn)
    return _LOADERS


def spec_forms() -> str:
    """The spec forms of every loader, for messages."""
    _installed()
    return ", ".join(loader.form for loader in _LOADERS.values())


def random_spec_forms() -> str:
    """The prefixes whose models get random weights without pretrained ones or a checkpoint."""
    _installed()
    return " and ".join(f"{p}:" for p, loader in _LOADERS.items() if loader.random_without_weights)


def get_loader(prefix: str) -> _Loader:
    """The loader registered for ``prefix`` (``KeyError`` when none is)."""
    return _installed()[prefix]


def loader_prefixes() -> Tuple[str, ...]:
    """The registered prefixes, in registration order."""
    return tuple(_installed())


def suggest(name: str, candidates: Sequence[str], n: int = 5) -> str:
    lowered = name.lower()
    matches = difflib.get_close_matches(lowered, candidates, n=n, cutoff=0.6)
    if len(matches) < n:
        matches += [c for c in candidates if lowered in c and c not in matches][: n - len(matches)]
    return f". Close matches: {', '.join(matches)}" if matches else ""


def is_download_error(exc: BaseException) -> bool:
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__ or ""
        if isinstance(current, OSError) or module.startswith(_NETWORK_MODULES):
            return True
        current = current.__cause__ or current.__context__
    return False


def download_message(spec: str, exc: BaseException, where: str, extra: str = "") -> str:
    return (
        f"could not download the weights for {spec!r}: no network access, or the model hub is "
        f"unreachable{where}. Download the weights on a machine with network access and pass the "
        f"local file instead: load_model({spec!r}, checkpoint='path/to/weights.safetensors') or, on "
        f"the command line, --checkpoint path/to/weights.safetensors{extra}. "
        f"Original error: {type(exc).__name__}: {exc}"
    )
