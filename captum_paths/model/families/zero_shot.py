"""A :class:`~captum_paths.model.zero_shot.ZeroShotClassifier`: its sites are those of its image
tower, found by the tower's own family; the search runs the whole classifier."""
from __future__ import annotations

from typing import Optional, Tuple

from torch import nn

from captum_paths.model.families.base import FamilyAdapter, SiteSpec, find_family, register_family
from captum_paths.model.transforms import Transform

__all__ = ["ZeroShot"]


@register_family
class ZeroShot(FamilyAdapter):
    name = "zero-shot"
    looks_for = "a ZeroShotClassifier whose tower is of a registered family"

    def _inner(self, model: nn.Module) -> Optional[Tuple[FamilyAdapter, SiteSpec]]:
        from captum_paths.model.zero_shot import ZeroShotClassifier

        if not isinstance(model, ZeroShotClassifier):
            return None
        return find_family(model.tower, exclude=(self.name,))

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        found = self._inner(model)
        return None if found is None else found[1]

    def head_sites(self, model: nn.Module) -> Optional[SiteSpec]:
        found = self._inner(model)
        return None if found is None else found[0].head_sites(model.tower)

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        found = self._inner(model)
        return None if found is None else found[0].patch_size(model.tower)

    def transform(self, model: nn.Module) -> Optional[Transform]:
        found = self._inner(model)
        return None if found is None else found[0].transform(model.tower)
