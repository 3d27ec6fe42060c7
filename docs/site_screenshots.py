"""Screenshots of the built documentation site: its index, the API page of the path search
and the first tutorial, in headless Chromium, into ``docs/figures/site_*.png``.

Usage (needs the test extras, for Playwright, and a Chromium)::

    sphinx-build -W -b html docs docs/_build/html
    python docs/site_screenshots.py docs/_build/html
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

FIGURES = Path(__file__).resolve().parent / "figures"
PAGES = {  # file name -> page of the site
    "site_index.png": "index.html",
    "site_api.png": "api/search.html#captum_paths.search.neuron_path.LayerProgressiveNeuronPath",
    "site_tutorial.png": "tutorials/02_Neuron_Path_Search.html",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built site (sphinx-build's output folder)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        for name, address in PAGES.items():
            file, _, anchor = address.partition("#")
            page.goto((args.site.resolve() / file).as_uri())
            page.wait_for_load_state("load")
            if anchor:  # scrolled by the page itself, so that the theme lays out as for a reader
                page.evaluate("id => window.scrollTo(0, document.getElementById(id).getBoundingClientRect().top"
                              " + window.scrollY - 16)", anchor)
            page.wait_for_timeout(300)
            page.screenshot(path=str(FIGURES / name))
            print(FIGURES / name)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
