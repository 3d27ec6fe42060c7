"""Run folders of attention-head and mixed paths: ``extract --units``, the run's identity, the
evaluation (faithfulness curves over heads included), the analysis and the explorer."""
from __future__ import annotations

import json

import pytest
import torch

from captum_paths.demo import load_demo_model, save_demo_image_folder
from captum_paths.explorer import explorer_payload, read_payload
from captum_paths.evaluation.faithfulness import faithfulness_study
from captum_paths.pipeline import Run
from captum_paths.pipeline.run import RunMismatchError
from captum_paths.model.sites import NeuronSites


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_demo_image_folder(tmp_path_factory.mktemp("heads") / "data", limit_per_class=3)


@pytest.fixture(scope="module")
def mixed_run(data, tmp_path_factory):
    run = Run(tmp_path_factory.mktemp("mixed") / "run")
    run.extract("demo", data, methods=["neuron-path", "knowledge-neurons", "random"], units="mixed",
                n_steps=4, progress=False)
    run.evaluate(jas_modes=("gate", "paper"), n_steps=4, pruning_ks=(1,), pruning_ps=(1.0,))
    run.analyze(permutations=20)
    run.report(heatmaps=True)
    return run


def test_mixed_records_hold_a_head_and_a_neuron_site_per_block(mixed_run):
    records = mixed_run.records()
    blocks = len(load_demo_model().blocks)
    assert {len(r["path"]) for r in records} == {2 * blocks}
    assert all(r["settings"]["kinds"] == ["head", "neuron"] * blocks for r in records)
    assert json.loads(mixed_run.run_file.read_text())["units"] == "mixed"
    heads = NeuronSites.heads_from_model(load_demo_model()).width
    assert all(r["path"][2 * b][0] < heads for r in records for b in range(blocks))


def test_the_evaluation_of_heads_leaves_out_the_released_scripts_score(mixed_run):
    summary = json.loads((mixed_run.evaluation_dir / "summary.json").read_text())
    assert summary["jas_modes"] == ["gate"] and summary["units"] == "mixed"
    assert (mixed_run.evaluation_dir / "faithfulness_summary.csv").exists()
    assert (mixed_run.analysis_dir / "neuron_pixels.png").exists()  # of the last FFN layer's neuron


def test_the_explorer_labels_blocks_and_gives_heatmaps_to_neurons_only(mixed_run):
    payload = explorer_payload(mixed_run.records())
    blocks = len(load_demo_model().blocks)
    assert payload["meta"]["kinds"] == ["head", "neuron"] * blocks
    page = mixed_run.report_file.read_text()
    embedded = read_payload(page)
    with_heat = list(embedded["heat"])
    assert with_heat and all(int(key.split(":")[0]) % 2 == 1 for key in with_heat)  # FFN layers only


def test_units_are_part_of_the_run_identity(mixed_run, data):
    with pytest.raises(RunMismatchError, match="units: 'mixed' there, 'neurons' here"):
        Run(mixed_run.folder).extract("demo", data, methods=["neuron-path"], n_steps=4, progress=False)


def test_a_run_folder_from_before_heads_holds_neurons(data, tmp_path):
    run = Run(tmp_path / "run")
    run.extract("demo", data, methods=["random"], n_steps=4, limit=2, progress=False)
    settings = json.loads(run.run_file.read_text())
    del settings["units"]  # as written before units existed
    run.run_file.write_text(json.dumps(settings))
    summary = Run(run.folder).extract("demo", data, methods=["random"], n_steps=4, limit=3, progress=False)
    assert summary["new_records"] == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(methods=["activation"], units="heads"), "activation"),
    (dict(methods=["neuron-path"], units="heads", mode="paper"), "mode 'paper'"),
    (dict(methods=["neuron-path"], units="blocks"), "units must be one of"),
])
def test_what_cannot_hold_heads_is_refused_before_anything_is_written(data, tmp_path, kwargs, match):
    run = Run(tmp_path / "run")
    with pytest.raises(ValueError, match=match):
        run.extract("demo", data, n_steps=4, progress=False, **kwargs)
    assert not run.run_file.exists()


def test_faithfulness_over_heads_runs_from_every_head_zeroed_to_the_model_itself(mixed_run):
    model = load_demo_model()
    heads = NeuronSites.heads_from_model(model)
    images, labels = mixed_run.images(sorted({str(r["image_id"]) for r in mixed_run.records()}))
    torch.manual_seed(0)
    paths = torch.randint(0, heads.width, (len(images), heads.num_layers, 1))
    df = faithfulness_study(model, images, labels, {"some heads": paths}, sites=heads, ns=[0, heads.width],
                            ablations=["zero"], random_control=False)
    handles = [b.attn.proj.register_forward_pre_hook(lambda m, args: (torch.zeros_like(args[0]),))
               for b in model.blocks]
    try:
        with torch.no_grad():
            zeroed = model(images).double().softmax(1)
    finally:
        for h in handles:
            h.remove()
    for label, group in df.groupby("label"):
        held = torch.tensor(df.attrs["split"][label]["evaluation"])
        none = group[group.n == 0]["mean_prob"].item()
        assert none == pytest.approx(float(zeroed[held, label].mean()), abs=1e-9)
        full = group[group.n == heads.width]
        # rows batched with other configurations: float32 matmuls of another batch shape, a few ulps apart
        assert full["mean_prob"].item() == pytest.approx(full["mean_prob_full"].item(), abs=1e-7)


def test_the_explorer_of_a_mixed_run_in_a_browser(mixed_run, page):
    page.goto(mixed_run.report_file.resolve().as_uri() + "#class/0")
    page.wait_for_selector("#class-body[data-drawn]")
    ticks = page.eval_on_selector_all("#class-graph .xtick text", "ts => ts.map(t => t.textContent)")
    assert ticks[:2] == ["b0 heads", "b0 FFN"]
    point = page.locator("#class-graph .scatterlayer .trace:last-child .point").first
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#neuron-body[data-neuron]")
    key = page.get_attribute("#neuron-body", "data-neuron")
    title = page.locator("#neuron-body h2").inner_text()
    layer, unit = (int(x) for x in key.split(":"))
    expected = f"Head {unit} of block {layer // 2}" if layer % 2 == 0 else f"Neuron {unit} of block {layer // 2}'s FFN"
    assert title == expected
    page.goto(mixed_run.report_file.resolve().as_uri() + "#image/0")
    page.wait_for_selector("#image-body[data-image]")
    labels = [row.locator("td").first.inner_text() for row in page.locator("#image-paths tr").all()[1:3]]
    assert labels == ["block 0 heads", "block 0 FFN"]
    assert page.errors == []
