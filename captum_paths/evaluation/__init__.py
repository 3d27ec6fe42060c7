"""The evaluation room: what the model does when path units are changed.

- ``harness.py``: the paper's experiments as tidy DataFrames (remove / enhance a
  path, JAS comparison, class consensus and pruning);
- ``interventions.py``: remove, enhance, scale and prune units, as context managers;
- ``faithfulness.py``: faithfulness against sparsity (keep the top N units per layer,
  ablate the rest);
- ``circuits.py``: class circuits learned with hard-concrete masks, and attribution
  patching, the cheap ranking they are compared with.

What a removed unit becomes is its neuron baseline: every function that removes,
prunes or ablates units takes ``layer_baselines=`` (zero by default; a
``MeanBaseline``, ``CounterfactualBaseline`` or per-site values, see
:mod:`captum_paths.attribution.layer_baselines`), and every table records it in an
``ablation`` column.

Uncertainty (bootstrap intervals, paired comparisons) is :mod:`captum_paths.statistics`.
"""
from importlib import import_module
from typing import Any

_WHERE = {
    **{name: "harness" for name in (
        "DEVIATION_COLUMNS", "JAS_COLUMNS", "PRUNING_COLUMNS", "SUMMARY_COLUMNS", "probability_deviation",
        "summarize_deviation", "jas_comparison", "class_consensus", "pruning_study", "split_by_class",
        "save_table")},
    **{name: "interventions" for name in ("remove_neurons", "enhance_neurons", "scale_neurons", "prune_neurons")},
    **{name: "faithfulness" for name in ("faithfulness_study",)},
    **{name: "circuits" for name in ("learn_circuits", "circuit_probabilities", "attribution_patching",
                                     "LearnedCircuit", "circuit_study", "circuit_summary", "fewest_circuit_units",
                                     "circuit_path_overlap", "unit_sites")},
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:  # torch, Captum and pandas load on first use
    if name not in _WHERE:
        raise AttributeError(f"module 'captum_paths.evaluation' has no attribute {name!r}")
    return getattr(import_module(f"captum_paths.evaluation.{_WHERE[name]}"), name)


def __dir__():
    return sorted(__all__)
