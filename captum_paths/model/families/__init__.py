"""Model family adapters: how each vision transformer family exposes its FFN neurons.

One module per family, each registering a :class:`FamilyAdapter` with
:func:`register_family`. :class:`~captum_paths.model.sites.NeuronSites` (site discovery),
:class:`~captum_paths.model.stream.ResidualStream` (the fast engine's stream) and the
pixel figures (patch size) and the loaders (default preprocessing) ask the registry;
nothing else names a family.

Your own architecture in a few lines::

    from captum_paths.model.families import FamilyAdapter, SiteSpec, register_family
    from captum_paths.model.tokens import TokenSelection

    @register_family
    class MyViT(FamilyAdapter):
        name = "my-vit"

        def sites(self, model):
            if type(model).__name__ != "MyViT":
                return None
            return SiteSpec([b.ffn.act for b in model.layers], "output", TokenSelection("cls"))
"""
from captum_paths.model.families.base import (
    CallWith,
    FamilyAdapter,
    SiteSpec,
    SplitBlock,
    StreamParts,
    default_transform,
    families,
    find_family,
    get_family,
    inner_model,
    loader_spec,
    looked_for,
    register_family,
)

# the built-in families, the most general first (adapters registered later are asked first)
from captum_paths.model.families import timm_staged  # noqa: E402,F401  isort: skip  (the fallback: asked last)
from captum_paths.model.families import timm_vit  # noqa: E402,F401  isort: skip
from captum_paths.model.families import timm_eva, timm_beit, timm_cait, timm_late_cls  # noqa: E402,F401  isort: skip
from captum_paths.model.families import torchvision_vit, huggingface, open_clip, swin  # noqa: E402,F401  isort: skip
from captum_paths.model.families import zero_shot  # noqa: E402,F401  isort: skip  (asked first: it delegates)

__all__ = ["CallWith", "FamilyAdapter", "SiteSpec", "SplitBlock", "StreamParts", "register_family", "find_family",
           "get_family", "families", "inner_model", "looked_for", "default_transform", "loader_spec"]
