"""Hugging Face image models: ViT, DeiT (with teacher), DINOv2 (with registers), BEiT, and the
CLIP / SigLIP vision towers: ``encoder.layer[i].intermediate`` (transformers < 5) or
``layers[i].mlp.fc2`` / ``down_proj`` / ``weights_out`` (its input is the hidden activation).
Heads: the input of the attention's output projection."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from captum_paths.model.families._hf import HuggingFaceFamily
from captum_paths.model.families.base import SiteSpec, StreamParts, as_pair, heads_spec, projected_heads, register_family
from captum_paths.model.tokens import TokenSelection

__all__ = ["HuggingFaceViT"]

_OUT_PROJ = ("fc2", "weights_out", "down_proj")


@register_family
class HuggingFaceViT(HuggingFaceFamily):
    name = "hf"
    looks_for = ("a Hugging Face ViT-family model (`*.encoder.layer[i].intermediate` or "
                 "`*.layers[i].mlp.fc2`)")

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        layer_list = _layer_list(model)
        if layer_list is None:
            return None
        modules, captures = [], set()
        for layer in layer_list:
            if hasattr(layer, "intermediate"):  # transformers < 5: ViTIntermediate = dense + act
                modules.append(layer.intermediate)
                captures.add("output")
            else:
                mlp = getattr(layer, "mlp", None)
                out_proj = next((getattr(mlp, n) for n in _OUT_PROJ if hasattr(mlp, n)), None)
                if not isinstance(out_proj, nn.Linear):
                    return None
                modules.append(out_proj)
                captures.add("input")
        if len(captures) != 1:
            return None
        capture = captures.pop()
        widths = {_width(m, capture) for m in modules}
        return SiteSpec(modules, capture, _tokens(model), widths.pop() if len(widths) == 1 else None)

    def owns(self, model: nn.Module) -> bool:
        """A Hugging Face model (``PreTrainedModel``): :meth:`sites` searches every submodule for the
        layer list, so it also finds one held by any wrapper, whose own backbone is then looked for."""
        from captum_paths.model.outputs import _is_hf_model

        return _is_hf_model(model)

    def head_sites(self, model: nn.Module) -> Optional[SiteSpec]:
        """The input of each layer's attention output projection (``attention.o_proj``,
        ``self_attn.out_proj``, or ``attention.output.dense`` before transformers 5)."""
        spec = self.sites(model)
        layer_list = _layer_list(model)
        if spec is None or layer_list is None:
            return None
        return heads_spec([_attention_heads(layer, model) for layer in layer_list], "input", spec.tokens)

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        return as_pair(getattr(getattr(model, "config", None), "patch_size", None))

    def stream(self, model: nn.Module, spec: SiteSpec) -> Optional[StreamParts]:
        found = _parts(model)
        if found is None:
            return None
        embed, blocks, head = found
        return StreamParts(embed, blocks, head)


def _layer_list(model: nn.Module) -> Optional[nn.ModuleList]:
    # transformers < 5 keeps the blocks in `vit.encoder.layer`, transformers 5 in `vit.layers`
    for name, module in model.named_modules():
        if (name.rsplit(".", 1)[-1] in ("layer", "layers") and isinstance(module, nn.ModuleList) and len(module)
                and all(hasattr(b, "intermediate") or hasattr(b, "mlp") for b in module)):
            return module
    return None


def _attention_heads(layer: nn.Module, model: nn.Module):
    """``(output projection, heads, head_dim)`` of a Hugging Face layer's self-attention, else ``None``."""
    attention = next((getattr(layer, n) for n in ("attention", "self_attn") if hasattr(layer, n)), None)
    if attention is None:
        return None
    proj = next((getattr(attention, n) for n in ("o_proj", "out_proj") if hasattr(attention, n)), None)
    if proj is None:  # transformers < 5: ViTAttention = attention (ViTSelfAttention) + output (dense)
        proj = getattr(getattr(attention, "output", None), "dense", None)
    heads = next((getattr(m, n) for m in attention.modules() for n in ("num_attention_heads", "num_heads")
                  if isinstance(getattr(m, n, None), int)), None)
    if heads is None:
        config = getattr(model, "config", None)
        heads = getattr(getattr(config, "vision_config", config), "num_attention_heads", None)
    return projected_heads(proj, heads)


