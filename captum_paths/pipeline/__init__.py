"""The run pipeline: a run folder and the stages that fill it.

- :class:`Run` (``run.py``): owns a run folder (settings, file names, records,
  stage outputs) and loads the run's model and images once;
- stages, one module each, called through the :class:`Run`: ``extract.py``
  (path records; :func:`extract_paths` for tensors in memory), ``evaluate.py``
  (the paper's experiments; :func:`evaluate_paths` in memory), ``analyze.py``
  (class-level analysis), ``report.py`` (HTML page and Markdown summary);
- ``demo.py``: :func:`run_demo`, every stage on the embedded demo model.

The command line (:mod:`captum_paths.cli`) parses arguments and calls these.
"""
from captum_paths.pipeline.run import COMPATIBLE_KEYS, Run, RunMismatchError, run_settings

__all__ = ["Run", "RunMismatchError", "run_settings", "COMPATIBLE_KEYS", "extract_paths", "evaluate_paths",
           "run_demo"]


def __getattr__(name: str):
    # the stages import torch, pandas and plotting; load them on first use
    if name == "extract_paths":
        from captum_paths.pipeline.extract import extract_paths

        return extract_paths
    if name == "evaluate_paths":
        from captum_paths.pipeline.evaluate import evaluate_paths

        return evaluate_paths
    if name == "run_demo":
        from captum_paths.pipeline.demo import run_demo

        return run_demo
    raise AttributeError(f"module 'captum_paths.pipeline' has no attribute {name!r}")
