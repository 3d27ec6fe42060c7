"""The model room: what a vision transformer is to the rest of the package.

- ``families/``: one adapter per model family (timm, torchvision, Hugging Face,
  open_clip, Swin, EVA, ...), each saying where the FFN neurons and attention heads
  are, with the library's loader and the family's preprocessing beside it;
- ``sites.py``: :class:`NeuronSites`, the units of a model (FFN neurons, heads) and
  the hooks that read and edit them; ``tokens.py``: which tokens a unit is read at;
- ``stream.py``: the cached residual stream the fast search engine runs on;
- ``loading.py``: :func:`load_model` from a spec (``timm:NAME``, ``hf:PATH`` ...) and
  checkpoint matching; ``outputs.py``: logits out of any model's output;
- ``zero_shot.py``: CLIP-style towers as classifiers; ``data.py``: image folders;
  ``transforms.py``: preprocessing.

Nothing here knows attributions, searches or run folders.
"""
from importlib import import_module
from typing import Any

__all__ = ["NeuronSites", "TokenSelection", "load_model", "LogitsOnly", "ImageFolderDataset", "ZeroShotClassifier"]

_WHERE = {"NeuronSites": "sites", "TokenSelection": "sites", "load_model": "loading", "LogitsOnly": "outputs",
          "ImageFolderDataset": "data", "ZeroShotClassifier": "zero_shot"}


def __getattr__(name: str) -> Any:  # torch, timm and PIL load on first use
    if name not in _WHERE:
        raise AttributeError(f"module 'captum_paths.model' has no attribute {name!r}")
    return getattr(import_module(f"captum_paths.model.{_WHERE[name]}"), name)


def __dir__():
    return sorted(__all__)
