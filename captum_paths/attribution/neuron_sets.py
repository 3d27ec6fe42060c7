"""Neuron sets: the many ways a user can name neurons, turned into one form.

A neuron set is held as two LongTensors ``layers`` and ``units`` of shape
``(batch, n)``: example ``i``'s set is ``{(layers[i, m], units[i, m])}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch


@dataclass(frozen=True)
class NeuronSet:
    """Per-example neuron sets of equal size.

    Attributes:
        layers (Tensor): ``(batch, n)`` layer index of each neuron.
        units (Tensor): ``(batch, n)`` channel index of each neuron within its site.
        path_shape (tuple, optional): ``(L, k)`` when the set came from a path, so
            per-neuron results can be returned as ``(batch, L, k)``.
    """

    layers: torch.Tensor
    units: torch.Tensor
    path_shape: Optional[Tuple[int, int]] = None

    @property
    def size(self) -> int:
        return self.layers.shape[1]

    def select(self, index: torch.Tensor) -> "NeuronSet":
        """The sets of the examples ``index``."""
        return NeuronSet(self.layers[index], self.units[index], self.path_shape)

    def shape_like_input(self, values: torch.Tensor) -> torch.Tensor:
        """Reshape per-neuron values ``(batch, n)`` to ``(batch, L, k)`` for path input."""
        if self.path_shape is None:
            return values
        return values.reshape(values.shape[0], *self.path_shape)

    def mask(self, layer: int, width: int) -> torch.Tensor:
        """``(batch, width)`` 0/1 float mask of the neurons of ``layer``."""
        batch = self.layers.shape[0]
        out = torch.zeros(batch, width, device=self.layers.device)
        hit = self.layers == layer
        rows = torch.arange(batch, device=self.layers.device)[:, None].expand_as(hit)
        out[rows[hit], self.units[hit]] = 1.0
        return out


Widths = Union[int, Sequence[int]]


def layer_widths(width: Widths, num_layers: int) -> List[int]:
    """The FFN width of each layer: ``width`` repeated, or the per-layer list itself."""
    if isinstance(width, int):
        return [width] * num_layers
    widths = [int(w) for w in width]
    if len(widths) != num_layers:
        raise ValueError(f"widths must give one width per layer ({num_layers}); got {len(widths)}")
    return widths


def parse_neurons(
    neurons: Any, batch: int, num_layers: int, width: Widths
) -> NeuronSet:
    """Turn any accepted neuron specification into a :class:`NeuronSet`.

    Accepted: a list of ``(layer, neuron)`` pairs (shared by the batch); a list of
    such lists, one per example; a ``(batch, L, k)`` index tensor (a path with k
    neurons per layer, ``L == num_layers``); or any object with a ``paths``
    attribute holding such a tensor (a path-search result). ``width`` is the FFN
    width of every layer, or a list of per-layer widths (hierarchical models).
    """
    paths = getattr(neurons, "paths", None)
    if isinstance(paths, torch.Tensor):
        neurons = paths
    if isinstance(neurons, torch.Tensor):
        return _from_path_tensor(neurons, batch, num_layers, width)
    if not isinstance(neurons, Sequence) or isinstance(neurons, (str, bytes)):
        raise TypeError(
            "neurons must be a list of (layer, neuron) pairs, a list of such lists (one "
            "per example), a (batch, L, k) index tensor or a path-search result; "
            f"got {type(neurons).__name__}"
        )
    if len(neurons) == 0:
        raise ValueError("neurons is empty: a neuron set needs at least one (layer, neuron) pair")
    if looks_like_pair(neurons[0]):
        per_example = [neurons] * batch
    else:
        if len(neurons) != batch:
            raise ValueError(
                f"neurons holds {len(neurons)} sets but inputs hold {batch} examples: give "
                "one list of (layer, neuron) pairs per example, or a single list shared by all"
            )
        per_example = list(neurons)
    sizes = {len(s) if isinstance(s, Sequence) else -1 for s in per_example}
    if -1 in sizes or not all(_is_pair(p) for s in per_example for p in s):
        raise TypeError(
            "neurons: every element must be a (layer, neuron) pair of ints, or a list of "
            "such pairs per example"
        )
    if 0 in sizes:
        raise ValueError("neurons: a neuron set is empty; each set needs at least one (layer, neuron) pair")
    if len(sizes) != 1:
        raise ValueError(
            f"neurons: every example's set must have the same size; got sizes {sorted(sizes)}"
        )
    table = torch.tensor([[list(p) for p in s] for s in per_example], dtype=torch.long)
    result = NeuronSet(table[..., 0].contiguous(), table[..., 1].contiguous())
    _check_ranges(result, num_layers, width)
    return result


def looks_like_pair(obj: Any) -> bool:
    """A 2-sequence of scalars: meant as one (layer, neuron) pair, valid or not."""
    return (
        isinstance(obj, Sequence)
        and not isinstance(obj, (str, bytes))
        and len(obj) == 2
        and not any(isinstance(v, Sequence) for v in obj)
    )


def _is_pair(obj: Any) -> bool:
    return (
        isinstance(obj, Sequence)
        and not isinstance(obj, (str, bytes))
        and len(obj) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in obj)
    )


def _from_path_tensor(paths: torch.Tensor, batch: int, num_layers: int, width: Widths) -> NeuronSet:
    if paths.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"neurons: a path tensor must hold integer indices; got dtype {paths.dtype}")
    if paths.dim() != 3 or paths.shape[0] != batch or paths.shape[1] != num_layers or paths.shape[2] < 1:
        raise ValueError(
            f"neurons: a path tensor must have shape (batch, L, k) = ({batch}, {num_layers}, k>=1) "
            f"for {batch} examples and {num_layers} layers; got {tuple(paths.shape)}"
        )
    paths = paths.long().cpu()
    _, L, k = paths.shape
    layers = torch.arange(L).repeat_interleave(k).expand(batch, L * k).contiguous()
    result = NeuronSet(layers, paths.reshape(batch, L * k), (L, k))
    _check_ranges(result, num_layers, width)
    return result


def _check_ranges(neurons: NeuronSet, num_layers: int, width: Widths) -> None:
    bad_layer = (neurons.layers < 0) | (neurons.layers >= num_layers)
    if bad_layer.any():
        i, m = bad_layer.nonzero()[0].tolist()
        raise ValueError(
            f"neurons: layer index {neurons.layers[i, m].item()} (example {i}) is out of range; "
            f"the model has {num_layers} layers (0..{num_layers - 1})"
        )
    widths = torch.tensor(layer_widths(width, num_layers), dtype=torch.long)
    limit = widths[neurons.layers.cpu()].to(neurons.units.device)
    bad_unit = (neurons.units < 0) | (neurons.units >= limit)
    if bad_unit.any():
        i, m = bad_unit.nonzero()[0].tolist()
        w = int(limit[i, m])
        raise ValueError(
            f"neurons: neuron index {neurons.units[i, m].item()} (example {i}, layer "
            f"{neurons.layers[i, m].item()}) is out of range; the site has {w} neurons (0..{w - 1})"
        )
    key = neurons.layers * int(widths.max()) + neurons.units
    sorted_key = key.sort(dim=1).values
    dup = (sorted_key[:, 1:] == sorted_key[:, :-1]).any(dim=1)
    if dup.any():
        i = int(dup.nonzero()[0])
        raise ValueError(f"neurons: example {i}'s set names the same neuron twice; sets must not repeat a neuron")
