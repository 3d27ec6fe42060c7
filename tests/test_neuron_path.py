"""LayerProgressiveNeuronPath against brute-force greedy searches and literal references."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import captum_paths.attribution._machinery as machinery
import captum_paths.search.neuron_path as neuron_path
from captum_paths import JointNeuronIntegratedGradients, LayerProgressiveNeuronPath, NeuronSites, PathResult
from _models import tiny_vit as _tiny_vit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))




@pytest.fixture(scope="module")
def tiny():
    model = _tiny_vit()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    return model, x, y


@pytest.fixture
def no_stream(monkeypatch):
    """Force the generic full-forward path."""
    monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))


def _removed_output(model, sites, x, y, sets):
    """F(x with each row's set zeroed), sets: list (per row) of (layer, unit) lists."""
    width = sites.width
    edits = {}
    for l in range(sites.num_layers):
        keep = torch.ones(len(sets), width)
        for i, s in enumerate(sets):
            for (ll, u) in s:
                if ll == l:
                    keep[i, u] = 0.0
        edits[l] = lambda a, keep=keep: a * keep[:, None, :]
    with torch.no_grad(), sites.edit(edits):
        return model(x).softmax(-1).gather(1, y[:, None])[:, 0]


# ------------------------------------------------------------------ whole-site greedy
def _brute_force_whole_site_greedy(model, x, y, k, n_steps):
    """Greedy search that calls JointNeuronIntegratedGradients for the set
    prefix + whole site t and takes the k best site-t contributions."""
    jig = JointNeuronIntegratedGradients(model)
    L, width = 3, 64
    paths = torch.zeros(len(x), L, k, dtype=torch.long)
    for t in range(L):
        sets = []
        for i in range(len(x)):
            prefix = [(l, int(u)) for l in range(t) for u in paths[i, l]]
            sets.append(prefix + [(t, j) for j in range(width)])
        phi = jig.attribute(x, sets, target=y, n_steps=n_steps)
        paths[:, t] = phi[:, -width:].topk(k, dim=1).indices
    return paths


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("stream", [True, False])
def test_gate_engine_equals_brute_force_greedy(tiny, k, stream, monkeypatch):
    model, x, y = tiny
    if not stream:
        monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    result = LayerProgressiveNeuronPath(model).attribute(x, target=y, k=k, n_steps=8, refine=0)
    expected = _brute_force_whole_site_greedy(model, x, y, k, n_steps=8)
    assert torch.equal(result.paths, expected)
    assert result.settings["n_steps"] == 8 and result.settings["k"] == k


def test_stream_and_generic_paths_agree_exactly(tiny, monkeypatch):
    model, x, y = tiny
    search = LayerProgressiveNeuronPath(model)
    fast = search.attribute(x, target=y, k=2, refine=5, internal_batch_size=7)
    monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    slow = search.attribute(x, target=y, k=2, refine=5, internal_batch_size=7)
    assert torch.equal(fast.paths, slow.paths)
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast.jas, slow.jas)


def test_final_scores_are_the_joint_attribution_of_the_path(tiny):
    model, x, y = tiny
    result = LayerProgressiveNeuronPath(model).attribute(x, target=y, k=2)
    phi, jas, delta = JointNeuronIntegratedGradients(model).attribute(
        x, result.paths, target=y, n_steps=result.settings["n_steps"], return_convergence_delta=True, return_jas=True
    )
    torch.testing.assert_close(result.contributions, phi)
    torch.testing.assert_close(result.jas, jas)
    torch.testing.assert_close(result.delta, delta)


@pytest.mark.parametrize("internal_batch_size", [3, 8, 17, None])
def test_row_budgets_give_the_same_result(tiny, internal_batch_size):
    """Image groups (8 steps: 17 rows = 2 images), one image per group, and chunks
    smaller than an image (final scores then from JointNeuronIntegratedGradients)
    give one result, and the fused final scores equal the joint attribution."""
    model, x, y = tiny
    search = LayerProgressiveNeuronPath(model)
    result = search.attribute(x, target=y, k=2, n_steps=8, refine=4, internal_batch_size=internal_batch_size)
    whole = search.attribute(x, target=y, k=2, n_steps=8, refine=4, internal_batch_size=4 * 8)
    assert torch.equal(result.paths, whole.paths)
    assert torch.equal(result.refined_layers, whole.refined_layers)
    phi, jas, delta = JointNeuronIntegratedGradients(model).attribute(
        x, result.paths, target=y, n_steps=8, return_convergence_delta=True, return_jas=True
    )
    torch.testing.assert_close(result.contributions, phi)
    torch.testing.assert_close(result.jas, jas)
    torch.testing.assert_close(result.delta, delta)


