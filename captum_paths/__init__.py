"""captum_paths: influential neuron paths in vision transformers, as a Captum extension.

The public API is flat (``from captum_paths import ...``); the package has one room
per concern:

- ``captum_paths.model``: model families and their loaders, :class:`NeuronSites` (where
  a model's FFN neurons and attention heads live), image folders;
- ``captum_paths.attribution``: :class:`JointNeuronIntegratedGradients`, the joint
  attribution score of a unit set spread over dependent layers;
- ``captum_paths.search``: :class:`LayerProgressiveNeuronPath`, the path search, and
  the baselines, registered by name;
- ``captum_paths.analysis``: path graphs (networkx), class consensus, sharing and
  similarity, pixel explanations of path neurons;
- ``captum_paths.evaluation``: remove, enhance and prune units; the paper's
  experiments and faithfulness curves as tidy DataFrames;
- ``captum_paths.plots`` and ``captum_paths.explorer``: figures and the HTML explorer;
- ``captum_paths.pipeline``: :class:`Run`, a run folder and its stages (extract,
  evaluate, analyze, report); the command line is ``captum_paths.cli``;
- ``captum_paths.records`` (:class:`PathRecord`, the record schema) and
  ``captum_paths.statistics`` on the ground floor; ``captum_paths.demo``: the
  embedded digits ViT that runs offline.
"""
from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING

from captum_paths import _moved
from captum_paths._version import __version__

_moved.install()  # the old module paths (captum_paths.sites ...) warn and give the moved modules
del _moved

# Names are imported on first use, so that ``import captum_paths`` (and the
# command line's ``--help``) does not pay for torch, Captum, pandas, networkx,
# seaborn or transformers until they are needed.
_LAZY = {
    "JointNeuronIntegratedGradients": "captum_paths.attribution",
    **{name: "captum_paths.attribution.layer_baselines" for name in (
        "CounterfactualBaseline", "LayerBaseline", "MeanBaseline", "SiteBaseline", "ZeroBaseline",
    )},
    **{name: "captum_paths.analysis" for name in (
        "CausalEdges", "PathGraph", "PathSharing", "PathTable", "class_causal_edges", "class_similarity",
        "consensus_paths", "nearest_classes", "neuron_frequencies", "neuron_pixel_attribution", "path_sharing",
        "shared_edges", "shared_neurons", "typical_paths",
    )},
    **{name: "captum_paths.evaluation.harness" for name in (
        "class_consensus", "jas_comparison", "probability_deviation", "pruning_study", "summarize_deviation",
    )},
    **{name: "captum_paths.evaluation.interventions" for name in (
        "enhance_neurons", "prune_neurons", "remove_neurons", "scale_neurons",
    )},
    "LogitsOnly": "captum_paths.model.loading",
    "load_model": "captum_paths.model.loading",
    **{name: "captum_paths.search" for name in (
        "PATH_METHODS", "ActivationPath", "ConductancePath", "InfluencePatternPath", "KnowledgeNeuronPath",
        "LayerProgressiveNeuronPath", "PathAttribution", "PathResult", "RandomPath", "get_path_method",
        "register_path_method",
    )},
    "NeuronSites": "captum_paths.model.sites",
    "TokenSelection": "captum_paths.model.sites",
    "PathRecord": "captum_paths.records",
    "Run": "captum_paths.pipeline",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'captum_paths' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    """The documented API and the rooms, nothing else."""
    return sorted(__all__) + ["analysis", "attribution", "demo", "evaluation", "explorer", "model", "pipeline",
                              "plots", "records", "search", "statistics"]


if _TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from captum_paths.analysis import (  # noqa: F401
        CausalEdges, class_causal_edges, PathGraph, PathSharing, PathTable, class_similarity, consensus_paths, nearest_classes,
        neuron_frequencies, neuron_pixel_attribution, path_sharing, shared_edges, shared_neurons,
        typical_paths,
    )
    from captum_paths.attribution import JointNeuronIntegratedGradients  # noqa: F401
    from captum_paths.attribution.layer_baselines import (  # noqa: F401
        CounterfactualBaseline, LayerBaseline, MeanBaseline, SiteBaseline, ZeroBaseline,
    )
    from captum_paths.evaluation.harness import (  # noqa: F401
        class_consensus, jas_comparison, probability_deviation, pruning_study, summarize_deviation,
    )
    from captum_paths.evaluation.interventions import enhance_neurons, prune_neurons, remove_neurons, scale_neurons  # noqa: F401
    from captum_paths.model.loading import LogitsOnly, load_model  # noqa: F401
    from captum_paths.search import (  # noqa: F401
        PATH_METHODS, ActivationPath, ConductancePath, InfluencePatternPath, KnowledgeNeuronPath,
        LayerProgressiveNeuronPath, PathAttribution, PathResult, RandomPath, get_path_method,
        register_path_method,
    )
    from captum_paths.pipeline import Run  # noqa: F401
    from captum_paths.records import PathRecord  # noqa: F401
    from captum_paths.model.sites import NeuronSites, TokenSelection  # noqa: F401

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
    "LayerBaseline",
    "ZeroBaseline",
    "MeanBaseline",
    "CounterfactualBaseline",
    "SiteBaseline",
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
    "CausalEdges",
    "class_causal_edges",
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
