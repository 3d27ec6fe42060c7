"""Which pixels drive a path neuron: Captum neuron attributions on the image grid.

:func:`neuron_pixel_attribution` runs Captum's ``NeuronIntegratedGradients``
(default) or ``NeuronConductance`` on the site module of one layer
(:class:`~captum_paths.model.sites.NeuronSites`) and returns the attribution per input
value, per pixel (summed over channels) and per patch (summed over each
``patch_size`` cell of the model's patch grid). This is the only part of
:mod:`captum_paths.analysis` that needs the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from captum_paths.model.sites import NeuronSites

__all__ = ["NeuronPixelAttribution", "neuron_pixel_attribution", "model_patch_size", "neuron_selector"]


@dataclass
class NeuronPixelAttribution:
    """Pixel-space explanation of one neuron on one image.

    ``values`` is what Captum's ``NeuronIntegratedGradients`` (or ``NeuronConductance``) returns for
    the image, in Captum's layout: the input's ``(C, H, W)``, as a NumPy array. Captum's
    visualisation takes it as it takes Captum's own attributions, channels last::

        >>> from captum.attr import visualization as viz
        >>> a = neuron_pixel_attribution(model, image, layer=3, neuron=101)
        >>> fig, ax = viz.visualize_image_attr(np.transpose(a.values, (1, 2, 0)),
        ...                                    np.transpose(image.numpy(), (1, 2, 0)),
        ...                                    method="blended_heat_map", sign="all")

    Attributes:
        values (ndarray): ``(C, H, W)`` attribution of every input value (Captum's layout:
            the image's shape; ``torch.from_numpy(values)[None]`` is Captum's ``(1, C, H, W)``).
        pixels (ndarray): ``(H, W)`` ``values`` summed over channels.
        patches (ndarray): ``(H / ph, W / pw)`` ``pixels`` summed over each patch.
        patch_size (tuple): ``(ph, pw)``.
        layer, neuron (int): The neuron explained.
        method (str): ``"integrated_gradients"`` or ``"conductance"``.
        activation (float): The neuron's value on the image (summed over the
            selected tokens).
        baseline_activation (float): Its value on the baseline image.
    """

    values: np.ndarray
    pixels: np.ndarray
    patches: np.ndarray
    patch_size: Tuple[int, int]
    layer: int
    neuron: int
    method: str
    activation: float
    baseline_activation: float

    def upsampled_patches(self) -> np.ndarray:
        """``(H, W)``: every pixel holds its patch's value."""
        ph, pw = self.patch_size
        return np.kron(self.patches, np.ones((ph, pw), dtype=self.patches.dtype))


def model_patch_size(model: nn.Module) -> Tuple[int, int]:
    """The patch size ``(ph, pw)`` of a model (or of the one backbone inside it), as its family
    adapter declares it."""
    from captum_paths.model.families import inner_model
    from captum_paths.model.families.base import find_backbone

    found = find_backbone(model)
    size = found.adapter.patch_size(found.module) if found is not None else None
    if size is None:
        family = f"family {found.adapter.name!r}" if found is not None else "no registered family"
        raise ValueError(f"cannot find the patch size of a {type(inner_model(model)).__name__} ({family}); "
                         "pass patch_size=(ph, pw)")
    return size


def neuron_selector(sites: NeuronSites, neuron: int) -> Union[Tuple[int, int], Callable[[torch.Tensor], torch.Tensor]]:
    """Captum neuron selector for channel ``neuron`` at the sites' token selection.

    The CLS token gives the tuple ``(0, neuron)``; any other selection gives a
    callable that sums the channel over the selected tokens.
    """
    if sites.tokens.kind == "cls":
        return (0, int(neuron))
    tokens = sites.tokens

    def select(act: torch.Tensor) -> torch.Tensor:
        return act[:, tokens.index(act.shape[1]), int(neuron)].sum(dim=1)

    return select


