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
