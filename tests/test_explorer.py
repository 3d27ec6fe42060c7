"""The path explorer (``report.html``): its data against brute-force counts over the records, and
the page itself in a real headless Chromium, offline: no console errors, a class draws its graph,
a clicked neuron lists the images whose records use it, and an ImageNet-size run stays small and
fast. Browser tests skip when no Chromium is installed, unless CAPTUM_PATHS_REQUIRE_BROWSER=1
(``.ci/run`` sets it and installs Chromium)."""
from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest

from captum_paths.explorer import ExplorerLimits, explorer_payload, read_payload
from captum_paths.pipeline import Run
from captum_paths.pipeline.demo import run_demo
from captum_paths.pipeline.evaluate import complete_images


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("explorer") / "demo"
    run_demo(out, progress=False)
    run = Run(out)
    return run, run.records(), out / "report.html"


def _primary(records, method="neuron-path"):
    return [r for r in records if r["method"] == method]


# ------------------------------------------------------------------ the data


@pytest.mark.parametrize("method", ["neuron-path", "knowledge-neurons", "random"])
def test_class_graphs_hold_the_brute_force_counts(demo, method):
    run, records, _ = demo
    payload = explorer_payload(records, evaluation_dir=run.evaluation_dir, analysis_dir=run.analysis_dir)
    labels = payload["classes"]["labels"]
    assert list(payload["graphs"]) == payload["meta"]["methods"]  # the demo's graphs are small: every method
    for c, graph in enumerate(payload["graphs"][method]):
        mine = [r for r in _primary(records, method) if r["label"] == labels[c]]
        counts, sums = Counter(), defaultdict(float)
        co_use = Counter()
        for r in mine:
            for layer, units in enumerate(r["path"]):
                for j, n in enumerate(units):
                    counts[(layer, n)] += 1
                    sums[(layer, n)] += r["contributions"][layer][j]
                if layer + 1 < len(r["path"]):
                    for a in units:
                        for b in r["path"][layer + 1]:
                            co_use[(layer, a, b)] += 1
        nodes = {(n[0], n[1]): n for n in graph["nodes"]}
        assert set(nodes) == set(counts)  # 4 images per class: every neuron is drawn
        for key, node in nodes.items():
            assert node[2] == counts[key]
            assert node[3] == pytest.approx(sums[key] / counts[key], rel=1e-3, abs=1e-9)
        for src, dst, n in graph["edges"]:
            a, b = graph["nodes"][src], graph["nodes"][dst]
            assert b[0] == a[0] + 1 and co_use[(a[0], a[1], b[1])] == n
        assert len(graph["edges"]) == len(co_use)
    if method != "neuron-path":
        return
    consensus = pd.read_csv(run.analysis_dir / "consensus_paths.csv")
    for c, graph in enumerate(payload["graphs"][method]):
        rows = consensus[consensus["class"] == labels[c]]
        assert [n[:2] for n in graph["consensus"]] == rows[["layer", "neuron"]].values.tolist()


def test_neurons_images_and_effects_match_the_records_and_the_evaluation(demo):
    run, records, _ = demo
    payload = explorer_payload(records, evaluation_dir=run.evaluation_dir)
    for m in payload["meta"]["methods"]:
        totals = Counter((layer, n) for r in _primary(records, m) for layer, units in enumerate(r["path"])
                         for n in units)
        classes = {key: {r["label"] for r in _primary(records, m) if key[1] in r["path"][key[0]]} for key in totals}
        for key, info in payload["neurons"][m].items():
            layer, n = (int(x) for x in key.split(":"))
            assert info["paths"] == totals[(layer, n)] and info["classes"] == len(classes[(layer, n)])
    images = payload["images"]
    assert sorted(images["ids"]) == sorted(str(r["image_id"]) for r in _primary(records))
    by_key = {(r["method"], str(r["image_id"])): r for r in records}
    common, _ = complete_images(records)
    deviation = pd.read_csv(run.evaluation_dir / "deviation.csv")
    for m in payload["meta"]["methods"]:
        for i, image_id in enumerate(images["ids"]):
            assert images["paths"][m][i] == by_key[(m, image_id)]["path"]
            row = deviation[(deviation["image"] == common.index(image_id)) & (deviation["method"] == m)]
            removed = row[row["operation"] == "remove"]["prob_deviation"].item()
            assert images["remove"][m][i] == pytest.approx(removed, rel=1e-3, abs=1e-9)


