"""Conductance and influence patterns on a real pretrained ViT: do they compute their
definitions, and why do their paths score near random?

On the DINOv2 ViT-S/14 + linear probe of :mod:`benchmarks.real_model` (112 px
digits, ``--per-class`` held-out images per class), it checks

1. conductance: the path method's per-neuron scores equal Captum's
   ``LayerConductance`` of the site (summed over the class token). Conductance
   is complete over a layer that every path from input to output crosses; an
   FFN site is not such a layer (the residual connection bypasses it), so its
   sum over every token and neuron is shown next to ``F(x) - F(0)`` (zero input
   baseline) to make that visible, together with the class token's share;
2. influence patterns: the scores equal a literal loop of the released scripts'
   form: the gradient of ``F`` with respect to the site activation at the inputs
   ``alpha * x``, averaged over the integration grid;

and then describes the neurons each method puts on its paths: their clean
activation at the class token, how much of that activation differs from the
zero-input baseline, and the exact effect of removing that one neuron
(``F(x) - F(x; neuron zeroed)``), averaged over layers and images.

Usage::

    python -m benchmarks.real_model_baselines [--per-class 2] [--threads 2] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch
from captum.attr import LayerConductance

from benchmarks.common import emit
from benchmarks.real_model import build_real_classifier, select_test_images
from captum_paths import NeuronSites
from captum_paths.pipeline.report import markdown
from captum_paths.search import PATH_METHODS


def prob(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(-1).gather(1, y[:, None])[:, 0].double()


def conductance_checks(model, sites, x, y, layer: int, n_steps: int = 64) -> Dict[str, float]:
    """Captum conductance of one site over every token vs ``F(x) - F(0)``, and the
    path method's scores of that layer vs Captum's class-token sum."""
    forward = lambda inp: model(inp).softmax(-1)  # noqa: E731
    attr = LayerConductance(forward, sites.modules[layer]).attribute(
        x, baselines=torch.zeros_like(x), target=y, n_steps=n_steps, method="gausslegendre")
    total = attr.double().sum(dim=(1, 2))
    expected = prob(model, x, y) - prob(model, torch.zeros_like(x), y)
    search = PATH_METHODS["conductance"](model)
    ctx_scores = _scores(search, x, y, n_steps=n_steps)
    captum_cls = attr.double()[:, 0]
    return {
        "layer": layer,
        "site conductance (all tokens) / (F(x) - F(0))": (total / expected).mean().item(),
        "max |path score - Captum CLS conductance|": (ctx_scores[:, layer] - captum_cls).abs().max().item(),
        "share of |conductance| at the class token": (attr.double()[:, 0].abs().sum(1) / attr.double().abs().sum((1, 2))).mean().item(),
    }


def _scores(search, x, y, n_steps: int) -> torch.Tensor:
    """A baseline's per-neuron scores ``(N, L, d_ff)`` through its own scoring code."""
    from captum_paths.attribution.output import output_value
    from captum_paths.search.base import SearchContext

    with torch.no_grad(), search.sites.record() as clean:
        logits = search.forward_func(x)
    ctx = SearchContext((x,), (), y, logits, dict(clean), output_value(logits, y, search.output),
                        1, n_steps, "gausslegendre", "gate", None)
    return search._neuron_scores(ctx)


def influence_literal(model, sites, x, y, n_steps: int = 4) -> torch.Tensor:
    """The released scripts' influence pattern: dF/da at alpha*x, averaged over the
    Gauss-Legendre grid, per layer at the class token: ``(N, L, d_ff)``."""
    from captum_paths.attribution._machinery import quadrature

    weights, alphas = quadrature("gausslegendre", n_steps, x.device)
    out = torch.zeros(len(x), sites.num_layers, sites.width, dtype=torch.float64)
    for w, a in zip(weights.tolist(), alphas.tolist()):
        acts = {}
        handles = [m.register_forward_hook(lambda mod, i, o, l=l: acts.__setitem__(l, o) or o)
                   for l, m in enumerate(sites.modules)]
        try:
            f = model(x * a).softmax(-1).gather(1, y[:, None]).sum()
        finally:
            for h in handles:
                h.remove()
        grads = torch.autograd.grad(f, [acts[l] for l in range(sites.num_layers)])
        for l, g in enumerate(grads):
            out[:, l] += w * g[:, 0].double()
    return out


def neuron_profile(model, sites, x, y, paths: torch.Tensor) -> Dict[str, float]:
    """Class-token activation of the chosen neurons, their change from the zero-input
    baseline, and the exact removal effect of each neuron alone."""
    with torch.no_grad(), sites.record() as clean:
        model(x)
    with torch.no_grad(), sites.record() as base:
        model(torch.zeros_like(x))
    f = prob(model, x, y)
    act, change, effect = [], [], []
    for l in range(sites.num_layers):
        units = paths[:, l, 0]
        a = clean[l][torch.arange(len(x)), 0, units].double()
        b = base[l][torch.arange(len(x)), 0, units].double()
        keep = torch.ones(len(x), sites.width)
        keep[torch.arange(len(x)), units] = 0.0
        with torch.no_grad(), sites.edit({l: lambda t, keep=keep: t * keep[:, None, :]}):
            removed = prob(model, x, y)
        act.append(a)
        change.append((a - b).abs())
        effect.append(f - removed)
    act, change, effect = torch.stack(act, 1), torch.stack(change, 1), torch.stack(effect, 1)
    return {
        "mean activation": act.mean().item(),
        "share with activation < 0.05": (act < 0.05).double().mean().item(),
        "mean |a(x) - a(0)|": change.mean().item(),
        "mean one-neuron removal effect": effect.mean().item(),
    }


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    case = build_real_classifier()
    model = case.model.eval()
    sites = NeuronSites.from_model(model)
    x, y = select_test_images(case, per_class=args.per_class)

    checks = pd.DataFrame([conductance_checks(model, sites, x[:4], y[:4], layer) for layer in (0, 5, 11)])
    ours = _scores(PATH_METHODS["influence-pattern"](model), x[:4], y[:4], n_steps=4)
    literal = influence_literal(model, sites, x[:4], y[:4], n_steps=4)
    influence_gap = (ours - literal).abs().max().item() / literal.abs().max().item()

    rows = []
    for name in PATH_METHODS:
        paths = PATH_METHODS[name](model).attribute(x, target=y).paths
        rows.append({"method": name, **neuron_profile(model, sites, x, y, paths)})
    profile = pd.DataFrame(rows)
    text = (f"{len(x)} images, DINOv2 ViT-S/14 + linear probe\n\nConductance checks (4 images, 64 GL steps):\n\n"
            + markdown(checks)
            + f"\n\nInfluence pattern vs literal loop (4 images, 4 GL steps): max relative difference {influence_gap:.2e}"
            + "\n\nNeurons on each method's path (class token, mean over layers and images):\n\n" + markdown(profile))
    emit(text, args.out)
    return text


if __name__ == "__main__":
    main()
