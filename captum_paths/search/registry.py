"""Path methods by name, for the CLI and the evaluation harness."""
from __future__ import annotations

import difflib
from typing import Any, Dict, Type

from torch import nn

from captum_paths.search.base import PathAttribution
from captum_paths.search.baselines import (
    ActivationPath,
    ConductancePath,
    InfluencePatternPath,
    KnowledgeNeuronPath,
    RandomPath,
)
from captum_paths.search.neuron_path import LayerProgressiveNeuronPath

__all__ = ["PATH_METHODS", "get_path_method", "create_path_method"]

PATH_METHODS: Dict[str, Type[PathAttribution]] = {
    cls.name: cls
    for cls in (
        LayerProgressiveNeuronPath,
        ActivationPath,
        KnowledgeNeuronPath,
        ConductancePath,
        InfluencePatternPath,
        RandomPath,
    )
}


def get_path_method(name: str) -> Type[PathAttribution]:
    """The path method class registered under ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"method name must be a str; got {type(name).__name__}")
    if name not in PATH_METHODS:
        close = difflib.get_close_matches(name, list(PATH_METHODS), n=3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown path method {name!r}; choose from {sorted(PATH_METHODS)}.{hint}")
    return PATH_METHODS[name]


def create_path_method(name: str, model: nn.Module, **kwargs: Any) -> PathAttribution:
    """Instantiate the method ``name`` on ``model`` (kwargs go to its constructor)."""
    return get_path_method(name)(model, **kwargs)
