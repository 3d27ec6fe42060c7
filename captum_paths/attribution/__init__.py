"""The attribution math: joint integrated gradients over neuron sets."""
from captum_paths.attribution.joint_integrated_gradients import JointNeuronIntegratedGradients
from captum_paths.attribution.neuron_sets import NeuronSet, parse_neurons

__all__ = ["JointNeuronIntegratedGradients", "NeuronSet", "parse_neurons"]
