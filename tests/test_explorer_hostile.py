"""The explorer (``report.html``) against hostile names and addresses (issue 24).

One demo-model run whose every name is markup: its parent folder, run folder, data folder, class
folders and an image file hold ``<!--``, ``<b>x``, ``&amp;``; a label map names the classes
``<b>x</b>``, ``<a href="https://example.com">l</a>``, ``&amp;`` and ``<!--``; and one class folder
holds a symbolic link to an image outside the data folder. Checked: the page's data reads back
and the page draws (no blank page, no console error), every name shows as the literal text it is,
in the DOM and in Plotly's charts (no ``<b>`` or link made from a name), crafted addresses
(``#class/0/constructor``, ``#neuron/__proto__``, bad percent-encoding ...) draw a view with a note
instead of throwing, and the report embeds no image from outside the data folder (``..``, an
absolute path, a symbolic link). Browser tests skip when no Chromium is installed, unless
CAPTUM_PATHS_REQUIRE_BROWSER=1."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from captum_paths.demo import save_demo_image_folder
from captum_paths.explorer import ExplorerLimits, explorer_payload, read_payload, render_page
from captum_paths.explorer.payload import _thumbnail
from captum_paths.pipeline import Run
from captum_paths.pipeline.demo import DEMO_THREADS, _torch_threads
from captum_paths.pipeline.report import _DataImages, _folder_access, _heatmap_fn, write_report

try:
    from captum_paths.model.data import ImageFolderDataset, open_image
except ImportError:  # before the modules moved to captum_paths.model
    from captum_paths.model.data import ImageFolderDataset, open_image

BOLD, LINK, AMP, COMMENT = "<b>x</b>", '<a href="https://example.com">l</a>', "&amp;", "<!--"
#: class index -> (class folder, name in the label map)
CLASSES = {0: ("<!-- zero", BOLD), 1: ("<b>x", LINK), 2: (AMP, AMP), 3: ("three", COMMENT)}
IMAGE = "<!-- <b>x &amp;.png"  # the new name of class 0's first image
LINKED = "<b>x/link.png"  # a symbolic link to an image outside the data folder: one of its images
METHOD = "<b>m</b> <!-- &amp;"  # a method name (records can be edited): the page of method_page


def _thumb_uri(path: Path) -> str:
    return _thumbnail(lambda _: open_image(path), "", ExplorerLimits().thumbnail_px)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """``(run, records, report, secrets)``: the demo model's paths of 2 test images per class, in folders
    named as above; ``secrets`` are the images outside the data folder (none may reach the page)."""
    base = tmp_path_factory.mktemp("hostile") / f"parent {COMMENT} {AMP} <b>x"
    data = base / f"data {COMMENT}"
    save_demo_image_folder(data, split="test", limit_per_class=2)
    outside = base / "outside"
    outside.mkdir()
    secrets = []
    for i, name in enumerate(("secret.png", "absolute.png", "linked.png")):
        pixels = np.zeros((8, 8), dtype=np.uint8)
        pixels[i, :] = 255  # a bar no digit of the demo draws: thumbnails unlike any image of the run
        pixels[:, 7 - i] = 255
        Image.fromarray(pixels, mode="L").save(outside / name)
        secrets.append(outside / name)
    label_map = {}
    for c in range(10):
        folder, name = CLASSES.get(c, (str(c), f"digit {c}"))
        if folder != str(c):
            (data / str(c)).rename(data / folder)
        label_map[str(c)] = [folder, name]
    first = sorted((data / CLASSES[0][0]).iterdir())[0]
    first.rename(first.with_name(IMAGE))
    (data / LINKED).symlink_to(secrets[2])
    (base / "labels.json").write_text(json.dumps(label_map))

    run = Run(base / f"run {COMMENT} <b>x {AMP}", device="cpu")
    with _torch_threads(DEMO_THREADS):  # small and quick: the searched and random paths, few steps
        run.extract("demo", data, methods=("neuron-path", "random"), label_map=base / "labels.json", batch_size=64,
                    progress=False, n_steps=4, refine=0)
        run.evaluate(jas_modes=("gate",), n_steps=4, pruning=False, faithfulness_classes=4)
        run.analyze(permutations=20, pixels=False)
        report, _ = run.report(limits=ExplorerLimits(heatmap_neurons=4, heatmap_steps=4))
    return run, run.records(), report, secrets


@pytest.fixture(scope="module")
def method_page(hostile):
    """The same run's page after a method was renamed ``METHOD`` in its records and evaluation."""
    run, records, report, _ = hostile
    renamed = [dict(r, method=METHOD) if r["method"] == "random" else r for r in records]
    evaluation = report.parent / "evaluation-renamed"
    shutil.copytree(run.evaluation_dir, evaluation)
    for csv in evaluation.glob("*.csv"):
        table = pd.read_csv(csv, dtype={"image_id": str})
        if "method" in table:
            table["method"] = table["method"].replace({"random": METHOD})
            table.to_csv(csv, index=False)
    class_names, _ = _folder_access(run)
    payload = explorer_payload(renamed, settings=run.settings, evaluation_dir=evaluation,
                               analysis_dir=run.analysis_dir, class_names=class_names, run_name=str(run.folder))
    page = report.with_name("report-method.html")
    page.write_text(render_page(payload))
    return page, payload


