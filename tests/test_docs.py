"""The documentation site: it builds offline with warnings as errors, every internal link and
anchor resolves, every public name has its API entry, and the built pages open in a browser
(index, an API page, a tutorial, the offline search) without errors."""
import html.parser
import inspect
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

import captum_paths

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built from this checkout with ``sphinx-build -W`` (warnings are errors)."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(ROOT / "docs"), str(out), "-d", str(out / ".doctrees")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if tag in ("a", "img", "script", "link") and attrs.get(key):
                self.links.append(attrs[key])


def _parse(file):
    parser = _Links()
    parser.feed(file.read_text(encoding="utf-8"))
    return parser


def test_the_site_has_every_guide_the_api_and_the_tutorials(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for page in ("index.html", "method.html", "guides/models.html", "guides/captum.html", "guides/cli.html", "guides/explorer.html",
                 "guides/heads.html", "guides/extending.html", "guides/results.html", "api/index.html",
                 "api/model.html", "api/search.html", "tutorials/index.html", "search.html"):
        assert page in pages, page
    tutorials = sorted(p.stem for p in (ROOT / "tutorials").glob("[0-9]*.ipynb"))
    assert tutorials and all(f"tutorials/{t}.html" in pages for t in tutorials)
    # the tutorials show the outputs they were committed with
    quickstart = (site / "tutorials" / f"{tutorials[0]}.html").read_text(encoding="utf-8")
    assert "cell_output" in quickstart


def test_every_internal_link_and_anchor_resolves(site):
    parsed = {p: _parse(p) for p in site.rglob("*.html") if "_modules" not in p.parts}
    broken = []
    for page, links in parsed.items():
        for link in links.links:
            url = urlparse(link)
            if url.scheme or link.startswith(("//", "mailto:", "javascript:")) or url.path.startswith("/"):
                continue
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(site)} -> {link}")
            elif url.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(url.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)} -> {link} (no such anchor)")
    assert not broken, "\n".join(broken[:40])


def test_the_guides_link_their_names_to_the_api_reference(site):
    """Inline code naming a public name in a guide links to its API entry on the site."""
    models = (site / "guides" / "models.html").read_text(encoding="utf-8")
    assert 'href="../api/model.html#captum_paths.model.sites.NeuronSites.from_model"' in models
    extending = (site / "guides" / "extending.html").read_text(encoding="utf-8")
    assert 'href="../api/search.html#captum_paths.search.base.PathAttribution"' in extending
    method = (site / "method.html").read_text(encoding="utf-8")
    assert 'href="api/analysis.html#captum_paths.analysis.graph.PathGraph"' in method


def test_every_public_name_is_in_the_api_reference(site):
    text = (site / "api" / "index.html").read_text(encoding="utf-8")
    documented = set(re.findall(r'id="(captum_paths\.[\w.]+)"', "".join(
        p.read_text(encoding="utf-8") for p in (site / "api").glob("*.html"))))
    missing = []
    for name in captum_paths.__all__:
        if name == "__version__":
            continue
        where = f"{_defining_module(name)}.{name}"
        if where not in documented:
            missing.append(f"{name} ({where})")
        assert name in text, name
    assert not missing, missing


def _defining_module(name):
    """Where ``captum_paths.NAME`` is defined: a class's or function's module, or the module that
    assigns a constant."""
    import importlib
    import pkgutil

    obj = getattr(captum_paths, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return obj.__module__
    package = importlib.import_module(captum_paths._LAZY[name])
    for info in [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]:
        if re.search(rf"^{name}\b[^=\n]*=", inspect.getsource(importlib.import_module(info)), flags=re.M):
            return info
    raise LookupError(name)


def test_the_site_opens_in_a_browser_without_errors(site, page):
    for relative, expect in (("index.html", "captum-paths"),
                             ("api/search.html", "LayerProgressiveNeuronPath"),
                             ("tutorials/index.html", "Tutorials")):
        page.errors.clear()
        page.goto((site / relative).as_uri())
        page.wait_for_load_state("load")
        assert expect in page.inner_text("body"), relative
        assert not page.errors, (relative, page.errors)
    tutorial = sorted((site / "tutorials").glob("0*.html"))[0]
    page.goto(tutorial.as_uri())
    assert page.locator("div.cell_output").count() > 0 and not page.errors
    assert page.locator("#captum_paths\\.search\\.neuron_path\\.LayerProgressiveNeuronPath").count() == 0
    page.goto((site / "api" / "search.html").as_uri() + "#captum_paths.search.neuron_path.LayerProgressiveNeuronPath")
    assert page.locator("[id='captum_paths.search.neuron_path.LayerProgressiveNeuronPath']").count() == 1


def test_the_search_works_offline(site, page):
    page.goto((site / "search.html").as_uri() + "?q=NeuronSites")
    page.wait_for_selector("#search-results li", timeout=20_000)
    text = page.inner_text("#search-results")
    assert "NeuronSites" in text and not page.errors, page.errors