@pytest.mark.parametrize("mode", ["gate", "paper"])
def test_whole_model_passes_are_sized_to_the_memory_budget(tiny, mode, monkeypatch):
    """Without the stream (and in paper mode) ``internal_batch_size=None`` chunks the
    rows to ``CPU_GRAPH_BUDGET`` using the measured graph size of one row."""
    model, x, y = tiny
    monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    search = LayerProgressiveNeuronPath(model)
    whole = search.attribute(x, target=y, k=2, mode=mode, internal_batch_size=10_000, refine=0)
    measured = []
    real = neuron_path._measured_graph_bytes
    monkeypatch.setattr(neuron_path, "_measured_graph_bytes", lambda o, c: measured.append(real(o, c)) or measured[-1])
    chunks = []
    real_rows = machinery.StepRows.__init__

    def spy(self, *args, **kwargs):
        real_rows(self, *args, **kwargs)
        chunks.append(self.chunk)

    monkeypatch.setattr(machinery.StepRows, "__init__", spy)
    monkeypatch.setattr(machinery, "CPU_GRAPH_BUDGET", 0)  # one row per pass
    small = search.attribute(x, target=y, k=2, mode=mode, refine=0)
    # the search's passes and the final scoring's, all one row each
    assert measured and measured[0] > 0 and chunks and set(chunks) == {1}
    assert torch.equal(small.paths, whole.paths)
    torch.testing.assert_close(small.jas, whole.jas)
    torch.testing.assert_close(small.contributions, whole.contributions)


# --------------------------------------------------------------------- paper parity
@pytest.mark.parametrize("k", [1, 2])
def test_paper_mode_equals_literal_released_algorithm(tiny, k):
    reference = pytest.importorskip("benchmarks.reference_search")
    model, x, y = tiny
    result = LayerProgressiveNeuronPath(model).attribute(x, target=y, k=k, mode="paper")
    paths, scores = reference.reference_paper_search(model, x, y, k=k, m=20)
    assert torch.equal(result.paths, paths)
    torch.testing.assert_close(result.scores.double(), scores.double(), rtol=1e-4, atol=1e-7)
    assert result.settings["mode"] == "paper" and result.settings["n_steps"] == 20


# --------------------------------------------------------------------------- refine
def test_refine_all_equals_brute_force_exact_greedy(tiny):
    model, x, y = tiny
    sites = NeuronSites.from_model(model)
    result = LayerProgressiveNeuronPath(model).attribute(x, target=y, refine="all", k=2)
    with torch.no_grad():
        f_clean = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    paths = torch.zeros(4, 3, 2, dtype=torch.long)
    for t in range(3):
        for i in range(4):
            prefix = [(l, int(u)) for l in range(t) for u in paths[i, l]]
            sets = [prefix + [(t, j)] for j in range(64)]
            exact = f_clean[i] - _removed_output(model, sites, x[i : i + 1].expand(64, -1, -1, -1), y[i].repeat(64), sets)
            paths[i, t] = exact.topk(2).indices
    assert torch.equal(result.paths, paths)


