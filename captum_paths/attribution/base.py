"""The Captum base every captum_paths attribution shares: a model, its sites, an output."""
from __future__ import annotations

from typing import Optional

from captum.attr import GradientAttribution
from torch import nn

from captum_paths.attribution.output import check_output
from captum_paths.model.loading import as_logits_model
from captum_paths.model.sites import NeuronSites, resolve_sites

__all__ = ["SiteAttribution"]


class SiteAttribution(GradientAttribution):
    """A ``GradientAttribution`` over a model's neuron sites.

    Args:
        model (nn.Module): A vision transformer; models returning a structure
            (Hugging Face ``ModelOutput``) are wrapped so ``forward_func`` returns logits.
        sites (NeuronSites, optional): Default ``NeuronSites.from_model(model)``.
        output (str, optional): ``"prob"`` (softmax probability of the target,
            default) or ``"logit"``.
    """

    def __init__(
        self, model: nn.Module, sites: Optional[NeuronSites] = None, output: str = "prob"
    ) -> None:
        self.sites = resolve_sites(model, sites)
        GradientAttribution.__init__(self, as_logits_model(model))
        self.model = model
        self.output = check_output(output)
