"""Zero-shot classifiers: an image tower and one text embedding per class as a classifier.

CLIP-style models (open_clip, Hugging Face CLIP and SigLIP) classify by comparing
the image embedding with a text embedding of each class name.
:class:`ZeroShotClassifier` makes that a model whose logits ``(batch, classes)``
are ``scale * cos(image, class) + bias``, so its softmax is the usual target
probability and every path method applies to it unchanged.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ZeroShotClassifier", "HFImageFeatures"]

DEFAULT_TEMPLATES = ("a photo of a {}.",)


class ZeroShotClassifier(nn.Module):
    """``logits = scale * normalize(encode(x)) @ normalize(class_embeddings).T + bias``.

    Args:
        tower (nn.Module): the image tower holding the transformer blocks (its
            neurons are the ones searched), e.g. open_clip ``model.visual`` or
            Hugging Face ``model.vision_model``.
        class_embeddings (Tensor): ``(classes, D)`` text embedding of each class.
        encode (callable, optional): images ``(batch, C, H, W)`` -> embeddings
            ``(batch, D)``. Default: ``tower`` itself.
        logit_scale (float): the scale (CLIP's learned temperature, 100 for the
            published models). Default: 100.
        logit_bias (float, optional): SigLIP's learned bias. Default: ``None``.
    """

    def __init__(
        self,
        tower: nn.Module,
        class_embeddings: torch.Tensor,
        encode: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        logit_scale: float = 100.0,
        logit_bias: Optional[float] = None,
    ) -> None:
        super().__init__()
        if not isinstance(tower, nn.Module):
            raise TypeError(f"tower must be an nn.Module; got {type(tower).__name__}")
        if not isinstance(class_embeddings, torch.Tensor) or class_embeddings.dim() != 2:
            raise ValueError("class_embeddings must be a (classes, D) tensor; got "
                             f"{getattr(class_embeddings, 'shape', type(class_embeddings).__name__)}")
        self.tower = tower
        if encode is not None and not callable(encode):
            raise TypeError(f"encode must be callable or None; got {type(encode).__name__}")
        self.encode = encode  # an nn.Module here is registered, so .to() and .eval() reach it
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.detach().float(), dim=-1))
        self.logit_scale = float(logit_scale)
        self.logit_bias = None if logit_bias is None else float(logit_bias)

    @property
    def num_classes(self) -> int:
        return self.class_embeddings.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encode(images) if self.encode is not None else self.tower(images)
        if isinstance(features, (tuple, list)):
            features = features[0]
        features = F.normalize(features.float(), dim=-1)
        logits = self.logit_scale * features @ self.class_embeddings.T
        return logits if self.logit_bias is None else logits + self.logit_bias

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_open_clip(
        cls,
        model: nn.Module,
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        classnames: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
    ) -> "ZeroShotClassifier":
        """From an open_clip ``CLIP`` model and its tokenizer
        (``open_clip.get_tokenizer(name)``): each class's embedding is the mean of
        its normalised template embeddings."""
        embeddings = _class_embeddings(classnames, templates,
                                       lambda texts: model.encode_text(tokenizer(list(texts)).to(_device(model))))
        scale = float(model.logit_scale.detach().exp()) if getattr(model, "logit_scale", None) is not None else 100.0
        bias = getattr(model, "logit_bias", None)
        return cls(model.visual, embeddings, logit_scale=scale, logit_bias=_scalar(bias))

    @classmethod
    def from_hf(
        cls,
        model: nn.Module,
        tokenizer: Callable[..., dict],
        classnames: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
    ) -> "ZeroShotClassifier":
        """From a Hugging Face ``CLIPModel`` or ``SiglipModel`` and its tokenizer."""
        def encode_text(texts):
            tokens = tokenizer(list(texts), padding="max_length", truncation=True, return_tensors="pt")
            return _features(model.get_text_features(**{k: v.to(_device(model)) for k, v in tokens.items()}))

        embeddings = _class_embeddings(classnames, templates, encode_text)
        scale = float(model.logit_scale.detach().exp()) if getattr(model, "logit_scale", None) is not None else 100.0
        bias = getattr(model, "logit_bias", None)
        return cls(model.vision_model, embeddings, encode=HFImageFeatures(model),
                   logit_scale=scale, logit_bias=_scalar(bias))


class HFImageFeatures(nn.Module):
    """``model.get_image_features(pixel_values=x)`` of a Hugging Face CLIP / SigLIP model, as a module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=images))


def _scalar(value) -> Optional[float]:
    """A learned scalar (a parameter or a number) as a float, ``None`` stays ``None``."""
    if value is None:
        return None
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _features(output):
    """The embedding tensor of ``get_*_features`` (a tensor, or an output object in transformers 5)."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"cannot find the embedding in a {type(output).__name__}")


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _class_embeddings(classnames: Sequence[str], templates: Sequence[str],
                      encode_text: Callable[[Sequence[str]], torch.Tensor]) -> torch.Tensor:
    if isinstance(classnames, str) or not classnames:
        raise ValueError(f"classnames must be a non-empty list of names; got {classnames!r}")
    if isinstance(templates, str) or not templates or not all("{}" in t for t in templates):
        raise ValueError(f"templates must be a list of strings with a '{{}}' for the class name; got {templates!r}")
    rows = []
    with torch.no_grad():
        for name in classnames:
            emb = F.normalize(encode_text([t.format(name) for t in templates]).float(), dim=-1)
            rows.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(rows)
