"""The code examples of the README and the documentation run, so the docs cannot drift from the
code: every ```python block of a page runs, in order, in one fresh interpreter per page, after a
prelude that defines what the examples assume (``model``: the demo ViT, ``images`` and ``labels``:
8 of its test images). A block preceded by ``<!-- not run: REASON -->`` needs what a test cannot
have (the model hub, a GPU, ImageNet) and is only compiled."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import ENV

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "guides").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- not run: (?P<reason>[^>]+?) -->\n)?```python\n(?P<code>.*?)^```$", flags=re.S | re.M)
PRELUDE = """
import torch
from captum_paths.demo import load_demo_data, load_demo_model
torch.manual_seed(0)
torch.set_num_threads(1)
model = load_demo_model()
images, labels = load_demo_data("test")
images, labels = images[:8], labels[:8]
"""


def _blocks(page):
    return [(m.group("code"), m.group("reason")) for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_examples_of_a_page_run(page, tmp_path):
    blocks = _blocks(page)
    for code, reason in blocks:
        compile(code, str(page), "exec")  # every block is Python, run or not
        assert reason is None or reason.strip(), page
    runnable = [code for code, reason in blocks if reason is None]
    if not runnable:
        pytest.skip("every example of the page needs what a test cannot have")
    script = PRELUDE + "\n".join(f"\n# --- example {i}\n{code}" for i, code in enumerate(runnable))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, f"{page.name}:\n{done.stderr[-3000:]}"


def test_every_page_with_examples_is_checked():
    assert {p.name for p in PAGES if _blocks(p)} >= {"README.md", "index.md", "heads.md", "models.md",
                                                      "extending.md", "captum.md"}