def _width(module: nn.Module, capture: str) -> Optional[int]:
    if capture == "input" and isinstance(module, nn.Linear):
        return module.in_features
    dense = getattr(module, "dense", None)
    return dense.out_features if isinstance(dense, nn.Linear) else None


def _tokens(model: nn.Module) -> TokenSelection:
    config = getattr(model, "config", None)
    cls_name = type(model).__name__
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    if cls_name.startswith("DeiT"):
        if "WithTeacher" in cls_name:
            return TokenSelection("indices", (0, 1), 2)
        return TokenSelection("cls", (), 2)
    if cls_name.startswith("Dinov2") and "ImageClassification" in cls_name:
        return TokenSelection("all", (), 1 + registers)  # the head reads the CLS token and the patch mean
    if cls_name.startswith("Siglip"):  # no class token; the attention-pooling head reads every token
        return TokenSelection("all", (), 0)
    if cls_name.startswith("Beit") and getattr(config, "use_mean_pooling", False):
        return TokenSelection("patches", (), 1)
    return TokenSelection("cls", (), 1 + registers)


class _TensorOutput(nn.Module):
    """A Hugging Face layer that returns its hidden states only (transformers < 5 returns a tuple)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.layer(h)
        return out[0] if isinstance(out, (tuple, list)) else out


#: base models (backbones) whose forward is embeddings, layers, layernorm and a pooler
_BASE_MODELS = ("ViTModel", "DeiTModel", "Dinov2Model", "Dinov2WithRegistersModel")


def _parts(model: nn.Module):
    """``(embed, blocks, head)`` of Hugging Face ViT, DeiT and DINOv2 image classifiers, and of their base
    models (``ViTModel``, ``Dinov2Model`` ...: the head returns their ``BaseModelOutputWithPooling``),
    else ``None``."""
    name = type(model).__name__
    if name in _BASE_MODELS:
        base = model
    else:
        base = next((getattr(model, a) for a in ("vit", "deit", "dinov2") if hasattr(model, a)), None)
    if base is None or not hasattr(base, "embeddings") or not hasattr(base, "layernorm"):
        return None
    layers = getattr(base, "layers", None)
    if layers is None:
        layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        return None
    dtype = base.embeddings.patch_embeddings.projection.weight.dtype

    def embed(x: torch.Tensor) -> torch.Tensor:
        return base.embeddings(x.to(dtype))

    if name in ("ViTForImageClassification", "DeiTForImageClassification"):
        def head(h: torch.Tensor) -> torch.Tensor:
            return model.classifier(base.layernorm(h)[:, 0])
    elif name == "DeiTForImageClassificationWithTeacher":
        def head(h: torch.Tensor) -> torch.Tensor:
            s = base.layernorm(h)
            return (model.cls_classifier(s[:, 0]) + model.distillation_classifier(s[:, 1])) / 2
    elif name in ("ViTModel", "DeiTModel"):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooler = getattr(model, "pooler", None)

        def head(h: torch.Tensor):
            s = base.layernorm(h)
            return BaseModelOutputWithPooling(last_hidden_state=s, pooler_output=None if pooler is None else pooler(s))
    elif name in ("Dinov2Model", "Dinov2WithRegistersModel"):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        def head(h: torch.Tensor):
            s = base.layernorm(h)
            return BaseModelOutputWithPooling(last_hidden_state=s, pooler_output=s[:, 0, :])
    elif name in ("Dinov2ForImageClassification", "Dinov2WithRegistersForImageClassification"):
        registers = int(getattr(model.config, "num_register_tokens", 0) or 0)

        def head(h: torch.Tensor) -> torch.Tensor:
            s = base.layernorm(h)
            return model.classifier(torch.cat([s[:, 0], s[:, 1 + registers:].mean(dim=1)], dim=1))
    else:
        return None
    blocks: List[nn.Module] = [_TensorOutput(layer) for layer in layers]
    if name not in _BASE_MODELS:  # a classifier returns its logits in a ModelOutput, as its forward does
        return embed, blocks, _classifier_output(head)
    return embed, blocks, head


def _classifier_output(logits: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], object]:
    """A head returning ``ImageClassifierOutput(logits=...)``, as the classifier's forward does (a wrapper
    reading ``.logits`` of the classifier's output then runs on it; the stream reads the logits)."""
    from transformers.modeling_outputs import ImageClassifierOutput

    return lambda h: ImageClassifierOutput(logits=logits(h))