def test_an_evaluation_of_other_images_gives_no_effects(demo, tmp_path, caplog):
    run, records, _ = demo
    stale = tmp_path / "evaluation"
    shutil.copytree(run.evaluation_dir, stale)
    deviation = pd.read_csv(stale / "deviation.csv", dtype={"image_id": str})
    deviation.loc[0, "image_id"] = "not/recorded.png"
    deviation.to_csv(stale / "deviation.csv", index=False)
    payload = explorer_payload(records, evaluation_dir=stale)
    assert all(v is None for m in payload["meta"]["methods"] for v in payload["images"]["remove"][m])
    assert "do not match the records" in caplog.text


def test_an_evaluation_without_image_ids_is_mapped_by_its_image_index(demo, tmp_path, caplog):
    """Evaluations written before the tables named their images: ``image`` indexes the sorted ids of
    the images every method has a record of, checked against the count in summary.json."""
    run, records, _ = demo
    old = tmp_path / "evaluation"
    shutil.copytree(run.evaluation_dir, old)
    deviation = pd.read_csv(old / "deviation.csv", dtype={"image_id": str})
    deviation.drop(columns="image_id").to_csv(old / "deviation.csv", index=False)
    payload = explorer_payload(records, evaluation_dir=old)
    new = explorer_payload(records, evaluation_dir=run.evaluation_dir)
    assert payload["images"]["remove"] == new["images"]["remove"]
    assert any(v is not None for v in payload["images"]["remove"]["neuron-path"])
    summary = json.loads((old / "summary.json").read_text())
    (old / "summary.json").write_text(json.dumps(dict(summary, images=summary["images"] - 1)))
    payload = explorer_payload(records, evaluation_dir=old)
    assert all(v is None for v in payload["images"]["remove"]["neuron-path"])
    assert "do not match the records" in caplog.text


def test_the_faithfulness_curves_are_embedded_as_evaluated(demo):
    run, records, _ = demo
    payload = explorer_payload(records, evaluation_dir=run.evaluation_dir)
    summary = pd.read_csv(run.evaluation_dir / "faithfulness_summary.csv")
    assert len(payload["faithfulness"]) == len(summary)
    assert "## Fewest units for 80% of the target probability" in run.summary_file.read_text()
    methods = {r["method"] for r in records} | {"random ranking"}
    assert {r["method"] for r in payload["faithfulness"]} == methods
    for row in payload["faithfulness"]:
        if row["n"] >= 256:  # every unit kept: the model itself
            assert row["mean_prob"] == pytest.approx(row["mean_prob_full"], rel=1e-3)


def test_the_comparisons_with_the_searched_paths_are_a_table_and_a_claim(demo):
    run, records, _ = demo
    payload = explorer_payload(records, evaluation_dir=run.evaluation_dir)
    comparisons = pd.read_csv(run.evaluation_dir / "comparisons.csv")
    table = next(t for t in payload["tables"] if t["title"] == "Compared with the searched paths")
    assert table["columns"] == list(comparisons.columns) and len(table["rows"]) == len(comparisons)
    removal = comparisons[comparisons["quantity"] == "prob_deviation_remove"]
    wins = int(((removal["holm_p"] < 0.05) & (removal["mean_difference"] < 0)).sum())
    claim = next(c for c in payload["claims"] if c.startswith("Removing neuron-path's path"))
    assert f"than removing {wins} of the {len(removal)} other methods' paths" in claim


def test_caps_are_applied_and_said_on_the_page(demo):
    run, records, _ = demo
    limits = ExplorerLimits(max_images=13, nodes_per_layer=1, edges_per_layer=1, heatmap_neurons=0, graph_nodes=200)
    payload = explorer_payload(records, limits=limits)
    assert len(payload["images"]["ids"]) == 13
    classes = Counter(payload["images"]["class"])
    assert max(classes.values()) - min(classes.values()) <= 1  # an even draw over the 10 classes
    # one node per class and layer per method: as many methods as 200 nodes hold, in order
    kept = 200 // (10 * payload["meta"]["layers"])
    assert 1 < kept < len(payload["meta"]["methods"])
    assert list(payload["graphs"]) == payload["meta"]["methods"][:kept] and list(payload["neurons"]) == list(
        payload["graphs"])
    for graph in payload["graphs"]["neuron-path"]:
        assert max(Counter(n[0] for n in graph["nodes"]).values()) == 1
        assert max(Counter(graph["nodes"][e[0]][0] for e in graph["edges"]).values(), default=1) == 1
    notes = " ".join(payload["meta"]["notes"])
    assert "13 of the 40 images" in notes and "1 most used neurons" in notes
    assert ", ".join(payload["meta"]["methods"][kept:]) + " left out" in notes and "at most 200 class-graph" in notes


