"""Shared fixtures: a headless Chromium for the explorer's browser tests.

They use the system's Chromium (CAPTUM_PATHS_CHROMIUM names another binary), else the
one ``python -m playwright install chromium`` downloads, and skip when there is none,
unless CAPTUM_PATHS_REQUIRE_BROWSER=1 (``.ci/run`` sets it and installs Chromium)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def _chromium():
    for name in (os.environ.get("CAPTUM_PATHS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    required = os.environ.get("CAPTUM_PATHS_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e .[test])")
    executable = _chromium()
    with sync_playwright() as p:
        if executable is None and not Path(p.chromium.executable_path).exists():  # nor Playwright's own
            if required:
                pytest.fail("no Chromium found (apt-get install chromium, or set CAPTUM_PATHS_CHROMIUM)")
            pytest.skip("no Chromium installed (apt-get install chromium)")
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A page with the network disabled, and every console error and request it makes."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_offline(True)
    pg = context.new_page()
    pg.errors, pg.requests = [], []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    yield pg
    context.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread in this process: the tiny demo model gains nothing from a second, and loses
    much when another process keeps a core busy (see DEMO_THREADS)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_images_2(tmp_path_factory):
    """The demo's test images, 2 per class (20), as an image folder (read only: copy it to change it)."""
    from captum_paths.demo import save_demo_image_folder

    return save_demo_image_folder(tmp_path_factory.mktemp("demo_images") / "data", limit_per_class=2)
