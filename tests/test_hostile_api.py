"""Issue 24 (cases 15-17): the API and CLI called in ways the happy path does not: k above the
default refine, inference mode, 1-D logits, sites out of execution order, help text, batch size."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from _cli import extract_args, run_main
from _models import tiny_vit
from captum_paths import JointNeuronIntegratedGradients, LayerProgressiveNeuronPath, NeuronSites
from captum_paths.demo import save_demo_image_folder
from captum_paths.records import read_records
from captum_paths.search.neuron_path import DEFAULT_REFINE


@pytest.fixture(scope="module")
def tiny():
    model = tiny_vit(seed=0)
    torch.manual_seed(1)
    return model, torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 2])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_demo_image_folder(tmp_path_factory.mktemp("hostile") / "data", limit_per_class=1)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ------------------------------------------------------------ 15: k above the default refine
def test_k_above_the_default_refine_works_and_records_the_refine_it_used(tiny):
    model, x, y = tiny
    k = DEFAULT_REFINE + 1
    search = LayerProgressiveNeuronPath(model)
    default = search.attribute(x, target=y, k=k, n_steps=2)
    assert default.paths.shape == (3, 3, k)
    assert default.settings["refine"] == k  # the pool holds the k neurons kept
    # the search and the recorded settings resolve the default alike: it is refine=k
    explicit = search.attribute(x, target=y, k=k, n_steps=2, refine=k)
    assert torch.equal(default.paths, explicit.paths) and default.settings == explicit.settings
    torch.testing.assert_close(default.jas, explicit.jas, rtol=0, atol=0)
    # k up to the default keeps it
    assert search.attribute(x, target=y, k=2, n_steps=2).settings["refine"] == DEFAULT_REFINE
    # paper mode keeps its whole-site default whatever k
    assert search.attribute(x, target=y, k=k, mode="paper", n_steps=2).settings["refine"] == 0


def test_explicit_refine_below_k_is_still_an_error_naming_both(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match=r"refine must be 0, 'all' or at least k=7; got 6"):
        LayerProgressiveNeuronPath(model).attribute(x, target=y, k=7, refine=6)
    # checked with the other settings, before a run pipeline writes anything
    with pytest.raises(ValueError, match=r"at least k=7; got 6"):
        LayerProgressiveNeuronPath.check_arguments(k=7, refine=6)
    LayerProgressiveNeuronPath.check_arguments(k=7)  # the default adapts
    LayerProgressiveNeuronPath.check_arguments(k=7, refine=0)
    LayerProgressiveNeuronPath.check_arguments(k=7, refine="all")
    assert _no_hooks(model)


def test_cli_extract_k7_at_default_settings(data, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_main(capsys, *extract_args(data, out, "--k", "7", "--limit", "2", "--n-steps", "2"))
    assert code == 0, err
    assert "2 records" in stdout
    records = read_records(out / "records.jsonl")
    assert len(records) == 2
    for r in records:
        assert r["settings"]["k"] == 7 and r["settings"]["refine"] == 7  # the refine the search used
        assert all(len(units) == 7 for units in r["path"])
    run = json.loads((out / "run.json").read_text())
    # run.json holds what was asked (part of the run's identity): refine not given, k=7
    assert run["k"] == 7 and run["refine"] is None


def test_cli_extract_explicit_refine_below_k_is_one_line_before_anything_is_written(data, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(capsys, *extract_args(data, out, "--k", "3", "--refine", "2", "--limit", "1"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "k=3" in err and "got 2" in err
    assert not (out / "run.json").exists() and not (out / "records.jsonl").exists()


def test_refine_help_says_the_default_follows_k():
    from captum_paths.cli import build_parser

    extract = build_parser()._subparsers._group_actions[0].choices["extract"]
    text = " ".join(extract.format_help().split())
    assert f"default: {DEFAULT_REFINE} in gate mode, or --k when larger" in text


# --------------------------------------------------------------------- 16a: inference mode
def test_inference_mode_is_a_clear_error(tiny):
    model, x, y = tiny
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"needs gradients.*outside torch\.inference_mode\(\)"):
            LayerProgressiveNeuronPath(model).attribute(x, target=y, n_steps=2)
        with pytest.raises(RuntimeError, match=r"JointNeuronIntegratedGradients.*outside torch\.inference_mode\(\)"):
            JointNeuronIntegratedGradients(model).attribute(x, [(0, 1), (2, 3)], target=y, n_steps=2)
    assert _no_hooks(model)


def test_no_grad_and_inference_mode_inputs_work(tiny):
    model, x, y = tiny
    search, jig = LayerProgressiveNeuronPath(model), JointNeuronIntegratedGradients(model)
    reference = search.attribute(x, target=y, n_steps=2, refine=2)
    with torch.no_grad():  # gradients are enabled where the methods need them
        quiet = search.attribute(x, target=y, n_steps=2, refine=2)
    assert torch.equal(quiet.paths, reference.paths)
    torch.testing.assert_close(quiet.jas, reference.jas)
    with torch.inference_mode():
        frozen = x.clone()
    assert frozen.is_inference()
    for mode in ("gate", "paper"):  # the stream engine and the whole-model passes
        found = search.attribute(frozen, target=y, n_steps=2, refine=2, mode=mode)
        again = search.attribute(x, target=y, n_steps=2, refine=2, mode=mode)
        assert torch.equal(found.paths, again.paths)
    _, jas = jig.attribute(frozen, [(0, 1), (2, 3)], target=y, n_steps=2, return_jas=True)
    torch.testing.assert_close(jas, jig.attribute(x, [(0, 1), (2, 3)], target=y, n_steps=2, return_jas=True)[1])


# ---------------------------------------------------------------------- 16b: 1-D logits
class _Squeezed(nn.Module):
    """A model that drops the batch dimension of its logits (``(classes,)`` for one image)."""

    def __init__(self, model: nn.Module, pick_class: bool = False) -> None:
        super().__init__()
        self.inner, self.pick_class = model, pick_class

    def forward(self, x):
        logits = self.inner(x)
        return logits[:, 0] if self.pick_class else logits.squeeze(0)


@pytest.mark.parametrize("pick_class, batch, shape", [(False, 1, "(5,)"), (True, 3, "(3,)")])
def test_one_dimensional_logits_name_the_shape(tiny, pick_class, batch, shape):
    model, x, _ = tiny
    wrapped = _Squeezed(model, pick_class)
    sites = NeuronSites.from_names(wrapped, [f"inner.blocks.{i}.mlp.act" for i in range(3)])
    calls = [
        lambda: LayerProgressiveNeuronPath(wrapped, sites=sites).attribute(x[:batch], target=0, n_steps=2),
        lambda: JointNeuronIntegratedGradients(wrapped, sites=sites).attribute(x[:batch], [(0, 1)], target=0),
    ]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert f"shape {shape}" in message and "(batch, classes)" in message, message
        assert "unpack" not in message
    assert _no_hooks(model)


# ------------------------------------------------------------ 16c: sites out of execution order
def test_sites_out_of_execution_order_are_refused(tiny):
    model, x, y = tiny
    names = ["blocks.2.mlp.act", "blocks.0.mlp.act", "blocks.1.mlp.act"]
    sites = NeuronSites.from_names(model, names)
    calls = [
        lambda: LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=y, n_steps=2),
        lambda: JointNeuronIntegratedGradients(model, sites=sites).attribute(x, [(0, 1)], target=y),
    ]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "execution order" in message and str(names) in message, message
        assert str(["blocks.0.mlp.act", "blocks.1.mlp.act", "blocks.2.mlp.act"]) in message, message
    assert _no_hooks(model)


def test_sites_in_execution_order_pass_the_check(tiny):
    model, x, y = tiny
    ordered = NeuronSites.from_names(model, [f"blocks.{i}.mlp.act" for i in range(3)])
    found = LayerProgressiveNeuronPath(model, sites=ordered).attribute(x, target=y, n_steps=2, refine=2)
    assert torch.equal(found.paths, LayerProgressiveNeuronPath(model).attribute(x, target=y, n_steps=2,
                                                                                refine=2).paths)
    both = NeuronSites.mixed(NeuronSites.heads_from_model(model), NeuronSites.from_model(model))
    assert LayerProgressiveNeuronPath(model, sites=both).attribute(x, target=y, n_steps=2).paths.shape == (3, 6, 1)


def test_a_site_the_forward_never_calls_is_named(tiny):
    model, x, y = tiny
    stray = nn.GELU()  # not part of the model's forward
    sites = NeuronSites(model, [model.blocks[0].mlp.act, stray, model.blocks[2].mlp.act],
                        names=["blocks.0.mlp.act", "stray", "blocks.2.mlp.act"], width=64)
    with pytest.raises(ValueError, match=r"\['stray'\] did not run"):
        JointNeuronIntegratedGradients(model, sites=sites).attribute(x, [(0, 1)], target=y)


# ------------------------------------------------------------------- 17: compare --help, batch
def test_compare_help_prints_a_single_percent_sign(capsys):
    from captum_paths.cli import main

    with pytest.raises(SystemExit) as info:
        main(["compare", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "95%" in text and "95%%" not in text


def test_records_do_not_depend_on_the_batch_size(data, tmp_path, capsys):
    """Paths (and labels, predictions, refined layers) equal exactly; scores up to float32
    rounding (the clean and path-removed forwards run as batches of another size)."""
    torch.manual_seed(0)
    records = {}
    for batch in (1, 4):
        out = tmp_path / f"batch{batch}"
        code, _, err = run_main(capsys, *extract_args(data, out, "--limit", "8", "--batch-size", batch,
                                                      "--method", "neuron-path", "activation"))
        assert code == 0, err
        records[batch] = sorted(read_records(out / "records.jsonl"), key=lambda r: (r["method"], r["image_id"]))
    a, b = records[1], records[4]
    assert len(a) == len(b) == 16
    exact = ("method", "image_id", "path", "label", "prediction", "target", "refined_layers", "settings")
    assert [[r.get(f) for f in exact] for r in a] == [[r.get(f) for f in exact] for r in b]
    for field in ("jas", "delta", "contributions", "scores"):
        for x, y in zip(a, b):
            if x.get(field) is None:
                assert y.get(field) is None
                continue
            torch.testing.assert_close(torch.tensor(x[field], dtype=torch.float64),
                                       torch.tensor(y[field], dtype=torch.float64), rtol=0, atol=1e-6)
