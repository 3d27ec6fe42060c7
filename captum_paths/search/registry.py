"""Path methods by name, for the API, the command line, the evaluation harness and the explorer.

Every method registers the same way, built-in or not: the search and the baselines with
:func:`register_path_method` where they are defined (``neuron_path.py``, ``baselines.py``),
a user's method in their own code, and an installed plugin's through the
``captum_paths.path_methods`` entry points (:mod:`captum_paths.model.plugins`), which are
loaded the first time a method is looked up by name.
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, Iterable, Optional, Type, TypeVar

from torch import nn

from captum_paths.model.plugins import PATH_METHODS_GROUP, PluginError, plugin_objects
from captum_paths.search.base import PathAttribution

__all__ = ["PATH_METHODS", "DEFAULT_METHOD", "primary_method", "path_methods", "get_path_method",
           "create_path_method", "register_path_method"]

M = TypeVar("M", bound=Type[PathAttribution])

#: Every registered path method by name (``captum-paths extract --method NAME``), in the order they
#: registered: the built-in ones first (the search, then the baselines), then yours and the plugins'.
PATH_METHODS: Dict[str, Type[PathAttribution]] = {}

#: The searched paths' name (``LayerProgressiveNeuronPath``): the default ``--method``, the method
#: the others are compared with, and the one the views show first.
DEFAULT_METHOD: str = "neuron-path"


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
    registered = [name for name in path_methods() if name in present]
    return registered[0] if registered else min(present, key=str)


def path_methods() -> Dict[str, Type[PathAttribution]]:
    """Every registered path method by name (:data:`PATH_METHODS`), the installed plugins' included.

    Returns:
        The registry: ``{name: PathAttribution subclass}``, in registration order.

    Raises:
        PluginError: an installed plugin's method fails to load or is not a PathAttribution subclass.
    """
    for name, method in plugin_objects(PATH_METHODS_GROUP):
        if not (isinstance(method, type) and issubclass(method, PathAttribution)):
            raise PluginError(f"plugin path method {name!r} is {method!r}, not a PathAttribution subclass")
        if PATH_METHODS.get(method.name) is not method:
            register_path_method(method)
    return PATH_METHODS


def get_path_method(name: str) -> Type[PathAttribution]:
    """The path method class registered under ``name`` (installed plugins' included).

    Args:
        name (str): Its registry name (``"neuron-path"``, ``"activation"`` ...).

    Returns:
        The :class:`PathAttribution` subclass.

    Raises:
        ValueError: no method is registered under ``name`` (the message lists those that are).
    """
    if not isinstance(name, str):
        raise TypeError(f"method name must be a str; got {type(name).__name__}")
    if name not in path_methods():
        close = difflib.get_close_matches(name, list(PATH_METHODS), n=3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown path method {name!r}; choose from {sorted(PATH_METHODS)}.{hint}")
    return PATH_METHODS[name]


def create_path_method(name: str, model: nn.Module, **kwargs: Any) -> PathAttribution:
    """Instantiate the method ``name`` on ``model`` (kwargs go to its constructor).

    Args:
        name (str): Its registry name.
        model (nn.Module): The model.
        **kwargs: The constructor's other arguments (``sites=``, ``output=``).

    Returns:
        The method, ready to ``attribute``.
    """
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

    Returns:
        ``cls`` itself (a decorator returns what it decorates), or the decorator when
        ``cls`` is not given.
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
