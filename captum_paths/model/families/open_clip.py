"""open_clip ``VisionTransformer`` image towers (``visual.transformer.resblocks[i].mlp`` =
``c_fc``, ``gelu`` (the site), ``c_proj``), alone, inside a ``CLIP`` model, or under a
:class:`~captum_paths.model.zero_shot.ZeroShotClassifier`. The tokens follow the tower's
pooling: the class token (``pool_type='tok'``), the patch tokens (``'avg'``) or every
token (attention pooling). Heads: those of ``resblocks[i].attn``."""
from __future__ import annotations

from typing import Optional, Tuple

from torch import nn

from captum_paths.model.families.base import (
    FamilyAdapter,
    SiteSpec,
    as_pair,
    heads_spec,
    linear_width,
    multihead_attention,
    projected_heads,
    register_family,
)
from captum_paths.model.tokens import TokenSelection
from captum_paths.model.transforms import ToRGB, Transform
from captum_paths.model.loaders import LoadRequest, ModelLoadError, download_message, is_download_error, register_loader, suggest

__all__ = ["OpenClipVisionTransformer"]


def _tower(model: nn.Module) -> Optional[nn.Module]:
    for candidate in (getattr(model, "tower", None), getattr(model, "visual", None), model):
        blocks = getattr(getattr(candidate, "transformer", None), "resblocks", None)
        if isinstance(blocks, nn.ModuleList) and len(blocks) and all(
            all(hasattr(getattr(b, "mlp", None), n) for n in ("c_fc", "gelu", "c_proj")) for b in blocks
        ):
            return candidate
    return None


@register_family
class OpenClipVisionTransformer(FamilyAdapter):
    name = "open_clip"
    loader = "open_clip"
    looks_for = "an open_clip image tower (`visual.transformer.resblocks[i].mlp.gelu`)"

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        tower = _tower(model)
        if tower is None or not getattr(tower.transformer, "batch_first", True):
            return None  # open_clip < 2.23 runs its blocks sequence-first
        blocks = tower.transformer.resblocks
        prefix = 1 if getattr(tower, "class_embedding", None) is not None else 0
        pool = getattr(tower, "pool_type", "tok")
        if getattr(tower, "attn_pool", None) is not None or pool == "none" or prefix == 0:
            tokens = TokenSelection("all", (), prefix)
        elif pool == "avg":
            tokens = TokenSelection("patches", (), prefix)
        else:
            tokens = TokenSelection("cls", (), prefix)
        return SiteSpec([b.mlp.gelu for b in blocks], "output", tokens, linear_width(blocks[0].mlp.c_fc))

    def head_sites(self, model: nn.Module) -> Optional[SiteSpec]:
        """The heads of each ``resblocks[i].attn``: an ``nn.MultiheadAttention``
        (``capture="mha"``), or open_clip's own ``Attention`` (the input of its ``out_proj``)."""
        spec = self.sites(model)
        if spec is None:
            return None
        attentions = [getattr(b, "attn", None) for b in _tower(model).transformer.resblocks]
        if all(isinstance(a, nn.MultiheadAttention) for a in attentions):
            return heads_spec([multihead_attention(a) for a in attentions], "mha", spec.tokens)
        return heads_spec([projected_heads(getattr(a, "out_proj", None), getattr(a, "num_heads", None))
                           for a in attentions], "input", spec.tokens)

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        tower = _tower(model)
        return as_pair(getattr(tower, "patch_size", None)) if tower is not None else None

    def transform(self, model: nn.Module) -> Optional[Transform]:
        """open_clip's evaluation preprocessing: the tower's ``preprocess_cfg`` (set by
        ``open_clip.create_model``), else OpenAI's mean and std at the tower's image size."""
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2
        from torchvision import transforms as T

        tower = _tower(model)
        if tower is None:
            return None
        cfg = getattr(tower, "preprocess_cfg", None)
        base = (image_transform_v2(PreprocessCfg(**cfg), is_train=False) if cfg
                else open_clip.image_transform(tower.image_size, is_train=False))
        return T.Compose([ToRGB(), base])


# -- the library's loader ------------------------------------------------------------


def _load_open_clip(request: LoadRequest) -> Tuple[nn.Module, Transform]:
    """An open_clip model under a zero-shot head over ``classnames`` (see :mod:`captum_paths.model.zero_shot`)."""
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError(f"spec {request.spec!r} needs the open_clip package: pip install captum-paths[open_clip]"
                          ) from exc
    from captum_paths.model.zero_shot import ZeroShotClassifier

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
                         f"{suggest(arch, open_clip.list_models())}")
    try:
        model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=weights,
                                                                    **request.model_kwargs)
    except Exception as exc:
        if is_download_error(exc):
            raise ModelLoadError(download_message(request.spec, exc, "")) from exc
        raise
    tokenizer = open_clip.get_tokenizer(arch)
    classifier = ZeroShotClassifier.from_open_clip(model.eval(), tokenizer, list(request.classnames))
    from torchvision import transforms as T

    return classifier, T.Compose([ToRGB(), transform])


register_loader("open_clip", '"open_clip:ARCH[@TAG]"', random_without_weights=True)(_load_open_clip)