# ------------------------------------------------------------------ the data and the images


def test_the_data_reads_back_with_every_name_as_it_is(hostile):
    run, records, report, _ = hostile
    page = report.read_text()
    start = page.index("<script id='explorer-data'")
    data = page[page.index(">", start) + 1:page.index("</script>", start)]
    assert "<" not in data and ">" not in data and "&" not in data  # nothing in it can end or change the element
    payload = read_payload(page)
    assert payload["meta"]["run"] == str(run.folder) and COMMENT in payload["meta"]["run"]
    assert payload["classes"]["names"][:4] == [CLASSES[c][1] for c in range(4)]
    assert f"{CLASSES[0][0]}/{IMAGE}" in payload["images"]["ids"]
    assert payload["meta"]["settings"]["data"] == run.settings["data"]


def test_no_image_from_outside_the_data_folder_is_embedded(hostile, tmp_path, monkeypatch):
    """A record whose image id is ``../outside/secret.png`` or an absolute path: no thumbnail, no pixel
    attribution, a note. An image the folder lists through a symbolic link is one of the run's (the scan
    followed it for extract too), shown like the others."""
    run, records, report, secrets = hostile
    page = report.read_text()
    payload = read_payload(page)
    linked = payload["images"]["ids"].index(LINKED)
    assert payload["images"]["thumbs"][linked] == _thumb_uri(secrets[2])
    assert not any("leads outside the data folder" in n for n in payload["meta"]["notes"])
    # the pixel attributions read no other image either
    _, reader = _folder_access(run)
    heatmap = _heatmap_fn(run, ExplorerLimits(heatmap_steps=2), reader)
    assert heatmap(f"{CLASSES[0][0]}/{IMAGE}", 0, 0) is not None and heatmap(LINKED, 0, 0) is not None
    for image_id in ("../outside/secret.png", str(secrets[1])):
        with pytest.raises(ValueError, match="outside the data folder"):
            heatmap(image_id, 0, 0)

    # records edited to name files outside the data folder, reported in a copy of the run
    copy = Run(shutil.copytree(run.folder, tmp_path / "copy"), device="cpu")
    ids = sorted({str(r["image_id"]) for r in records} - {LINKED})
    edited = {ids[0]: "../outside/secret.png", ids[1]: str(secrets[1])}
    tampered = [dict(r, image_id=edited.get(str(r["image_id"]), r["image_id"])) for r in records]
    monkeypatch.setattr(copy, "records", lambda: tampered)
    written, _ = write_report(copy, heatmaps=False)
    page = written.read_text()
    payload = read_payload(page)
    for image_id in edited.values():
        assert payload["images"]["thumbs"][payload["images"]["ids"].index(image_id)] is None
    assert _thumb_uri(secrets[0]) not in page and _thumb_uri(secrets[1]) not in page
    assert any("2 recorded image ids lead outside the data folder" in n for n in payload["meta"]["notes"])
    assert sum(t is not None for t in payload["images"]["thumbs"]) == len(payload["images"]["ids"]) - 2


