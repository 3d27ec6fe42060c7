"""The demo's torch thread setting, ``--threads`` on the command line, and extract's shared prediction forward."""
from __future__ import annotations

import pytest
import torch

from captum_paths.cli import main
from captum_paths.demo import save_demo_image_folder
from captum_paths.pipeline import Run
from captum_paths.pipeline.demo import DEMO_THREADS, _torch_threads, run_demo
from captum_paths.records import read_records


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_torch_threads_sets_and_restores(restore_threads):
    torch.set_num_threads(2)
    with _torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"):
        with _torch_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with _torch_threads(None):
        assert torch.get_num_threads() == 2


def test_demo_defaults_to_one_thread():
    assert DEMO_THREADS == 1


@pytest.mark.parametrize("threads", [-1, 1.5, True, "2"])
def test_run_demo_rejects_bad_threads(tmp_path, threads):
    with pytest.raises(ValueError, match="threads"):
        run_demo(tmp_path / "demo", threads=threads)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("command", [
    ["demo", "--threads", "-1"],
    ["extract", "--model", "demo", "--data", "nowhere", "--out", "nowhere", "--threads", "0"],
    ["evaluate", "--run", "nowhere", "--threads", "0"],
])
def test_cli_rejects_bad_threads(command, capsys, restore_threads):
    assert main(command + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--threads" in err and "Traceback" not in err


def test_cli_threads_sets_torch_threads(tmp_path, restore_threads):
    torch.set_num_threads(2)
    data = save_demo_image_folder(tmp_path / "data", limit_per_class=1)
    out = tmp_path / "run"
    assert main(["extract", "--model", "demo", "--data", str(data), "--out", str(out), "--method", "random",
                 "--limit", "3", "--threads", "1", "--quiet"]) == 0
    assert torch.get_num_threads() == 1


def test_extract_predictions_equal_a_forward_per_image(tmp_path):
    """One clean forward per batch is shared by every method; each record's prediction must still be the
    model's top-1 class of that image, computed here one image at a time."""
    data = save_demo_image_folder(tmp_path / "data", limit_per_class=2)
    out = tmp_path / "run"
    # a first run leaves activation done on 5 images, so the resumed batches search subsets of rows per method
    kwargs = dict(batch_size=7, progress=False, n_steps=2)
    Run(out, device="cpu").extract("demo", data, methods=["activation"], limit=5, **kwargs)
    Run(out, device="cpu").extract("demo", data, methods=["random", "activation"], **kwargs)
    records = read_records(out / "records.jsonl")
    assert len(records) == 2 * 20
    assert len({(r["method"], r["image_id"]) for r in records}) == 2 * 20
    from captum_paths.model.data import ImageFolderDataset
    from captum_paths.model.loading import load_model

    model, transform = load_model("demo", device="cpu")
    dataset = ImageFolderDataset(data, transform=transform)
    where = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    with torch.no_grad():
        for r in records:
            x, label, _ = dataset[where[r["image_id"]]]
            assert r["label"] == label
            assert r["prediction"] == int(model(x.unsqueeze(0)).argmax(dim=1))
