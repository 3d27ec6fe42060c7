"""The search engine: layer-progressive neuron paths and the baseline methods."""
from captum_paths.search.base import PathAttribution, SearchContext
from captum_paths.search.neuron_path import LayerProgressiveNeuronPath
from captum_paths.search.result import PathResult

__all__ = ["LayerProgressiveNeuronPath", "PathAttribution", "PathResult", "SearchContext"]