def test_the_reader_takes_only_listed_relative_ids_inside_the_folder(tmp_path):
    root = tmp_path / "data"
    save_demo_image_folder(root, split="test", limit_per_class=1)
    (tmp_path / "secret.png").write_bytes((root / "0" / "0012.png").read_bytes())
    (root / "0" / "link.png").symlink_to(tmp_path / "secret.png")
    (root / "1" / "inner.png").symlink_to(root / "0" / "0012.png")  # a link that stays inside
    folder = ImageFolderDataset(root)
    assert "0/link.png" in folder.image_ids and "1/inner.png" in folder.image_ids  # the scan follows links
    reader = _DataImages(root, folder.image_ids)
    assert all(reader(i) is not None for i in ("0/0012.png", "1/inner.png", "0/link.png"))
    for image_id in ("../secret.png", "0/../../secret.png", str(tmp_path / "secret.png"),
                     "0/missing.png", "", "0/./0012.png"):
        assert reader(image_id) is None, image_id
    assert reader.refused == {"../secret.png", "0/../../secret.png", str(tmp_path / "secret.png"),
                              "0/missing.png", "", "0/./0012.png"}
    # even when the list names them, an id out of the folder is refused
    listed = _DataImages(root, ["../secret.png", str(tmp_path / "secret.png")])
    assert all(listed(i) is None for i in ("../secret.png", str(tmp_path / "secret.png")))


# ------------------------------------------------------------------ in a browser


def _open(page, report: Path, hash_: str = "") -> None:
    page.goto(report.resolve().as_uri() + hash_)
    page.wait_for_selector("body[data-view]", timeout=20_000)


_MARKUP_FROM_NAMES = """() => {
  const found = [];
  for (const node of document.querySelectorAll('*')) {
    for (const a of node.attributes) {
      if (/href$/i.test(a.name) && a.value.includes('example.com')) found.push(node.tagName + ' ' + a.name);
    }
  }
  document.querySelectorAll('main b, main a[href^="http"], .main-svg a').forEach(n => found.push(n.outerHTML));
  document.querySelectorAll('.main-svg tspan').forEach(t => {
    if (/bold/.test(t.getAttribute('style') || '')) found.push('bold tspan: ' + t.textContent);
  });
  return found;
}"""


def _svg_texts(page, selector: str):
    return page.eval_on_selector_all(selector, "ts => ts.map(t => t.textContent)")


def test_every_view_draws_names_as_literal_text(hostile, page):
    run, records, report, _ = hostile
    payload = read_payload(report.read_text())
    _open(page, report)
    page.wait_for_selector("body[data-ready=overview]", timeout=20_000)
    assert page.text_content("#run-name") == str(run.folder)
    assert page.locator("#methods-table tbody tr").count() == 2

    # the class view: its heading and the class menu
    _open(page, report, "#class/1")
    page.wait_for_selector("#class-body[data-class='1'][data-drawn]")
    assert page.text_content("#class-body h2") == f"Class 1 · {LINK}"
    options = page.eval_on_selector_all("#class-list option", "os => os.map(o => o.value)")
    assert options[:4] == [f"{c} · {CLASSES[c][1]}" for c in range(4)]
    page.fill("#class-search", BOLD)
    page.press("#class-search", "Enter")
    page.wait_for_selector("#class-body[data-class='0'][data-drawn]")
    near = page.locator("#class-nearest td:first-child a").all_inner_texts()
    named = {f"{label} · {name}" for label, name in zip(payload["classes"]["labels"], payload["classes"]["names"])}
    assert near and set(near) <= named

    # the neuron view: class names as the chart's tick labels
    for c in range(4):
        node = payload["graphs"]["neuron-path"][c]["nodes"][0]
        _open(page, report, f"#neuron/{node[0]}:{node[1]}")
        page.wait_for_selector("#neuron-classes .xtick text")
        ticks = _svg_texts(page, "#neuron-classes .xtick text")
        assert f"{c} · {CLASSES[c][1]}" in ticks, ticks
        bar = page.locator("#neuron-classes .bars .point").nth(ticks.index(f"{c} · {CLASSES[c][1]}"))
        box = bar.bounding_box()  # and in its hover label
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_selector("#neuron-classes .hoverlayer .hovertext")
        assert f"{c} · {CLASSES[c][1]}" in "".join(_svg_texts(page, "#neuron-classes .hoverlayer .hovertext text"))
        assert page.evaluate(_MARKUP_FROM_NAMES) == []

    # the image view: the image id with <!-- and <b>
    i = payload["images"]["ids"].index(f"{CLASSES[0][0]}/{IMAGE}")
    _open(page, report, f"#image/{i}")
    page.wait_for_selector("#image-contributions .main-svg")
    assert page.text_content("#image-body h2") == f"{CLASSES[0][0]}/{IMAGE}"
    assert page.input_value("#image-search") == f"{CLASSES[0][0]}/{IMAGE}"
    assert page.text_content("#image-body a[href^='#class/']") == f"0 · {BOLD}"
    assert page.evaluate(_MARKUP_FROM_NAMES) == []
    assert page.errors == []