def test_a_method_with_fewer_classes_is_aligned_with_the_page_classes(demo):
    _, records, _ = demo
    part = [r for r in records if r["method"] == "neuron-path" or (r["method"] == "random" and r["label"] >= 5)]
    payload = explorer_payload(part)
    labels = payload["classes"]["labels"]
    assert list(payload["graphs"]) == ["neuron-path", "random"] and len(payload["graphs"]["random"]) == len(labels)
    for c, graph in enumerate(payload["graphs"]["random"]):
        expected = {(layer, n) for r in _primary(part, "random") if r["label"] == labels[c]
                    for layer, units in enumerate(r["path"]) for n in units}
        assert {(n[0], n[1]) for n in graph["nodes"]} == expected and (bool(expected) == (labels[c] >= 5))
        assert all(labels[j] >= 5 for j, _ in payload["nearest"]["random"][c])


def test_limits_reject_bad_values():
    with pytest.raises(ValueError, match="max_images must be a non-negative int"):
        ExplorerLimits(max_images=-1)
    with pytest.raises(ValueError, match="thumbnail_px must be at least 1"):
        ExplorerLimits(thumbnail_px=0)


def test_the_page_is_self_contained(demo):
    _, _, report = demo
    page = report.read_text()
    assert "<script src" not in page and "<link" not in page and "src='http" not in page  # nothing fetched
    payload = read_payload(page)
    assert payload["meta"]["classes"] == 10 and len(payload["images"]["thumbs"]) == 40
    assert set(payload["heat"]) == set(payload["neurons"]["neuron-path"])  # the demo gives every neuron its pixels


# ------------------------------------------------------------------ in a browser


def _open(page, report: Path, hash_: str = "") -> None:
    page.goto(report.resolve().as_uri() + hash_)
    page.wait_for_selector("body[data-view]", timeout=30_000)


def test_overview_renders_offline_without_errors_and_sorts(demo, page):
    _, records, report = demo
    _open(page, report)
    page.wait_for_selector("body[data-ready=overview]", timeout=30_000)
    methods = list(dict.fromkeys(r["method"] for r in records))
    rows = page.locator("#methods-table tbody tr")
    assert rows.count() == len(methods)
    assert page.locator("#claims li").count() >= 3
    page.click("#methods-table th[data-key=mean_jas]")  # descending first
    shown = [float(x) for x in page.locator("#methods-table tbody tr td:nth-child(3)").all_inner_texts()]
    assert shown == sorted(shown, reverse=True)
    assert page.locator("#jas-plot .main-svg").count() > 0 and page.locator("#effect-plot .main-svg").count() > 0
    assert page.locator("#faithfulness [data-ablation]").count() == 2  # zero and mean ablation
    assert page.locator("#claims li", has_text="Fewest units kept per layer").count() == 1
    assert page.errors == []
    assert all(u.startswith(("file:", "data:", "about:")) for u in page.requests), page.requests


def test_choosing_a_class_draws_its_graph(demo, page):
    run, records, report = demo
    _open(page, report, "#class")
    page.fill("#class-search", "7")
    page.press("#class-search", "Enter")
    page.wait_for_selector("#class-body[data-class='7'][data-drawn]")
    expected = {(layer, n) for r in _primary(records) if r["label"] == 7 for layer, units in enumerate(r["path"])
                for n in units}
    drawn = int(page.get_attribute("#class-body", "data-drawn"))
    points = page.locator("#class-graph .scatterlayer .trace:last-child .point")
    assert drawn == len(expected) == points.count()
    listed = {tuple(int(x) for x in k.split(":")) for k in
              page.eval_on_selector_all("#class-nodes a", "as => as.map(a => a.dataset.node)")}
    assert listed == expected
    assert page.locator("#class-consensus a").count() == len(records[0]["path"])
    assert page.errors == []