def neuron_pixel_attribution(
    model: nn.Module,
    image: torch.Tensor,
    layer: int,
    neuron: int,
    sites: Optional[NeuronSites] = None,
    method: str = "integrated_gradients",
    baseline: Optional[torch.Tensor] = None,
    n_steps: int = 50,
    internal_batch_size: Optional[int] = None,
    patch_size: Optional[Sequence[int]] = None,
) -> NeuronPixelAttribution:
    """Attribute one path neuron ``(layer, neuron)`` to the pixels of one image.

    Args:
        model (nn.Module): The model the path was found in (returns logits).
        image (Tensor): ``(C, H, W)`` or ``(1, C, H, W)``, preprocessed as for the model.
        layer, neuron (int): The neuron, e.g. ``record["path"][layer][0]``.
        sites (NeuronSites, optional): Default ``NeuronSites.from_model(model)``.
        method (str, optional): ``"integrated_gradients"`` (Captum
            ``NeuronIntegratedGradients``) or ``"conductance"`` (Captum
            ``NeuronConductance``, which needs a class: it uses the model's
            prediction). Default: ``"integrated_gradients"``.
        baseline (Tensor, optional): Baseline image; default zeros.
        n_steps (int, optional): Integration steps. Default: 50.
        internal_batch_size (int, optional): Rows per forward/backward pass of the
            integral (Captum's argument). Default: all ``n_steps`` at once.
        patch_size (sequence of 2 ints, optional): Default: from the model.

    Returns:
        :class:`NeuronPixelAttribution`. With integrated gradients, ``pixels``
        sums to about ``activation - baseline_activation`` (completeness).
    """
    from captum.attr import NeuronConductance, NeuronIntegratedGradients

    if method not in ("integrated_gradients", "conductance"):
        raise ValueError(f"method must be 'integrated_gradients' or 'conductance'; got {method!r}")
    sites = sites if sites is not None else NeuronSites.from_model(model)
    layer = sites.check_layer(layer)
    if sites.kinds[layer] != "neuron":
        raise ValueError(f"layer {layer} holds attention heads; pixel attribution explains one FFN neuron (a "
                         "channel), pass a neuron layer")
    width = sites.widths[layer] if sites.widths is not None else None
    if width is not None and not 0 <= int(neuron) < width:
        raise ValueError(f"neuron {neuron} is out of range: layer {layer} has {width} neurons")
    x = image.unsqueeze(0) if image.dim() == 3 else image
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"image must be (C, H, W) or (1, C, H, W); got {tuple(image.shape)}")
    x = x.detach().to(next(model.parameters()).device)
    base = torch.zeros_like(x) if baseline is None else baseline.reshape(x.shape).to(x)
    ph, pw = tuple(patch_size) if patch_size is not None else model_patch_size(model)
    h, w = x.shape[-2:]
    if h % ph or w % pw:
        raise ValueError(f"image size {(h, w)} is not a multiple of the patch size {(ph, pw)}")

    module = sites.modules[layer]
    to_input = sites.captures[layer] == "input"
    selector = neuron_selector(sites, neuron)
    if method == "integrated_gradients":
        explainer = NeuronIntegratedGradients(model, module)
        attr = explainer.attribute(
            x, selector, baselines=base, n_steps=n_steps, internal_batch_size=internal_batch_size,
            attribute_to_neuron_input=to_input,
        )
    else:
        with torch.no_grad():
            target = int(model(x).argmax(dim=1))
        explainer = NeuronConductance(model, module)
        attr = explainer.attribute(
            x, selector, baselines=base, target=target, n_steps=n_steps,
            internal_batch_size=internal_batch_size, attribute_to_neuron_input=to_input,
        )
    values = attr.detach()[0].cpu().double().numpy()
    pixels = values.sum(axis=0)
    patches = pixels.reshape(h // ph, ph, w // pw, pw).sum(axis=(1, 3))
    activation, baseline_activation = _neuron_values(model, sites, layer, int(neuron), torch.cat([x, base]))
    return NeuronPixelAttribution(
        values=values,
        pixels=pixels,
        patches=patches,
        patch_size=(int(ph), int(pw)),
        layer=layer,
        neuron=int(neuron),
        method=method,
        activation=activation,
        baseline_activation=baseline_activation,
    )


def _neuron_values(model, sites, layer, neuron, x) -> Tuple[float, float]:
    """The neuron (summed over the selected tokens) on each row of ``x``."""
    with torch.no_grad(), sites.record(layers=[layer]) as acts:
        model(x)
    values = acts[layer][:, :, neuron].sum(dim=1).double().cpu()
    return float(values[0]), float(values[1])