def test_a_method_named_in_markup_is_literal_text_in_every_chart(method_page, page):
    report, payload = method_page
    _open(page, report)
    page.wait_for_selector("body[data-ready=overview]", timeout=20_000)
    assert METHOD in payload["meta"]["methods"]
    assert METHOD in _svg_texts(page, "#jas-plot .xtick text")
    assert METHOD in _svg_texts(page, "#effect-plot .xtick text")
    assert METHOD in _svg_texts(page, "#faithfulness .legendtext")
    assert METHOD in page.locator("#methods-table tbody td:first-child").all_inner_texts()
    assert page.evaluate(_MARKUP_FROM_NAMES) == []
    # its own class view, from the method menu, and an image's chart legend
    _open(page, report, "#class/2/" + quote(METHOD, safe=""))
    page.wait_for_selector("#class-body[data-class='2'][data-drawn]")
    assert page.get_attribute("#class-body", "data-method") == METHOD
    assert page.eval_on_selector("#method-select", "s => s.value") == METHOD
    _open(page, report, "#image/0")
    page.wait_for_selector("#image-contributions .legendtext")
    assert METHOD in _svg_texts(page, "#image-contributions .legendtext")
    assert METHOD in page.locator("#image-paths th").all_inner_texts()
    assert page.evaluate(_MARKUP_FROM_NAMES) == []
    assert page.errors == []


# every address draws its view (a note for what it names that the page does not hold), never an error
CRAFTED = [  # (address, view, text the view shows)
    ("#class/0/constructor", "class", 'a method "constructor"'),
    ("#class/0/__proto__", "class", 'a method "__proto__"'),
    ("#class/0/toString", "class", 'a method "toString"'),
    ("#class/0/%E0%A4%A", "class", 'a method "%E0%A4%A"'),
    ("#class/constructor", "class", "no class constructor"),
    ("#class/__proto__/__proto__", "class", "no class __proto__"),
    ("#class/1.5", "class", "no class 1.5"),
    ("#class/-1", "class", "no class -1"),
    ("#class/99", "class", "no class 99"),
    ("#class/%E0%A4%A", "class", "no class %E0%A4%A"),
    ("#neuron/constructor", "neuron", 'no neuron of this page ("constructor")'),
    ("#neuron/__proto__", "neuron", 'no neuron of this page ("__proto__")'),
    ("#neuron/%E0%A4%A", "neuron", 'no neuron of this page ("%E0%A4%A")'),
    ("#neuron/0:1:2", "neuron", 'no neuron of this page ("0:1:2")'),
    ("#neuron/99:0", "neuron", 'no neuron of this page ("99:0")'),
    ("#neuron/0:0/__proto__", "neuron", 'a method "__proto__"'),
    ("#neuron//%E0%A4%A", "neuron", 'a method "%E0%A4%A"'),
    ("#image/__proto__", "image", "no image __proto__"),
    ("#image/constructor", "image", "no image constructor"),
    ("#image/1.5", "image", "no image 1.5"),
    ("#image/999", "image", "no image 999"),
    ("#image/%E0%A4%A", "image", "no image %E0%A4%A"),
    ("#tables/__proto__", "tables", "Path sharing"),
    ("#__proto__", "overview", "Methods"),
    ("#constructor/%E0%A4%A", "overview", "Methods"),
]