def test_refined_choice_is_never_worse_than_the_approximation(tiny):
    model, x, y = tiny
    sites = NeuronSites.from_model(model)
    search = LayerProgressiveNeuronPath(model)
    refined = search.attribute(x, target=y, refine=6)
    assert refined.refined_layers is not None and refined.refined_layers.shape == (4,)
    # re-derive the approximation's choice given the refined prefix, layer by layer
    with torch.no_grad():
        f_clean = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    changed = torch.zeros(4, dtype=torch.long)
    for t in range(3):
        sets = [[(l, int(refined.paths[i, l, 0])) for l in range(t)] + [(t, j)] for i in range(4) for j in range(64)]
        phi = JointNeuronIntegratedGradients(model).attribute(
            x, [[(l, int(refined.paths[i, l, 0])) for l in range(t)] + [(t, j) for j in range(64)] for i in range(4)],
            target=y, n_steps=refined.settings["n_steps"],
        )
        approx_choice = phi[:, -64:].argmax(1)
        exact = f_clean.repeat_interleave(64) - _removed_output(
            model, sites, x.repeat_interleave(64, 0), y.repeat_interleave(64), sets
        )
        exact = exact.view(4, 64)
        chosen = refined.paths[:, t, 0]
        assert torch.all(exact.gather(1, chosen[:, None]) >= exact.gather(1, approx_choice[:, None]) - 1e-7)
        changed += (chosen != approx_choice).long()
    assert torch.equal(refined.refined_layers, changed)


def test_paper_mode_refine_uses_the_paper_score(tiny):
    model, x, y = tiny
    x, y = x[:2], y[:2]
    result = LayerProgressiveNeuronPath(model).attribute(x, target=y, mode="paper", refine=3)
    jig = JointNeuronIntegratedGradients(model)
    for i in range(2):
        prefix = [(l, int(result.paths[i, l, 0])) for l in range(2)]
        # the chosen last-layer neuron has the best paper JAS among its candidates
        _, chosen_jas = jig.attribute(x[i : i + 1], [prefix + [(2, int(result.paths[i, 2, 0]))]], target=y[i : i + 1],
                                      mode="paper", return_jas=True)
        torch.testing.assert_close(result.scores[i, 2, 0], chosen_jas[0], rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------- invariants
def test_top_k_layers_hold_distinct_neurons_and_extend_k1(tiny):
    model, x, y = tiny
    search = LayerProgressiveNeuronPath(model)
    one = search.attribute(x, target=y, k=1)
    three = search.attribute(x, target=y, k=3)
    assert three.paths.shape == (4, 3, 3)
    for row in three.paths.reshape(-1, 3):
        assert len(set(row.tolist())) == 3
    # the first layer has no prefix: the best neuron is the same for any k
    assert torch.equal(three.paths[:, 0, 0], one.paths[:, 0, 0])
    assert torch.all(three.scores[:, :, :-1] >= three.scores[:, :, 1:])


@pytest.mark.parametrize("mode", ["gate", "paper"])
def test_determinism_and_batch_independence(tiny, mode):
    model, x, y = tiny
    search = LayerProgressiveNeuronPath(model)
    a = search.attribute(x, target=y, mode=mode, k=2)
    b = search.attribute(x, target=y, mode=mode, k=2)
    assert torch.equal(a.paths, b.paths) and torch.equal(a.jas, b.jas)
    order = torch.tensor([2, 0, 3, 1])
    shuffled = search.attribute(x[order], target=y[order], mode=mode, k=2)
    assert torch.equal(shuffled.paths, a.paths[order])
    for i in range(4):
        alone = search.attribute(x[i : i + 1], target=y[i : i + 1], mode=mode, k=2)
        assert torch.equal(alone.paths[0], a.paths[i])


def test_other_families_run_through_stream_and_generic_paths():
    torch.manual_seed(0)
    tv = torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=48, num_classes=4
    ).eval()
    torch.nn.init.normal_(tv.heads.head.weight)
    x = torch.randn(3, 3, 16, 16)
    sites = NeuronSites.from_model(tv)
    assert neuron_path.ResidualStream.from_sites(sites).matches(x, tv(x))
    result = LayerProgressiveNeuronPath(tv).attribute(x, target=1)
    assert result.paths.shape == (3, 2, 1)
    transformers = pytest.importorskip("transformers")
    hf = transformers.ViTForImageClassification(
        transformers.ViTConfig(image_size=16, patch_size=4, num_hidden_layers=2, hidden_size=32,
                               num_attention_heads=2, intermediate_size=48, num_labels=4)
    ).eval()
    result = LayerProgressiveNeuronPath(hf).attribute(x, target=2, k=2, refine=4)
    assert result.paths.shape == (3, 2, 2) and torch.isfinite(result.jas).all()


