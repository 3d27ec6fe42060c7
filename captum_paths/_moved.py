"""Import paths of modules that moved to their room, kept working for one release.

``import captum_paths.sites`` (and ``from captum_paths.models import load_model``, or any
submodule of a moved package, such as ``captum_paths.families.timm_vit``) warns with a
``DeprecationWarning`` naming the new path and gives the module at its new place: the
same module object, so ``isinstance`` checks, registries and monkeypatches see one module.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Dict, Optional

__all__ = ["MOVED", "new_name", "install"]

#: Old module path -> new module path (a package's submodules move with it).
MOVED: Dict[str, str] = {
    "captum_paths.sites": "captum_paths.model.sites",
    "captum_paths.tokens": "captum_paths.model.tokens",
    "captum_paths.stream": "captum_paths.model.stream",
    "captum_paths.outputs": "captum_paths.model.outputs",
    "captum_paths.zero_shot": "captum_paths.model.zero_shot",
    "captum_paths.data": "captum_paths.model.data",
    "captum_paths.transforms": "captum_paths.model.transforms",
    "captum_paths.models": "captum_paths.model.loading",
    "captum_paths.families": "captum_paths.model.families",
    "captum_paths.interventions": "captum_paths.evaluation.interventions",
    "captum_paths.faithfulness": "captum_paths.evaluation.faithfulness",
    "captum_paths.consensus": "captum_paths.analysis.consensus",
    "captum_paths.distributed": "captum_paths.pipeline.distributed",
}


def new_name(old: str) -> Optional[str]:
    """The module path ``old`` moved to, or ``None`` when it did not move."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before):]
    return None


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at the new one."""

    def __init__(self) -> None:
        self._specs: Dict[str, object] = {}  # old path -> the new module's own spec, while it is imported

    def find_spec(self, fullname, path=None, target=None):
        if new_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec) -> ModuleType:
        new = new_name(spec.name)
        # stacklevel 2 would name importlib's frames; the caller's import is what to fix
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__  # the import system sets the alias spec on it: put it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._specs.pop(module.__spec__.name)


def install() -> None:
    """Put the finder in front of the import system's (once)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
