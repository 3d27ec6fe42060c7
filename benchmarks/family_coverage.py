"""Which vision transformer families captum_paths covers: one model per timm architecture
module, plus the torchvision, Hugging Face and open_clip families, with random weights.

For each model: does a registered family adapter find its neuron sites, and does a path
search run on one random image (2 steps, ``refine=0``)? Models above ``--max-params`` (100M)
(counted on the meta device, no memory used) are only checked for their sites. Prints a
Markdown table (``covered`` / ``not covered`` with the reason) and writes it to
``--out`` (default ``runs/family_coverage.md``).

Usage::

    python benchmarks/family_coverage.py [--only vision_transformer,eva] [--max-params 100e6]
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from captum_paths import LayerProgressiveNeuronPath, NeuronSites
from captum_paths.model.families import find_family
from captum_paths.evaluation.interventions import remove_neurons
from captum_paths.model.loading import as_logits_model
from captum_paths.model.stream import ResidualStream

SIZE_WORDS = ("atto", "femto", "pico", "nano", "micro", "tiny", "xxs", "xs", "mini", "small", "s", "little",
              "base", "b", "medium", "m")


def _size_rank(name: str) -> Tuple[int, int, str]:
    words = [re.sub(r"\d+$", "", w) for w in re.split(r"[_.\-]", name)]
    rank = min((SIZE_WORDS.index(w) for w in words if w in SIZE_WORDS), default=len(SIZE_WORDS))
    return rank, len(name), name


def timm_choices(only: Optional[List[str]]) -> Dict[str, str]:
    """``{timm module: its smallest-named model}``."""
    import timm

    modules: Dict[str, List[str]] = defaultdict(list)
    for name in timm.list_models():
        module = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
        if only is None or module in only:
            modules[module].append(name)
    return {module: min(names, key=_size_rank) for module, names in sorted(modules.items())}


def _has_attention(model: nn.Module) -> bool:
    names = ("attention", "attn")
    return any(any(w in type(m).__name__.lower() for w in names) or isinstance(m, nn.MultiheadAttention)
               for m in model.modules())


def check(build: Callable[[], nn.Module], size: Tuple[int, int, int], max_params: float) -> Dict[str, object]:
    """Build a model and report its coverage."""
    row: Dict[str, object] = {}
    start = time.perf_counter()
    try:
        with torch.device("meta"):
            meta = build()
        params = sum(p.numel() for p in meta.parameters())
    except Exception as exc:  # noqa: BLE001 - a report of what fails
        return {"status": "error", "reason": f"cannot build: {type(exc).__name__}: {str(exc)[:80]}"}
    row["params_M"] = round(params / 1e6, 1)
    found = find_family(meta)
    if found is None:
        kind = "a transformer" if _has_attention(meta) else "no attention (convolutional or MLP model)"
        return {**row, "status": "not covered", "reason": f"no family adapter recognises it; {kind}"}
    adapter, spec = found
    row.update(family=adapter.name, layers=len(spec.modules), width=spec.width, tokens=str(spec.tokens))
    if params > max_params:
        return {**row, "status": "covered (sites)", "reason": f"search not run: {params / 1e6:.0f}M parameters"}
    try:
        model = as_logits_model(build()).eval()
        x = torch.randn(1, *size)
        sites = NeuronSites.from_model(model)
        stream = ResidualStream.from_sites(sites)
        with torch.no_grad():
            logits = model(x)
        row["stream"] = bool(stream is not None and (stream.matches(x, logits) or stream.plain().matches(x, logits)))
        result = LayerProgressiveNeuronPath(model).attribute(x, target=0, n_steps=2, refine=0)
        with torch.no_grad(), remove_neurons(sites, result.paths):
            removed = model(x).softmax(-1)[0, 0]
        effect = float(logits.softmax(-1)[0, 0] - removed)
        row["jas"] = float(result.jas[0])
        if abs(row["jas"] - effect) > 1e-4 * max(1.0, abs(effect)):
            row.update(status="sites found, JAS is not the removal effect",
                       reason=f"JAS {row['jas']:.3g}, removal effect {effect:.3g}")
        else:
            row["status"] = "covered"
            row["reason"] = ""
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, MemoryError) or "can't allocate" in str(exc):
            row.update(status="covered (sites)", reason=f"search not run: more memory than this machine allows at "
                                                        f"{size[1]}x{size[2]} px")
        else:
            row.update(status="sites found, search fails", reason=f"{type(exc).__name__}: {str(exc)[:100]}")
            traceback.print_exc(limit=2, file=sys.stderr)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _input_size(model_name: str) -> Tuple[int, int, int]:
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return tuple(size) if size else (3, 224, 224)  # type: ignore[return-value]


def other_families() -> Dict[str, Tuple[Callable[[], nn.Module], Tuple[int, int, int]]]:
    """torchvision, Hugging Face and open_clip families at small configs."""
    import torchvision
    import transformers

    def hf(config, model, **kw):
        return lambda: getattr(transformers, model)(getattr(transformers, config)(**kw))

    small = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, num_labels=5)
    cases = {
        "torchvision vit_b_16": (lambda: torchvision.models.vit_b_16(), (3, 224, 224)),
        "torchvision swin_t": (lambda: torchvision.models.swin_t(), (3, 224, 224)),
        "HF ViT": (hf("ViTConfig", "ViTForImageClassification", **small), (3, 32, 32)),
        "HF DeiT (teacher)": (hf("DeiTConfig", "DeiTForImageClassificationWithTeacher", **small), (3, 32, 32)),
        "HF DINOv2": (hf("Dinov2Config", "Dinov2ForImageClassification", **{**small, "mlp_ratio": 2}),
                      (3, 32, 32)),
        "HF DINOv2 with registers": (hf("Dinov2WithRegistersConfig", "Dinov2WithRegistersForImageClassification",
                                        **{**small, "mlp_ratio": 2}), (3, 32, 32)),
        "HF BEiT": (hf("BeitConfig", "BeitForImageClassification", **small), (3, 32, 32)),
        "HF Swin": (hf("SwinConfig", "SwinForImageClassification", image_size=32, patch_size=4, embed_dim=16,
                       depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=5), (3, 32, 32)),
    }
    try:
        from open_clip.model import CLIP

        from captum_paths.model.zero_shot import ZeroShotClassifier

        def open_clip_zero_shot():
            model = CLIP(embed_dim=32, vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2,
                                                       head_width=32),
                         text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1))
            return ZeroShotClassifier(model.visual, torch.randn(5, 32))
        cases["open_clip ViT (zero-shot head)"] = (open_clip_zero_shot, (3, 32, 32))
    except ImportError:
        pass
    return cases


def _isolated(name: str, args: argparse.Namespace) -> Dict[str, object]:
    """:func:`check` of one timm model in a child process with a memory cap and a time limit, so
    that a model too big for this machine is reported instead of ending the run."""
    command = [sys.executable, __file__, "--one", name, "--max-params", str(args.max_params)]
    cap = int(args.memory_gb * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"status": "not run", "reason": f"over {args.timeout} s on this CPU"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1][:100]
        return {"status": "not run", "reason": f"child process failed (memory cap {args.memory_gb:g} GB?): {tail}"}
    return json.loads(lines[-1])


def main(argv: Optional[List[str]] = None) -> int:
    import pandas as pd
    import timm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated timm modules (default: all)")
    parser.add_argument("--max-params", type=float, default=100e6, help="search only models up to this size")
    parser.add_argument("--out", type=Path, default=Path("runs/family_coverage.md"))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-gb", type=float, default=8.0, help="memory cap per model (default: 8)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per model (default: 300)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.one:  # one timm model, in a child process (see below)
        print(json.dumps(check(lambda: timm.create_model(args.one, pretrained=False), _input_size(args.one),
                               args.max_params)))
        return 0
    rows = []
    for module, name in timm_choices(args.only.split(",") if args.only else None).items():
        rows.append({"source": "timm", "module": module, "model": name, **_isolated(name, args)})
        print(rows[-1], file=sys.stderr, flush=True)
    if args.only is None:
        for label, (build, size) in other_families().items():
            rows.append({"source": label.split()[0], "module": label, "model": "", **check(build, size,
                                                                                         args.max_params)})
            print(rows[-1], file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    columns = [c for c in ("source", "module", "model", "status", "family", "layers", "width", "tokens", "stream",
                           "params_M", "seconds", "reason") if c in table.columns]
    text = table[columns].astype(object).where(table[columns].notna(), "").to_markdown(index=False)
    counts = table["status"].value_counts().to_dict()
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"{summary}\n\n{text}\n")
    print(summary)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
