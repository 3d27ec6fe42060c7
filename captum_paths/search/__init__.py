"""The search engine: layer-progressive neuron paths and the baseline methods, registered by name
(:mod:`captum_paths.search.registry`) as they are defined."""
from captum_paths.search.base import PathAttribution, SearchContext
from captum_paths.search.neuron_path import LayerProgressiveNeuronPath  # registers first: the default method
from captum_paths.search.baselines import (
    ActivationPath,
    ConductancePath,
    InfluencePatternPath,
    KnowledgeNeuronPath,
    RandomPath,
)
from captum_paths.search.registry import PATH_METHODS, create_path_method, get_path_method, register_path_method
from captum_paths.search.result import PathResult

__all__ = [
    "ActivationPath",
    "ConductancePath",
    "InfluencePatternPath",
    "KnowledgeNeuronPath",
    "LayerProgressiveNeuronPath",
    "PATH_METHODS",
    "PathAttribution",
    "PathResult",
    "RandomPath",
    "SearchContext",
    "create_path_method",
    "get_path_method",
    "register_path_method",
]
