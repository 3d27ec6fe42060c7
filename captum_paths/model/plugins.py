"""Plugins: installed packages that add path methods, model families or loaders.

A package makes its additions visible to the API, the command line and the
explorer with entry points in its metadata (``pyproject.toml``)::

    [project.entry-points."captum_paths.path_methods"]
    largest-weight = "my_plugin.methods:LargestWeightPath"   # a PathAttribution subclass

    [project.entry-points."captum_paths.families"]
    my-vit = "my_plugin.family:MyViT"                         # a FamilyAdapter subclass

    [project.entry-points."captum_paths.loaders"]
    mylib = "my_plugin.loading:load"                          # fn(LoadRequest) -> (model, transform)

A loader's entry point name is its spec prefix (``--model mylib:NAME``); a loader
function that builds random weights without a checkpoint says so with an attribute
``random_without_weights = True``.
An entry point may also name a module, which registers what it defines when it is
imported (with :func:`~captum_paths.search.register_path_method`,
:func:`~captum_paths.model.families.register_family` or
:func:`~captum_paths.model.loaders.register_loader`). Each group is loaded the first
time its registry is asked for a name, once per process; a plugin that fails to load
is a :class:`PluginError` naming it.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, List, Set, Tuple

__all__ = ["PATH_METHODS_GROUP", "FAMILIES_GROUP", "LOADERS_GROUP", "PluginError", "plugin_objects"]

PATH_METHODS_GROUP = "captum_paths.path_methods"
FAMILIES_GROUP = "captum_paths.families"
LOADERS_GROUP = "captum_paths.loaders"

_loaded: Set[str] = set()  # the groups already loaded in this process


class PluginError(ImportError):
    """An installed plugin could not be loaded."""


def plugin_objects(group: str) -> List[Tuple[str, Any]]:
    """``(name, object)`` of every entry point of ``group`` the first time it is asked for in
    this process (modules imported, which registers what they define); ``[]`` afterwards.

    Raises:
        PluginError: an entry point fails to load (names the plugin, its target and the cause).
    """
    if group in _loaded:
        return []
    _loaded.add(group)
    found = []
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        try:
            obj = point.load()
        except Exception as exc:  # an import error, a syntax error in the plugin, a missing name ...
            raise PluginError(f"plugin {point.name!r} of {group} ({point.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(obj, ModuleType):
            found.append((point.name, obj))
    return found
