"""A toy path method with one option, all of it in this file: importing it registers ``toy``
(tests/test_method_options.py). Per layer it takes the units ``scale .. scale + k - 1``."""
import torch

from captum_paths.search import PathAttribution, register_path_method
from captum_paths.search.base import MethodOption, positive_int


@register_path_method
class ToyPath(PathAttribution):
    """Per layer, the units ``scale .. scale + k - 1`` (modulo the layer's width), whatever the image."""

    name = "toy"
    options = {"scale": MethodOption("a positive int", positive_int, default=1)}

    def _select(self, ctx, scale):
        layers = [(torch.arange(ctx.k) + scale) % width for width in ctx.widths]
        return torch.stack(layers).expand(ctx.batch, -1, -1).to(ctx.device), None, {}
