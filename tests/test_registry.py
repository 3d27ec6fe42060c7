"""Registering a path method of one's own, and the light top-level import."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import captum_paths
from captum_paths import PATH_METHODS, PathAttribution, get_path_method, register_path_method
from captum_paths.evaluation.interventions import remove_neurons
from _models import tiny_vit


@pytest.fixture
def registry():
    saved = dict(PATH_METHODS)
    yield PATH_METHODS
    PATH_METHODS.clear()
    PATH_METHODS.update(saved)


def test_a_registered_method_is_found_and_scored_like_the_others(registry):
    @register_path_method
    class LastNeuronPath(PathAttribution):
        """Always the last k neurons of every layer."""

        name = "last-neurons"

        def _select(self, ctx):
            L, width = self.sites.num_layers, ctx.width
            paths = torch.arange(width - ctx.k, width).expand(ctx.batch, L, ctx.k).clone()
            return paths, None, {}

    assert get_path_method("last-neurons") is LastNeuronPath
    model = tiny_vit()
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    result = LastNeuronPath(model).attribute(x, target=y, k=2)
    assert result.method == "last-neurons" and result.paths[0, 0].tolist() == [62, 63]
    with torch.no_grad():
        clean = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
        with remove_neurons(captum_paths.NeuronSites.from_model(model), result.paths):
            removed = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(result.jas, clean - removed, rtol=1e-5, atol=1e-7)


def test_registration_errors(registry):
    class Nameless(PathAttribution):
        pass

    with pytest.raises(ValueError, match="non-empty str name"):
        register_path_method(Nameless)
    with pytest.raises(TypeError, match="PathAttribution subclass"):
        register_path_method(int)

    class Clash(PathAttribution):
        name = "random"

    with pytest.raises(ValueError, match="already registered as 'random'"):
        register_path_method(Clash)
    assert register_path_method(Clash, overwrite=True) is Clash and get_path_method("random") is Clash
    assert register_path_method(name="renamed")(Nameless) is Nameless and Nameless.name == "renamed"


def test_import_captum_paths_loads_no_heavy_library():
    code = ("import sys, captum_paths; heavy = [m for m in ('torch', 'captum', 'pandas', 'networkx', 'seaborn', "
            "'transformers', 'timm') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "LayerProgressiveNeuronPath" in dir(captum_paths)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        captum_paths.nope


def test_the_readme_example_runs(registry):
    """The README's custom path method, verbatim in spirit: per layer the neurons with
    the largest fc2 column norm, scored like every other method."""
    @register_path_method
    class LargestWeightPath(PathAttribution):
        name = "largest-weight"

        def _select(self, ctx):
            norms = torch.stack([b.mlp.fc2.weight.norm(dim=0) for b in self.model.blocks])
            top = norms.topk(ctx.k, dim=1).indices
            return top.expand(ctx.batch, -1, -1).to(ctx.device), None, {}

    model = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    result = get_path_method("largest-weight")(model).attribute(x, target=0, k=2)
    norms = torch.stack([b.mlp.fc2.weight.norm(dim=0) for b in model.blocks])
    assert torch.equal(result.paths[0], norms.topk(2, dim=1).indices)
    assert result.delta is not None and torch.isfinite(result.jas).all()