def _shows(page, view: str, text: str) -> None:
    assert page.get_attribute("body", "data-view") == view
    assert page.locator(f"#view-{view}").is_visible()
    page.wait_for_function(f"document.querySelector('#view-{view}').innerText.includes({json.dumps(text)})",
                           timeout=10_000)
    if view == "class":  # the first class, of the searched paths, is drawn
        page.wait_for_selector("#class-body[data-drawn]")
        assert page.get_attribute("#class-body", "data-method") == "neuron-path"


@pytest.mark.parametrize("hash_", ["#class/0/%E0%A4%A", "#class/0/constructor", "#neuron/constructor",
                                   "#image/__proto__"])
def test_a_crafted_address_opened_first_draws_the_page(hostile, page, hash_):
    _, _, report, _ = hostile
    _open(page, report, hash_)
    view, text = next((v, t) for h, v, t in CRAFTED if h == hash_)
    _shows(page, view, text)
    assert page.errors == []


def test_every_crafted_address_draws_its_view(hostile, page):
    _, _, report, _ = hostile
    _open(page, report, "#class/3")
    for hash_, view, text in CRAFTED:  # one after the other, as a reader follows links
        page.evaluate(f"location.hash = {json.dumps(hash_)}")
        try:
            _shows(page, view, text)
        except Exception as exc:
            raise AssertionError(f"{hash_}: {exc}") from exc
        assert page.errors == [], hash_


def test_a_name_from_object_prototype_typed_in_the_class_search_is_no_class(hostile, page):
    _, _, report, _ = hostile
    _open(page, report, "#class/2")
    page.wait_for_selector("#class-body[data-class='2'][data-drawn]")
    for text in ("constructor", "__proto__", "hasOwnProperty"):
        page.fill("#class-search", text)
        page.press("#class-search", "Enter")
        assert page.locator("#class-missing").is_visible()
        assert page.evaluate("location.hash") == "#class/2"
    assert page.errors == []


def test_causal_edges_of_a_method_named_in_markup_draw_as_literal_text(hostile, tmp_path, page):
    """The class view's causal edges, legend and table, and the overview's claim about them, when the
    analysed method (records and the analysis' causal tables) is named in markup."""
    run, records, _, _ = hostile
    renamed = [dict(r, method=METHOD) if r["method"] == "neuron-path" else r for r in records]
    analysis = tmp_path / "analysis"
    shutil.copytree(run.analysis_dir, analysis)
    for csv in analysis.glob("causal_*.csv"):
        table = pd.read_csv(csv, dtype={"image_id": str})
        table["method"] = METHOD
        table.to_csv(csv, index=False)
    class_names, _ = _folder_access(run)
    payload = explorer_payload(renamed, settings=run.settings, analysis_dir=analysis, class_names=class_names,
                               run_name=str(run.folder))
    assert payload["meta"]["causal"]["method"] == METHOD
    report = tmp_path / "report-causal.html"
    report.write_text(render_page(payload))
    graphs = payload["graphs"][METHOD]
    c = max(range(len(graphs)), key=lambda k: len(graphs[k]["causal"]))
    assert graphs[c]["causal"]
    _open(page, report, f"#class/{c}/" + quote(METHOD, safe=""))
    page.wait_for_selector(f"#class-body[data-class='{c}'][data-drawn]")
    assert page.get_attribute("#class-body", "data-method") == METHOD
    assert int(page.get_attribute("#class-body", "data-causal")) == len(graphs[c]["causal"])
    assert page.locator("#class-causal-edges tbody tr").count() == len(graphs[c]["causal"])
    assert page.evaluate(_MARKUP_FROM_NAMES) == []
    _open(page, report)
    page.wait_for_selector("body[data-ready=overview]", timeout=20_000)
    claim = [t for t in page.locator("#claims li").all_inner_texts() if "noise floor" in t]
    assert len(claim) == 1 and METHOD in claim[0]
    assert page.evaluate(_MARKUP_FROM_NAMES) == []
    assert page.errors == []