# ----------------------------------------------------------------------- records
def test_records_round_trip(tiny, tmp_path):
    model, x, y = tiny
    result = LayerProgressiveNeuronPath(model).attribute(x, target=y, k=2, refine=3)
    records = result.to_records(image_ids=[f"img{i}.png" for i in range(4)], labels=y.tolist(),
                                predictions=[0, 0, 1, 1], model_id="tiny")
    file = tmp_path / "r.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in records))
    loaded = [json.loads(line) for line in file.read_text().splitlines()]
    assert loaded[1]["image_id"] == "img1.png" and loaded[1]["label"] == 1 and loaded[1]["prediction"] == 0
    assert loaded[0]["method"] == "neuron-path" and loaded[0]["settings"]["refine"] == 3
    assert len(loaded[0]["path"]) == 3 and len(loaded[0]["path"][0]) == 2
    back = PathResult.from_records(loaded)
    assert torch.equal(back.paths, result.paths)
    torch.testing.assert_close(back.jas, result.jas)
    torch.testing.assert_close(back.contributions, result.contributions)
    assert torch.equal(back.refined_layers, result.refined_layers)


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,exc,words",
    [
        (dict(k=0), ValueError, ["k", "0"]),
        (dict(k=65), ValueError, ["k", "64"]),
        (dict(refine=-1), ValueError, ["refine"]),
        (dict(refine="some"), ValueError, ["refine", "'all'"]),
        (dict(k=3, refine=2), ValueError, ["refine", "k=3"]),
        (dict(mode="exact"), ValueError, ["mode"]),
        (dict(method="simpson"), ValueError, ["method"]),
        (dict(target=9), ValueError, ["target", "9"]),
        (dict(bogus=1), TypeError, ["bogus"]),
    ],
)
def test_bad_arguments(tiny, kwargs, exc, words):
    model, x, _ = tiny
    with pytest.raises(exc) as info:
        LayerProgressiveNeuronPath(model).attribute(x, **kwargs)
    for w in words:
        assert w in str(info.value)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# --------------------------------------------------------------------- dtypes, devices
def _demo_batch():
    from captum_paths.demo import load_demo_data, load_demo_model

    x, y = load_demo_data("test")
    return load_demo_model(), x[:6], y[:6]


