"""captum_paths: influential neuron paths in vision transformers, as a Captum extension.

The public API is flat:

- :class:`NeuronSites` (``captum_paths.sites``): where a model's FFN neurons live.
- :class:`JointNeuronIntegratedGradients` (``captum_paths.attribution``): the joint
  attribution score of a neuron set spread over dependent layers.
- :class:`LayerProgressiveNeuronPath` (``captum_paths.search``): the path search
  engine; baselines in ``captum_paths.search.baselines``.
- ``captum_paths.interventions`` / ``captum_paths.evaluation``: remove, enhance and
  prune neurons; the paper's experiments as tidy DataFrames.
- ``captum_paths.analysis``: path graphs (networkx), class consensus, sharing and
  similarity, pixel explanations of path neurons; figures in ``captum_paths.plots``.
- ``captum_paths.models`` / ``captum_paths.data``: loading models and image folders.
- ``captum_paths.demo``: the embedded digits ViT that runs offline.
"""
from captum_paths._version import __version__
from captum_paths.attribution import JointNeuronIntegratedGradients
from captum_paths.analysis import (
    PathGraph,
    PathSharing,
    PathTable,
    class_similarity,
    consensus_paths,
    nearest_classes,
    neuron_frequencies,
    neuron_pixel_attribution,
    path_sharing,
    shared_edges,
    shared_neurons,
    typical_paths,
)
from captum_paths.evaluation import (
    class_consensus,
    jas_comparison,
    probability_deviation,
    pruning_study,
    summarize_deviation,
)
from captum_paths.interventions import enhance_neurons, prune_neurons, remove_neurons, scale_neurons
from captum_paths.models import LogitsOnly, load_model
from captum_paths.search import (
    PATH_METHODS,
    ActivationPath,
    ConductancePath,
    InfluencePatternPath,
    KnowledgeNeuronPath,
    LayerProgressiveNeuronPath,
    PathResult,
    RandomPath,
    get_path_method,
)
from captum_paths.sites import NeuronSites, TokenSelection

__all__ = [
    "__version__",
    "PATH_METHODS",
    "ActivationPath",
    "ConductancePath",
    "InfluencePatternPath",
    "KnowledgeNeuronPath",
    "RandomPath",
    "get_path_method",
    "JointNeuronIntegratedGradients",
    "LayerProgressiveNeuronPath",
    "PathResult",
    "LogitsOnly",
    "NeuronSites",
    "TokenSelection",
    "load_model",
    "class_consensus",
    "jas_comparison",
    "probability_deviation",
    "pruning_study",
    "summarize_deviation",
    "enhance_neurons",
    "prune_neurons",
    "remove_neurons",
    "scale_neurons",
    "PathGraph",
    "PathSharing",
    "PathTable",
    "class_similarity",
    "consensus_paths",
    "nearest_classes",
    "neuron_frequencies",
    "neuron_pixel_attribution",
    "path_sharing",
    "shared_edges",
    "shared_neurons",
    "typical_paths",
]