def test_clicking_a_neuron_lists_the_images_that_use_it(demo, page):
    _, records, report = demo
    _open(page, report, "#class/3")
    page.wait_for_selector("#class-body[data-drawn]")
    point = page.locator("#class-graph .scatterlayer .trace:last-child .point").first
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#neuron-body[data-neuron]")
    key = page.get_attribute("#neuron-body", "data-neuron")
    layer, neuron = (int(x) for x in key.split(":"))
    expected = {str(r["image_id"]) for r in _primary(records) if neuron in r["path"][layer]}
    shown = set(page.eval_on_selector_all("#neuron-images a", "as => as.map(a => a.dataset.imageId)"))
    assert shown == expected and expected
    assert page.locator("#neuron-classes .main-svg").count() > 0
    assert page.locator("#neuron-heatmaps figure").count() == min(3, len(expected))
    # and an image from there shows its paths for every method, as recorded
    page.locator("#neuron-images a").first.click()
    page.wait_for_selector("#image-body[data-image]")
    image_id = page.get_attribute("#image-body", "data-image")
    by_key = {(r["method"], str(r["image_id"])): r for r in records}
    cells = page.locator("#image-paths tr").all()
    methods = cells[0].locator("th").all_inner_texts()[1:]
    assert sorted(methods) == sorted({r["method"] for r in records})
    for layer, row in enumerate(cells[1:]):
        texts = row.locator("td").all_inner_texts()[1:]
        assert texts == [str(by_key[(m, image_id)]["path"][layer][0]) for m in methods]
    assert page.errors == []


def test_the_method_menu_switches_the_class_and_neuron_views(demo, page):
    _, records, report = demo
    _open(page, report, "#class/7")
    page.wait_for_selector("#class-body[data-class='7'][data-drawn]")
    page.select_option("#method-select", "knowledge-neurons")
    page.wait_for_selector("#class-body[data-method='knowledge-neurons'][data-drawn]")
    assert page.evaluate("location.hash") == "#class/7/knowledge-neurons"
    mine = _primary(records, "knowledge-neurons")
    expected = {(layer, n) for r in mine if r["label"] == 7 for layer, units in enumerate(r["path"]) for n in units}
    assert int(page.get_attribute("#class-body", "data-drawn")) == len(expected)
    # a neuron from there opens in the same method: the images whose knowledge-neuron paths use it
    page.click("#class-body details summary")
    page.locator("#class-nodes a").first.click()
    page.wait_for_selector("#neuron-body[data-method='knowledge-neurons']")
    key = page.get_attribute("#neuron-body", "data-neuron")
    layer, neuron = (int(x) for x in key.split(":"))
    shown = set(page.eval_on_selector_all("#neuron-images a", "as => as.map(a => a.dataset.imageId)"))
    assert shown == {str(r["image_id"]) for r in mine if neuron in r["path"][layer]} and shown
    # an image's path chips open their own method's neuron view
    page.locator("#neuron-images a").first.click()
    page.wait_for_selector("#image-body[data-image]")
    heads = page.locator("#image-paths tr").first.locator("th").all_inner_texts()[1:]
    column = heads.index("random") + 2
    href = page.get_attribute(f"#image-paths tr:nth-child(2) td:nth-child({column}) a", "href")
    assert href.startswith("#neuron/0:") and href.endswith("/random")
    assert page.errors == []


# ------------------------------------------------------------------ ImageNet size


@pytest.mark.slow
def test_an_imagenet_size_run_stays_under_30_mb_and_opens(browser, tmp_path):
    """1,000 classes, 50,000 paths, 12 layers, d_ff 3,072: the page is under 30 MB and its views
    draw. Its load time is a benchmark (``benchmarks/explorer_scale.py``), not an assertion."""
    from benchmarks.explorer_scale import build_page

    report = tmp_path / "report.html"
    payload = build_page(report)
    size = report.stat().st_size
    assert size < 30e6, f"{size / 1e6:.1f} MB"
    assert len(payload["images"]["ids"]) == 2000 and payload["meta"]["classes"] == 1000
    notes = " ".join(payload["meta"]["notes"])
    assert "2,000 of the 50,000 images" in notes and "12 most used neurons" in notes

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_offline(True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report.as_uri())
    page.wait_for_selector("body[data-ready=overview]", timeout=60_000)
    page.goto(report.as_uri() + "#class/999")
    page.wait_for_selector("#class-body[data-class='999'][data-drawn]")
    assert int(page.get_attribute("#class-body", "data-drawn")) == len(payload["graphs"]["neuron-path"][999]["nodes"])
    context.close()
    assert errors == []