def test_bfloat16_autocast_on_cpu():
    model, x, y = _demo_batch()
    search = LayerProgressiveNeuronPath(model)
    # the whole-site ranking is robust to bf16; exact re-scoring compares differences of
    # bf16 probabilities, close candidates can swap there, so it is checked for finiteness
    full = search.attribute(x, target=y, refine=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = search.attribute(x, target=y, refine=0)
        refined = search.attribute(x, target=y)
    assert half.contributions.dtype == torch.float32 and torch.isfinite(half.contributions).all()
    assert (half.paths == full.paths).float().mean() >= 0.9
    torch.testing.assert_close(half.jas, full.jas, rtol=0.1, atol=2e-2)
    assert torch.isfinite(refined.jas).all() and refined.settings["refine"] == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model, x, y = _demo_batch()
    cpu = LayerProgressiveNeuronPath(model).attribute(x, target=y, refine=4)
    gpu = LayerProgressiveNeuronPath(model.cuda()).attribute(x.cuda(), target=y.cuda(), refine=4)
    assert gpu.paths.device.type == "cuda"
    assert (gpu.paths.cpu() == cpu.paths).float().mean() >= 0.95
    torch.testing.assert_close(gpu.jas.cpu(), cpu.jas, rtol=1e-3, atol=1e-5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = LayerProgressiveNeuronPath(model).attribute(x.cuda(), target=y.cuda())
    torch.testing.assert_close(half.jas.cpu(), cpu.jas, rtol=0.1, atol=2e-2)


# ------------------------------------------------------------------ exact reported JAS
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("name", ["neuron-path", "activation", "knowledge-neurons", "conductance",
                                  "influence-pattern", "random"])
def test_reported_jas_is_the_removal_effect_of_the_path(tiny, name, stream, monkeypatch):
    """At default settings, every method's reported JAS is F(x) - F(x; path removed),
    and delta is the contributions' gap to it."""
    from captum_paths.search import PATH_METHODS
    from captum_paths.evaluation.interventions import remove_neurons

    if not stream:
        monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    model, x, y = tiny
    result = PATH_METHODS[name](model).attribute(x, target=y, k=2)
    with torch.no_grad():
        clean = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
        with remove_neurons(NeuronSites.from_model(model), result.paths):
            removed = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(result.jas, clean - removed, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(result.contributions.sum(dim=(1, 2)) - result.jas, result.delta, rtol=0, atol=1e-6)


def test_path_tolerance_refines_the_contributions(tiny):
    model, x, y = tiny
    search = LayerProgressiveNeuronPath(model, output="logit")
    coarse = search.attribute(x, target=y, k=3, n_steps=2)
    tol = 1e-4
    assert (coarse.delta.abs() > tol * coarse.jas.abs()).any(), "the test needs a coarse delta"
    fine = search.attribute(x, target=y, k=3, n_steps=2, tol=tol)
    assert torch.equal(fine.paths, coarse.paths)
    torch.testing.assert_close(fine.jas, coarse.jas)
    assert (fine.delta.abs() <= torch.clamp(tol * fine.jas.abs(), min=1e-7) + 1e-7).all()
    assert fine.settings["tol"] == tol
    phi = JointNeuronIntegratedGradients(model, output="logit").attribute(x, fine.paths, target=y, n_steps=64)
    torch.testing.assert_close(fine.contributions, phi, rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------- beam
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("refine", [3, "all"])
def test_beam_of_one_is_the_refined_greedy(tiny, refine, stream, monkeypatch):
    if not stream:
        monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    model, x, y = tiny
    search = LayerProgressiveNeuronPath(model)
    greedy = search.attribute(x, target=y, refine=refine)
    beam = search.attribute(x, target=y, refine=refine, beam=1)
    assert torch.equal(beam.paths, greedy.paths)
    torch.testing.assert_close(beam.jas, greedy.jas)


def _all_paths_removal(model, x, y, width, layers):
    """JAS (removal effect) of every one-neuron-per-layer path: (batch, width ** layers)."""
    sites = NeuronSites.from_model(model)
    grid = torch.cartesian_prod(*[torch.arange(width)] * layers)  # (P, L)
    with torch.no_grad():
        f_clean = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    out = torch.zeros(len(x), len(grid))
    for i in range(len(x)):
        sets = [[(l, int(u)) for l, u in enumerate(p)] for p in grid]
        removed = _removed_output(model, sites, x[i : i + 1].expand(len(grid), -1, -1, -1), y[i].repeat(len(grid)), sets)
        out[i] = f_clean[i] - removed
    return out, grid


@pytest.mark.parametrize("stream", [True, False])
def test_beam_covering_every_candidate_finds_the_brute_force_best_path(stream, monkeypatch):
    if not stream:
        monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    model = _tiny_vit(seed=5, mlp_ratio=0.25)  # d_ff 8: 512 paths over 3 layers
    torch.manual_seed(5)
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 2, 4])
    jas, grid = _all_paths_removal(model, x, y, 8, 3)
    search = LayerProgressiveNeuronPath(model)
    result = search.attribute(x, target=y, refine="all", beam=64)
    best = jas.argmax(dim=1)
    assert torch.equal(result.paths[:, :, 0], grid[best])
    torch.testing.assert_close(result.jas, jas.max(dim=1).values, rtol=1e-5, atol=1e-7)
    # the exact greedy misses the best path of the first image on this model
    greedy = search.attribute(x, target=y, refine="all")
    assert (greedy.jas <= result.jas + 1e-7).all() and greedy.jas[0] < result.jas[0] - 1e-7


def test_beam_is_never_worse_than_the_greedy_and_records_its_setting(tiny):
    model, x, y = tiny
    search = LayerProgressiveNeuronPath(model)
    greedy = search.attribute(x, target=y, refine=4)
    beam = search.attribute(x, target=y, refine=4, beam=4)
    assert beam.settings["beam"] == 4 and "beam" not in greedy.settings
    # scores hold the exact JAS of each prefix; the last one is the path's JAS
    torch.testing.assert_close(beam.scores[:, -1, 0], beam.jas, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="k=1"):
        search.attribute(x, target=y, beam=2, k=2)
    with pytest.raises(ValueError, match="beam"):
        search.attribute(x, target=y, beam=0)


@pytest.mark.parametrize("internal_batch_size", [4, 9, None])
def test_beam_results_do_not_depend_on_the_row_budget(tiny, internal_batch_size):
    model, x, y = tiny
    search = LayerProgressiveNeuronPath(model)
    whole = search.attribute(x, target=y, beam=3, refine=4, internal_batch_size=10_000)
    part = search.attribute(x, target=y, beam=3, refine=4, internal_batch_size=internal_batch_size)
    assert torch.equal(part.paths, whole.paths)
    torch.testing.assert_close(part.jas, whole.jas)


# ------------------------------------------------------------------ candidate pools
def test_proposal_pool_takes_distinct_neurons_from_each_ranking_in_turn():
    from captum_paths.search.candidates import proposal_pool

    whole = torch.tensor([[9.0, 8, 7, 1, 0, 0], [0, 0, 0, 0, 0, 1]])
    marginal = torch.tensor([[9.0, 0, 0, 8, 0, 0], [0, 0, 0, 0, 0, 5]])
    magnitude = torch.tensor([[0.0, 0, 0, 0, 9, 8], [3, 2, 1, 0, 0, 0]])
    pool = proposal_pool([whole, marginal, magnitude], 4)
    # row 0: whole 0, marginal 0 (taken) , magnitude 4, whole 1, marginal 3 -> [0, 4, 1, 3]
    assert pool[0].tolist() == [0, 4, 1, 3]
    # row 1: whole 5, marginal 5 (taken), magnitude 0, then whole's second best (the first of its ties)
    assert pool[1].tolist()[:2] == [5, 0] and len(set(pool[1].tolist())) == 4
    assert torch.equal(proposal_pool([whole], 3), whole.topk(3, dim=1).indices)


def _first_order_brute_force(model, x, y, prefix_paths, t):
    """dF/dg of site t at gates 1 with the prefix removed, and |a| there: (B, d_ff) each."""
    sites = NeuronSites.from_model(model)
    width = sites.width
    gates = torch.ones(len(x), width, requires_grad=True)
    edits = {}
    for l in range(t):
        keep = torch.ones(len(x), width).scatter_(1, prefix_paths[:, l], 0.0)
        edits[l] = lambda a, keep=keep: a * keep[:, None, :]
    seen = []
    edits[t] = lambda a: (seen.append(a), a * gates[:, None, :])[1]
    with torch.enable_grad(), sites.edit(edits):
        f = model(x).softmax(-1).gather(1, y[:, None]).sum()
    (grad,) = torch.autograd.grad(f, gates)
    return grad.double(), seen[0].detach().abs().sum(1).double()


@pytest.mark.parametrize("stream", [True, False])
def test_refined_choice_beats_the_best_of_every_ranking(tiny, stream, monkeypatch):
    """refine=3 re-scores the top neuron of each ranking (whole-site, first-order,
    magnitude): the chosen neuron's exact JAS is at least each of theirs."""
    if not stream:
        monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    model, x, y = tiny
    sites = NeuronSites.from_model(model)
    result = LayerProgressiveNeuronPath(model).attribute(x, target=y, refine=3)
    paths = result.paths
    for t in range(3):
        marginal, magnitude = _first_order_brute_force(model, x, y, paths, t)
        for ranking in (marginal, magnitude):
            top = ranking.argmax(dim=1)
            sets_top = [[(l, int(paths[i, l, 0])) for l in range(t)] + [(t, int(top[i]))] for i in range(len(x))]
            sets_chosen = [[(l, int(paths[i, l, 0])) for l in range(t + 1)] for i in range(len(x))]
            chosen = _removed_output(model, sites, x, y, sets_chosen)
            other = _removed_output(model, sites, x, y, sets_top)
            assert (chosen <= other + 1e-7).all()  # lower F after removal = higher JAS
        torch.testing.assert_close(result.scores[:, t, 0].double(),
                                   (model(x).softmax(-1).gather(1, y[:, None])[:, 0].detach().double()
                                    - _removed_output(model, sites, x, y, sets_chosen).double()),
                                   rtol=1e-4, atol=1e-6)
