"""The run pipeline: a run folder and the stages that fill it.

Imports run one way, from the folder up to the stages and on to :class:`Run`:

- ``settings.py``: :class:`RunSettings`, a run's settings (``run.json``), built once and
  checked, with the upgrade of older ``run.json`` layouts and the run's identity;
- ``run.py``: :class:`RunFolder` owns a run folder (settings, file names, records, stage
  outputs) and loads the run's model and images once; it imports no stage;
- the stages, one module each, take a :class:`RunFolder`: ``extract.py`` (path records;
  :func:`extract_paths` for tensors in memory), ``evaluate.py`` (the paper's experiments;
  :func:`evaluate_paths` in memory), ``analyze.py`` (class-level analysis), ``circuits.py``
  (learned class circuits against rankings of units), ``report.py`` (HTML page and Markdown
  summary);
- :class:`Run` (here): a :class:`RunFolder` with the stages as methods;
- ``demo.py``: :func:`run_demo`, every stage on the embedded demo model.

The command line (:mod:`captum_paths.cli`) parses arguments and calls these.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from captum_paths.pipeline.run import RunFolder, RunMismatchError, run_settings
from captum_paths.pipeline.settings import COMPATIBLE_KEYS, RunSettings, legacy_options, merge_method_options

if TYPE_CHECKING:  # pragma: no cover
    from captum_paths.explorer import ExplorerLimits

__all__ = ["Run", "RunFolder", "RunSettings", "RunMismatchError", "run_settings", "COMPATIBLE_KEYS",
           "extract_paths", "evaluate_paths", "run_demo"]

PathLike = Union[str, os.PathLike]


class Run(RunFolder):
    """A run folder (:class:`RunFolder`) with the stages that fill it as methods.

    The model, its transform and the image folder are loaded on first use and kept,
    so the stages of one :class:`Run` (``extract``, ``evaluate``, ``analyze``,
    ``report``) load them once between them.

    Args:
        folder: the run folder (created by :meth:`extract`).
        device: where the model runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
            Default: ``None``, CUDA when available (``cuda:LOCAL_RANK`` under
            ``torchrun``), else CPU.

    Example::

        run = Run("runs/digits")
        run.extract(model="demo", data="digits", methods=["neuron-path", "activation"])
        run.evaluate()
        run.analyze()
        html, markdown = run.report()
    """

    def extract(
        self,
        model: Optional[str] = None,
        data: Optional[PathLike] = None,
        methods: Sequence[str] = ("neuron-path",),
        *,
        settings: Optional[RunSettings] = None,
        method_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
        refine: Optional[Union[int, str]] = None,
        beam: Optional[int] = None,
        batch_size: int = 32,
        limit: Optional[int] = None,
        restart: bool = False,
        progress: bool = True,
        workers: Optional[int] = None,
        **setting_args: Any,
    ) -> Dict[str, Any]:
        """Find paths for every image of the image folder ``data``; records go to this folder.

        The run's settings are ``settings`` (a :class:`RunSettings`), or are built from
        ``model``, ``data``, ``methods``, ``method_options`` and ``setting_args``
        (``checkpoint``, ``pretrained``, ``num_classes``, ``label_map``, ``random_weights``,
        ``model_args``, ``k``, ``n_steps``, ``approximation``, ``mode``, ``target``, ``dtype``,
        ``units``; see :meth:`RunSettings.create`). ``method_options`` gives each method its
        own options (``{"neuron-path": {"refine": 8}}``), checked by the method's class;
        ``refine`` and ``beam`` are neuron-path's. See
        :func:`captum_paths.pipeline.extract.extract` for the other arguments.
        """
        from captum_paths.pipeline.extract import extract

        if settings is None:
            if model is None or data is None:
                raise TypeError("extract needs the model spec and the data folder (or settings=RunSettings)")
            options = merge_method_options(method_options or {}, legacy_options(refine=refine, beam=beam))
            settings = RunSettings.create(model=model, data=data, methods=methods, method_options=options,
                                          **setting_args)
        elif model is not None or data is not None or tuple(methods) != ("neuron-path",) or method_options \
                or refine is not None or beam is not None or setting_args:
            raise TypeError("give the run's settings either as settings= or as arguments, not both")
        return extract(self, settings, batch_size=batch_size, limit=limit, restart=restart, progress=progress,
                       workers=workers)

    def evaluate(self, **kwargs: Any) -> Path:
        """The paper's experiments on the run's paths; see :func:`captum_paths.pipeline.evaluate.evaluate`."""
        from captum_paths.pipeline.evaluate import evaluate

        return evaluate(self, **kwargs)

    def analyze(self, **kwargs: Any) -> Path:
        """Class-level path analysis; see :func:`captum_paths.pipeline.analyze.analyze`."""
        from captum_paths.pipeline.analyze import analyze

        return analyze(self, **kwargs)

    def circuits(self, **kwargs: Any) -> Path:
        """Learned class circuits against rankings of units; see :func:`captum_paths.pipeline.circuits.circuits`."""
        from captum_paths.pipeline.circuits import circuits

        return circuits(self, **kwargs)

    def report(self, limits: Optional["ExplorerLimits"] = None, heatmaps: bool = True) -> Tuple[Path, Path]:
        """Write ``report.html`` (the path explorer) and ``summary.md``; see
        :func:`captum_paths.pipeline.report.write_report`."""
        from captum_paths.pipeline.report import write_report

        return write_report(self, limits=limits, heatmaps=heatmaps)


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
