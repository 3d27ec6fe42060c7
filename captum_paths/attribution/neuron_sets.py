"""Neuron sets: the many ways a user can name neurons, turned into one form.

A neuron set is held as two LongTensors ``layers`` and ``units`` of shape
``(batch, n)``: example ``i``'s set is ``{(layers[i, m], units[i, m])}``.
"""
from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

#: the forms a neuron set may take, for error messages
ACCEPTED = (
    "one (layer, neuron) pair; a list of such pairs (one set shared by the batch); a list of such lists, "
    "one per example (equal sizes); an (n, 2) integer array or tensor of pairs; a (batch, L, k) integer index "
    "tensor (a path, k neurons per layer); or a path-search result (anything with a `paths` tensor). Layer and "
    "neuron indices may be Python, numpy or tensor integers"
)


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
    neurons: Any, batch: int, num_layers: int, width: Widths, repeated: bool = False
) -> NeuronSet:
    """Turn any accepted neuron specification into a :class:`NeuronSet`.

    Accepted: one ``(layer, neuron)`` pair; a list of such pairs (shared by the batch); a
    list of such lists, one per example; an ``(n, 2)`` integer array or tensor of pairs; a
    ``(batch, L, k)`` index tensor (a path with k neurons per layer, ``L == num_layers``);
    or any object with a ``paths`` attribute holding such a tensor (a path-search result).
    Indices may be Python, numpy or tensor integers (numpy arrays stand for lists).
    ``width`` is the FFN width of every layer, or a list of per-layer widths
    (hierarchical models). With ``repeated``, per-example sets whose count ``n`` divides the
    batch are repeated for consecutive groups of ``batch / n`` examples (``repeat_interleave``,
    as Captum's ``NoiseTunnel`` expands each image and its per-example arguments). Every error
    names what was received and the accepted forms.
    """
    received = _received(neurons)
    neurons = canonical_neurons(neurons)
    if isinstance(neurons, torch.Tensor):
        return _from_path_tensor(neurons, batch, num_layers, width, received, repeated)
    if not isinstance(neurons, Sequence) or isinstance(neurons, (str, bytes)):
        raise TypeError(f"neurons must be {ACCEPTED}; got {received}")
    if len(neurons) == 0:
        raise ValueError(f"neurons is empty: a neuron set needs at least one (layer, neuron) pair; accepted: "
                         f"{ACCEPTED}")
    if looks_like_pair(neurons[0]):
        per_example = [neurons] * batch
    else:
        if repeated and len(neurons) != batch and batch % len(neurons) == 0:
            neurons = [s for s in neurons for _ in range(batch // len(neurons))]
        if len(neurons) != batch:
            raise ValueError(
                f"neurons holds {len(neurons)} sets but inputs hold {batch} examples: give "
                f"one list of (layer, neuron) pairs per example, or a single list shared by all; got {received}"
            )
        per_example = [_listed(s) for s in neurons]
    sizes = {len(s) if isinstance(s, Sequence) and not isinstance(s, (str, bytes)) else -1 for s in per_example}
    if -1 in sizes or not all(_is_pair(p) for s in per_example for p in s):
        raise TypeError(
            "neurons: every element must be a (layer, neuron) pair of integers, or a list of "
            f"such pairs per example; got {received}. Accepted: {ACCEPTED}"
        )
    if 0 in sizes:
        raise ValueError(f"neurons: a neuron set is empty; each set needs at least one (layer, neuron) pair; got "
                         f"{received}")
    if len(sizes) != 1:
        raise ValueError(
            f"neurons: every example's set must have the same size; got sizes {sorted(sizes)}"
        )
    table = torch.tensor([[[operator.index(v) for v in p] for p in s] for s in per_example], dtype=torch.long)
    result = NeuronSet(table[..., 0].contiguous(), table[..., 1].contiguous())
    _check_ranges(result, num_layers, width)
    return result


def canonical_neurons(neurons: Any) -> Any:
    """``neurons`` in the plain forms :func:`parse_neurons` reads: a path-search result's ``paths``
    tensor; a ``(batch, L, k)`` tensor (numpy arrays too); a single pair as a list holding it; ``(n, 2)``
    (or ``(2,)``) integer arrays and tensors as lists of pairs; per-example arrays as lists. Anything
    else is returned as it is (and refused by :func:`parse_neurons` with its message)."""
    paths = getattr(neurons, "paths", None)
    if isinstance(paths, torch.Tensor):
        return paths
    if _is_array(neurons):
        array = _as_tensor(neurons)
        if array is None or array.dim() == 3 or array.is_floating_point():
            return neurons if array is None else array
        if array.dim() == 1 and array.shape[0] == 2:
            return [tuple(array.tolist())]
        if array.dim() == 2 and array.shape[1] == 2:
            return [tuple(p) for p in array.tolist()]
        return array  # another shape: refused as a path tensor, with its shape
    if looks_like_pair(neurons):
        return [neurons]
    return neurons


def looks_like_pair(obj: Any) -> bool:
    """A 2-sequence of scalars (Python, numpy or 0-d tensor numbers): meant as one (layer, neuron) pair,
    valid or not."""
    return (
        isinstance(obj, Sequence)
        and not isinstance(obj, (str, bytes))
        and len(obj) == 2
        and all(_is_scalar(v) for v in obj)
    )


def _is_scalar(value: Any) -> bool:
    if isinstance(value, (str, bytes)):
        return False
    if isinstance(value, numbers.Number):  # numpy scalars are registered numbers too
        return True
    return getattr(value, "ndim", None) == 0 and _is_array(value)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool) or (_is_array(value) and str(getattr(value, "dtype", "")) in ("bool", "torch.bool")):
        return False
    if isinstance(value, float) or (_is_array(value) and getattr(value, "ndim", 1) != 0):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _is_pair(obj: Any) -> bool:
    return (
        isinstance(obj, Sequence)
        and not isinstance(obj, (str, bytes))
        and len(obj) == 2
        and all(_is_integer(v) for v in obj)
    )


def _is_array(obj: Any) -> bool:
    """A tensor or a numpy array (or scalar array)."""
    if isinstance(obj, torch.Tensor):
        return True
    return type(obj).__module__ == "numpy" and hasattr(obj, "ndim") and hasattr(obj, "dtype")


def _as_tensor(array: Any) -> Optional[torch.Tensor]:
    if isinstance(array, torch.Tensor):
        return array
    try:
        return torch.as_tensor(array)
    except (TypeError, ValueError, RuntimeError):  # object arrays and the like
        return None


def _listed(entry: Any) -> Any:
    """One example's set: an ``(n, 2)`` integer array or tensor as a list of pairs, else itself."""
    if _is_array(entry):
        array = _as_tensor(entry)
        if array is not None and not array.is_floating_point() and array.dim() == 2 and array.shape[1] == 2:
            return [tuple(p) for p in array.tolist()]
    return entry


def _received(neurons: Any) -> str:
    """What was passed as ``neurons``, briefly, for messages."""
    if _is_array(neurons):
        return f"a {type(neurons).__name__} of shape {tuple(neurons.shape)} and dtype {neurons.dtype}"
    text = repr(neurons)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(neurons).__name__} {text}"


def _from_path_tensor(paths: torch.Tensor, batch: int, num_layers: int, width: Widths,
                      received: Optional[str] = None, repeated: bool = False) -> NeuronSet:
    received = received or _received(paths)
    if paths.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"neurons: a path tensor must hold integer indices; got {received}. Accepted: {ACCEPTED}")
    if repeated and paths.dim() == 3 and 0 < paths.shape[0] < batch and batch % paths.shape[0] == 0:
        paths = paths.repeat_interleave(batch // paths.shape[0], dim=0)
    if paths.dim() != 3 or paths.shape[0] != batch or paths.shape[1] != num_layers or paths.shape[2] < 1:
        raise ValueError(
            f"neurons: a path tensor must have shape (batch, L, k) = ({batch}, {num_layers}, k>=1) "
            f"for {batch} examples and {num_layers} layers; got {tuple(paths.shape)} ({received}). "
            f"Accepted: {ACCEPTED}"
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
