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
- :class:`Run` (``captum_paths.pipeline``): a run folder and its stages (extract,
  evaluate, analyze, report); :class:`PathRecord` (``captum_paths.records``): the
  record schema.
- ``captum_paths.demo``: the embedded digits ViT that runs offline.
"""
from importlib import import_module
from typing import TYPE_CHECKING, Any, Dict, List

from captum_paths._version import __version__

# Names are imported on first use, so that ``import captum_paths`` (and the
# command line's ``--help``) does not pay for torch, Captum, pandas, networkx,
# seaborn or transformers until they are needed.
_LAZY: Dict[str, str] = {
    "JointNeuronIntegratedGradients": "captum_paths.attribution",
    **{name: "captum_paths.analysis" for name in (
        "PathGraph", "PathSharing", "PathTable", "class_similarity", "consensus_paths", "nearest_classes",
        "neuron_frequencies", "neuron_pixel_attribution", "path_sharing", "shared_edges", "shared_neurons",
        "typical_paths",
    )},
    **{name: "captum_paths.evaluation" for name in (
        "class_consensus", "jas_comparison", "probability_deviation", "pruning_study", "summarize_deviation",
    )},
    **{name: "captum_paths.interventions" for name in (
        "enhance_neurons", "prune_neurons", "remove_neurons", "scale_neurons",
    )},
    "LogitsOnly": "captum_paths.models",
    "load_model": "captum_paths.models",
    **{name: "captum_paths.search" for name in (
        "PATH_METHODS", "ActivationPath", "ConductancePath", "InfluencePatternPath", "KnowledgeNeuronPath",
        "LayerProgressiveNeuronPath", "PathAttribution", "PathResult", "RandomPath", "get_path_method",
        "register_path_method",
    )},
    "NeuronSites": "captum_paths.sites",
    "TokenSelection": "captum_paths.sites",
    "PathRecord": "captum_paths.records",
    "Run": "captum_paths.pipeline",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'captum_paths' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from captum_paths.analysis import (  # noqa: F401
        PathGraph, PathSharing, PathTable, class_similarity, consensus_paths, nearest_classes,
        neuron_frequencies, neuron_pixel_attribution, path_sharing, shared_edges, shared_neurons,
        typical_paths,
    )
    from captum_paths.attribution import JointNeuronIntegratedGradients  # noqa: F401
    from captum_paths.evaluation import (  # noqa: F401
        class_consensus, jas_comparison, probability_deviation, pruning_study, summarize_deviation,
    )
    from captum_paths.interventions import enhance_neurons, prune_neurons, remove_neurons, scale_neurons  # noqa: F401
    from captum_paths.models import LogitsOnly, load_model  # noqa: F401
    from captum_paths.search import (  # noqa: F401
        PATH_METHODS, ActivationPath, ConductancePath, InfluencePatternPath, KnowledgeNeuronPath,
        LayerProgressiveNeuronPath, PathAttribution, PathResult, RandomPath, get_path_method,
        register_path_method,
    )
    from captum_paths.pipeline import Run  # noqa: F401
    from captum_paths.records import PathRecord  # noqa: F401
    from captum_paths.sites import NeuronSites, TokenSelection  # noqa: F401

__all__ = [
    "__version__",
    "PATH_METHODS",
    "ActivationPath",
    "ConductancePath",
    "InfluencePatternPath",
    "KnowledgeNeuronPath",
    "RandomPath",
    "get_path_method",
    "register_path_method",
    "PathAttribution",
    "JointNeuronIntegratedGradients",
    "LayerProgressiveNeuronPath",
    "PathResult",
    "PathRecord",
    "Run",
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