# ------------------------------------------------------------------ causal edges (issue 28)


def test_the_class_graphs_of_the_analysed_method_carry_its_causal_edges(demo):
    from captum_paths.analysis import class_causal_edges

    run, records, _ = demo
    payload = explorer_payload(records, evaluation_dir=run.evaluation_dir, analysis_dir=run.analysis_dir)
    edges = pd.read_csv(run.analysis_dir / "causal_edges.csv", dtype={"image_id": str})
    per_class = class_causal_edges(edges).set_index(["label", "source_layer", "source_unit", "target_layer",
                                                     "target_unit"])
    labels = payload["classes"]["labels"]
    found = 0
    for c, graph in enumerate(payload["graphs"]["neuron-path"]):
        drawn = {(e[0], e[1]) for e in graph["edges"]}
        for src, dst, effect, share, count in graph["causal"]:
            assert (src, dst) in drawn
            a, b = graph["nodes"][src], graph["nodes"][dst]
            row = per_class.loc[(labels[c], a[0], a[1], b[0], b[1])]
            assert effect == pytest.approx(row["mean_normalised_effect"], rel=1e-3, abs=1e-9)
            assert share == pytest.approx(row["share_above_floor"], rel=1e-3) and count == row["count"]
            found += 1
    assert found == len(per_class)  # the demo's graphs draw every edge
    assert all("causal" not in g for m in payload["graphs"] if m != "neuron-path" for g in payload["graphs"][m])
    summary = pd.read_csv(run.analysis_dir / "causal_edge_summary.csv")
    meta = payload["meta"]["causal"]
    assert meta["method"] == "neuron-path" and meta["images"] == summary["images"].item()
    assert meta["share_above_floor"] == pytest.approx(summary["share_above_floor"].item(), rel=1e-3)
    assert {"Are paths chains? Causal edges", "Causal edges per layer pair"} <= {t["title"] for t in payload["tables"]}
    assert any("rise above the noise floor" in claim for claim in payload["claims"])
    # without the analysis: no causal edges anywhere
    bare = explorer_payload(records)
    assert bare["meta"]["causal"] is None and all("causal" not in g for g in bare["graphs"]["neuron-path"])


def test_the_class_view_draws_the_causal_edges_and_toggles_them(demo, page):
    _, _, report = demo
    payload = read_payload(report.read_text())
    graphs = payload["graphs"]["neuron-path"]
    c = max(range(len(graphs)), key=lambda k: len(graphs[k]["causal"]))
    expected = len(graphs[c]["causal"])
    assert expected > 0
    _open(page, report, f"#class/{c}")
    page.wait_for_selector(f"#class-body[data-class='{c}'][data-drawn]")
    assert int(page.get_attribute("#class-body", "data-causal")) == expected
    traces = page.locator("#class-graph .scatterlayer .trace").count()
    assert page.locator("#class-causal-legend").count() == 1
    assert page.locator("#class-causal-edges tbody tr").count() == expected
    effects = [abs(e[2]) for e in graphs[c]["causal"]]
    cells = page.eval_on_selector_all("#class-causal-edges tbody tr td:nth-child(2)",
                                      "tds => tds.map(t => t.textContent)")
    assert len(cells) == expected and abs(float(cells[0])) == pytest.approx(max(effects), rel=1e-2)  # largest first
    # the nodes are still the last trace: a click still opens a neuron
    points = page.locator("#class-graph .scatterlayer .trace:last-child .point")
    assert points.count() == int(page.get_attribute("#class-body", "data-drawn"))
    page.uncheck("#class-causal-toggle")
    page.wait_for_selector("#class-body[data-causal='0']")
    assert page.locator("#class-graph .scatterlayer .trace").count() < traces
    page.check("#class-causal-toggle")
    page.wait_for_selector(f"#class-body[data-causal='{expected}']")
    # another method's class view has no causal edges and no toggle
    _open(page, report, f"#class/{c}/random")
    page.wait_for_selector("#class-body[data-method='random'][data-drawn]")
    assert page.get_attribute("#class-body", "data-causal") == "0"
    assert page.locator("#class-causal-toggle").count() == 0
    assert page.errors == []
