"""Analysis of neuron paths across images and classes.

See "Class-level analysis" in docs/method.md. Everything here reads path records
(see "Records" there), never the model, except :func:`neuron_pixel_attribution`,
which explains one path neuron in pixel space, and :class:`CausalEdges`, which removes
path units to see which later ones they drive.

- :class:`PathGraph`: the paths as a layered ``networkx.DiGraph`` of
  ``(layer, neuron)`` nodes, with GraphML and node-link JSON round trips.
- Class-level tables (pandas): :func:`neuron_frequencies`,
  :func:`consensus_paths`, :func:`shared_neurons`, :func:`shared_edges`,
  :func:`typical_paths`, :func:`class_similarity`, :func:`nearest_classes`.
- :func:`path_sharing`: within- vs between-class Jaccard of paths.
- :func:`path_agreement`: two sets of records of the same images (two runs) side by side.
- :class:`CausalEdges`: whether a path is a chain: the effect of each path unit on the
  later ones by intervention, normalised, against a noise floor of random unit pairs
  (:func:`class_causal_edges` per class; :meth:`PathGraph.with_causal_edges` puts them on
  the graph). Like :func:`neuron_pixel_attribution`, it runs the model.
- :class:`PathTable`: records as numpy arrays; build it once and pass it to any
  of the above to skip re-reading the records.

Plots of all of these live in :mod:`captum_paths.plots.paths`.
"""
from captum_paths.analysis.agreement import path_agreement
from captum_paths.analysis.causal_edges import CausalEdgeResult, CausalEdges, class_causal_edges
from captum_paths.analysis.classes import (
    PathSharing,
    class_similarity,
    consensus_path_lists,
    consensus_paths,
    nearest_classes,
    neuron_frequencies,
    path_sharing,
    shared_edges,
    shared_neurons,
    typical_paths,
)
from captum_paths.analysis.graph import PathGraph, node_key, parse_node_key
from captum_paths.analysis.pixels import (
    NeuronPixelAttribution,
    model_patch_size,
    neuron_pixel_attribution,
    neuron_selector,
)
from captum_paths.analysis.table import PathTable, as_table

__all__ = [
    "CausalEdges",
    "CausalEdgeResult",
    "class_causal_edges",
    "PathGraph",
    "PathTable",
    "PathSharing",
    "NeuronPixelAttribution",
    "as_table",
    "node_key",
    "parse_node_key",
    "neuron_frequencies",
    "consensus_paths",
    "consensus_path_lists",
    "shared_neurons",
    "shared_edges",
    "typical_paths",
    "class_similarity",
    "nearest_classes",
    "path_sharing",
    "path_agreement",
    "neuron_pixel_attribution",
    "model_patch_size",
    "neuron_selector",
]
