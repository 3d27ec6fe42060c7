"""Path methods by name, for the CLI and the evaluation harness."""
from __future__ import annotations

import difflib
from typing import Any, Dict, Iterable, Optional, Type, TypeVar

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

__all__ = ["PATH_METHODS", "DEFAULT_METHOD", "primary_method", "get_path_method", "create_path_method",
           "register_path_method"]

M = TypeVar("M", bound=Type[PathAttribution])

#: Every registered path method by name (``captum-paths extract --method NAME``), the built-in ones first.
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


#: The searched paths' name (``LayerProgressiveNeuronPath``): the default ``--method``, the method
#: the others are compared with, and the one the views show first.
DEFAULT_METHOD: str = LayerProgressiveNeuronPath.name


def primary_method(methods: Iterable[str]) -> str:
    """The primary method of a run holding ``methods``: the one its tables compare the others
    with and its views show first.

    Args:
        methods (iterable of str): The method names of the run's records (any order, repeats allowed).

    Returns:
        :data:`DEFAULT_METHOD` when it is among ``methods``; else the first of them in registry
        order (:data:`PATH_METHODS`); else, for methods that are not registered, the first by name.
        The answer does not depend on the order of ``methods``.
    """
    present = set(methods)
    if not present:
        raise ValueError("no methods: a run's records name at least one")
    if DEFAULT_METHOD in present:
        return DEFAULT_METHOD
    registered = [name for name in PATH_METHODS if name in present]
    return registered[0] if registered else min(present, key=str)


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


def register_path_method(
    cls: Optional[M] = None, *, name: Optional[str] = None, overwrite: bool = False
) -> Any:
    """Register a :class:`PathAttribution` subclass under ``name`` (default: its ``name``
    attribute), so that ``get_path_method``, the evaluation harness and the command
    line's ``--method`` find it. Use as ``@register_path_method`` or
    ``register_path_method(MyPath, name="my-path")``.

    Args:
        cls (type): A subclass of :class:`PathAttribution` implementing ``_select``.
        name (str, optional): Registry name. Default: ``cls.name``.
        overwrite (bool, optional): Replace a method already registered under the
            name. Default: ``False`` (a clash raises ``ValueError``).
    """
    def register(method: M) -> M:
        if not (isinstance(method, type) and issubclass(method, PathAttribution)):
            raise TypeError(f"register_path_method: expected a PathAttribution subclass; got {method!r}")
        key = method.name if name is None else name
        if not isinstance(key, str) or not key:
            raise ValueError(f"register_path_method: {method.__name__} needs a non-empty str name "
                             f"(set the class attribute `name` or pass name=); got {key!r}")
        if key in PATH_METHODS and PATH_METHODS[key] is not method and not overwrite:
            raise ValueError(f"a path method is already registered as {key!r} ({PATH_METHODS[key].__name__}); "
                             "pass overwrite=True to replace it")
        if method.name != key:
            method.name = key
        PATH_METHODS[key] = method
        return method

    return register if cls is None else register(cls)
