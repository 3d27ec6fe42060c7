"""The attribution math: joint integrated gradients over unit sets, and the baselines removed units take."""
from captum_paths.attribution.joint_integrated_gradients import JointNeuronIntegratedGradients
from captum_paths.attribution.layer_baselines import (
    CounterfactualBaseline,
    LayerBaseline,
    MeanBaseline,
    SiteBaseline,
    ZeroBaseline,
)
from captum_paths.attribution.neuron_sets import NeuronSet, parse_neurons

__all__ = ["JointNeuronIntegratedGradients", "NeuronSet", "parse_neurons", "LayerBaseline", "ZeroBaseline",
           "MeanBaseline", "CounterfactualBaseline", "SiteBaseline"]
