"""The README's screenshots of the path explorer: the demo run's four views, and a class's learned
circuit, in headless Chromium.

Usage (needs the test extras, for Playwright, and a Chromium)::

    captum-paths demo --out runs/demo
    python docs/screenshots.py runs/demo/report.html
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

FIGURES = Path(__file__).resolve().parent / "figures"
VIEWS = {  # file name -> (address, element that says the view is drawn)
    "explorer_overview.png": ("", "body[data-ready=overview]"),
    "explorer_class.png": ("#class/3", "#class-body[data-drawn]"),
    "explorer_neuron.png": ("#neuron", "#neuron-body[data-neuron] #neuron-classes .main-svg"),
    "explorer_image.png": ("#image/12", "#image-body[data-image] #image-contributions .main-svg"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 820})
        for name, (address, ready) in VIEWS.items():
            page.goto(args.report.resolve().as_uri() + address)
            page.wait_for_selector(ready, timeout=30_000)
            page.wait_for_timeout(500)  # Plotly's transitions
            page.screenshot(path=str(FIGURES / name))
            print(FIGURES / name)
        circuit = _first_circuit(args.report)
        if circuit is not None:  # the class view scrolled to its circuit
            page.goto(args.report.resolve().as_uri() + f"#class/{circuit}")
            page.wait_for_selector("#class-body[data-circuit-units] #class-circuit-layers .main-svg", timeout=30_000)
            page.wait_for_timeout(500)
            page.eval_on_selector("#class-circuit-summary", "e => window.scrollTo(0, e.getBoundingClientRect().top "
                                                            "+ window.scrollY - 110)")
            page.screenshot(path=str(FIGURES / "explorer_circuit.png"))
            print(FIGURES / "explorer_circuit.png")
        browser.close()
    return 0


def _first_circuit(report: Path):
    """The page index of the first class the circuits stage studied, or ``None``."""
    from captum_paths.explorer import read_payload

    circuits = read_payload(report.read_text()).get("circuits") or []
    return next((c for c, entry in enumerate(circuits) if entry is not None), None)


if __name__ == "__main__":
    sys.exit(main())
