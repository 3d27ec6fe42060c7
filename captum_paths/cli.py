"""The ``captum-paths`` command line.

The CLI only wires the library together; every subcommand is a thin layer over
public functions.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from captum_paths._version import __version__

logger = logging.getLogger("captum_paths")


THREADS_HELP = ("torch intra-op threads on CPU (default: torch's, one per core); 1 is much faster for small "
                "models when other processes share the cores")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-paths",
        description=(
            "Discover the influential neuron paths inside vision transformers "
            "(Wang et al., ICLR 2025) with Captum."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_demo, _add_extract, _add_merge, _add_evaluate, _add_analyze, _add_circuits, _add_report,
                _add_compare):
        add(commands)
    return parser


def _add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo", help="the whole job on the embedded digits ViT: paths (every method), evaluation, analysis, report",
        description=(
            "Run every path method on the embedded demo model's test images (4 per class by default), then "
            "evaluate, analyze and write OUT/report.html and OUT/summary.md."
        ),
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    demo.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--restart", action="store_true",
                      help="replace a demo run of other settings (--per-class) in --out; nothing the demo did not "
                           "write is ever replaced")
    demo.add_argument("--per-class", type=int, default=None,
                      help="test images per class (default: 4, i.e. 40 images; 0 = all 360)")
    demo.add_argument("--n-steps", "--steps", dest="n_steps", type=int, default=None,
                      help="integration steps of every search and score (default: each method's; faster when small)")
    demo.add_argument("--threads", type=int, default=None,
                      help="torch intra-op threads (default: 1, best for the tiny demo model on a shared machine; "
                           "0 = torch's default)")
    demo.set_defaults(handler=_run_demo)


def _add_extract(commands) -> None:
    extract = commands.add_parser(
        "extract", help="find neuron paths for every image of an image folder (resumable; torchrun-aware)",
        description=(
            "Find neuron paths for every image of DATA (one sub-folder per class) and append one record per "
            "(image, method) to OUT/records.jsonl. Rerunning resumes; a folder of another run is refused unless "
            "--restart. Under torchrun the images are sharded by rank and merged by rank 0."
        ),
    )
    extract.add_argument("--model", required=True,
                         help="model spec: demo, timm:NAME, torchvision:NAME, hf:NAME_OR_PATH or open_clip:ARCH[@TAG] "
                              "(a zero-shot classifier over the class folder names)")
    extract.add_argument("--checkpoint", type=Path, default=None, help="local weights (.safetensors, .pt, .pth, .bin)")
    extract.add_argument("--pretrained", action="store_true", help="download the published weights")
    extract.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                         help="keyword argument of the model's constructor, repeatable (e.g. img_size=112; values "
                              "are Python literals, else strings)")
    extract.add_argument("--random-weights", type=int, default=None, metavar="SEED",
                         help="study a timm/torchvision model with random weights drawn from SEED (recorded in "
                              "run.json; without it such a model is refused)")
    extract.add_argument("--num-classes", type=int, default=None, help="size of the classifier head")
    extract.add_argument("--data", type=Path, required=True, help="image folder: DATA/<class>/<image>")
    extract.add_argument("--label-map", type=Path, default=None, help="JSON: class folder -> class index")
    extract.add_argument("--out", type=Path, required=True, help="run folder for run.json and records.jsonl")
    _add_search_arguments(extract)
    _add_extract_run_arguments(extract)
    extract.set_defaults(handler=_run_extract)


def _add_search_arguments(extract: argparse.ArgumentParser) -> None:
    """``extract``'s path methods and search settings."""
    extract.add_argument("--method", nargs="+", default=["neuron-path"], metavar="NAME",
                         help="path methods (default: neuron-path; 'all' for every one)")
    extract.add_argument("--k", type=int, default=1, help="neurons per layer (default: 1)")
    extract.add_argument("--n-steps", "--steps", dest="n_steps", type=int, default=None,
                         help="integration steps (default: the method's)")
    extract.add_argument("--approximation", default=None,
                         help="riemann_left|riemann_right|riemann_middle|riemann_trapezoid|gausslegendre")
    extract.add_argument("--mode", choices=("gate", "paper"), default="gate", help="JAS semantics (default: gate)")
    extract.add_argument("--method-option", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                         help="an option of one path method, repeatable (e.g. neuron-path.refine=8; values are "
                              "Python literals, else strings); the method checks it, and an error names what it "
                              "takes. Part of the run's identity")
    extract.add_argument("--refine", default=None, metavar="C",
                         help="neuron-path: candidates re-scored exactly per layer, a number >= --k or 'all' "
                              "(default: 6 in gate mode, or --k when larger; 0 in paper mode); the same as "
                              "--method-option neuron-path.refine=C")
    extract.add_argument("--beam", default=None, metavar="B",
                         help="neuron-path: keep the B best partial paths per image (default: 1, the greedy); the "
                              "same as --method-option neuron-path.beam=B")
    extract.add_argument("--target", choices=("label", "pred"), default="label",
                         help="explain the true label or the prediction (default: label)")
    extract.add_argument("--units", default="neurons", choices=("neurons", "heads", "mixed"),
                         help="what the paths hold: FFN neurons (default), attention heads, or per block its heads "
                              "and then its FFN neurons (each a layer of the path)")
    extract.add_argument("--dtype", default="fp32", metavar="fp32|bf16|fp16",
                         help="precision of the search and the scores' forward passes (autocast; sums stay fp32). "
                              "Default: fp32")
    extract.add_argument("--ablation", default="zero", choices=("zero", "mean"),
                         help="what a removed unit becomes, in the search, the scores and the evaluation: zero "
                              "(default), or mean: its mean activation at each token over --ablation-images images "
                              "of --data. Part of the run's identity")
    extract.add_argument("--ablation-images", type=int, default=None, metavar="N",
                         help="--ablation mean: reference images drawn from --data (default: 64)")
    extract.add_argument("--ablation-seed", type=int, default=None, metavar="SEED",
                         help="--ablation mean: seed of the draw of the reference images (default: 0)")


def _add_extract_run_arguments(extract: argparse.ArgumentParser) -> None:
    """How ``extract`` runs: batches, decoding, device, resume."""
    extract.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    extract.add_argument("--workers", type=int, default=None, metavar="N",
                         help="processes decoding images (default: CPU cores - 1, up to 8, on CUDA; 0 on the CPU)")
    extract.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    extract.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by id)")
    extract.add_argument("--restart", action="store_true", help="delete the folder's records and start over")
    extract.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    extract.add_argument("--threads", type=int, default=None, help=THREADS_HELP)


def _add_merge(commands) -> None:
    merge = commands.add_parser("merge", help="merge per-rank record files of a run folder into records.jsonl",
                                description="Merge records.rank*.jsonl into records.jsonl (one record per image and method).")
    merge.add_argument("run", type=Path, help="run folder")
    merge.add_argument("--quiet", action="store_true")
    merge.set_defaults(handler=_run_merge)


def _stage_parser(commands, name: str, help_text: str, handler) -> argparse.ArgumentParser:
    """The parser of a stage on a run folder: ``--run`` and ``--quiet``."""
    sub = commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
    sub.add_argument("--run", type=Path, required=True, help="run folder written by extract")
    sub.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    sub.set_defaults(handler=handler)
    return sub


def _add_evaluate(commands) -> None:
    sub = _stage_parser(commands, "evaluate", "manipulation, JAS comparison and pruning study of a run's paths "
                                              "(needs its model)", _run_evaluate)
    sub.add_argument("--batch-size", type=int, default=64)
    sub.add_argument("--device", default=None)
    sub.add_argument("--factor", type=float, default=2.0, help="enhance factor (default: 2)")
    sub.add_argument("--no-pruning", action="store_true", help="skip the pruning study")
    sub.add_argument("--max-images", type=int, default=5000,
                     help="images evaluated, an even seeded draw over the classes (default: 5000, held in "
                          "memory while it runs; 0: every image with a record of every method)")
    sub.add_argument("--faithfulness-classes", type=int, default=10,
                     help="classes (a seeded draw) whose faithfulness-sparsity curves are computed "
                          "(default: 10; 0 skips them)")
    sub.add_argument("--jas-modes", nargs="+", default=["gate", "paper"], choices=("gate", "paper"),
                     help="JAS semantics to compare (default: gate paper)")
    sub.add_argument("--n-steps", "--jas-steps", dest="n_steps", type=int, default=None,
                     help="integration steps of the JAS comparison and of the pruning study's path search "
                          "(default: each mode's)")
    sub.add_argument("--threads", type=int, default=None, help=THREADS_HELP)


def _add_analyze(commands) -> None:
    sub = _stage_parser(commands, "analyze", "path sharing, class similarity, consensus paths and graph of a "
                                             "run's records", _run_analyze)
    sub.add_argument("--method", default=None, help="method to analyze (default: neuron-path if present)")
    sub.add_argument("--permutations", type=int, default=1000)
    sub.add_argument("--causal-images", type=int, default=200, metavar="N",
                     help="images (an even seeded draw over the classes) whose path edges are measured causally: "
                          "one forward per path unit with a later unit, plus the noise floor (default: 200; 0: none)")
    sub.add_argument("--no-pixels", action="store_true",
                     help="skip the pixel figure (one image's pixel attribution; the model is still loaded to "
                          "check the records' units)")
    sub.add_argument("--device", default=None)


def _add_circuits(commands) -> None:
    sub = _stage_parser(commands, "circuits", "learned class circuits of a run's classes against attribution "
                                              "patching, path use and random rankings (needs its model)",
                        _run_circuits)
    sub.add_argument("--classes", type=int, default=10,
                     help="classes studied, a seeded draw of those with 2 recorded images or more (default: 10; "
                          "0: every one)")
    sub.add_argument("--units", choices=("mixed", "neurons", "heads"), default="mixed",
                     help="what a circuit is made of (default: mixed, every attention head and FFN neuron)")
    sub.add_argument("--ablation", choices=("mean", "zero"), default="mean",
                     help="what units outside a circuit become at every token: their mean over the training "
                          "images of every studied class, or 0 (default: mean)")
    sub.add_argument("--strengths", type=float, nargs="+", default=None,
                     help="sparsity strengths, one circuit each (default: 0.25 0.5 1 2 4)")
    sub.add_argument("--steps", type=int, default=200, help="training steps (default: 200)")
    sub.add_argument("--lr", type=float, default=0.1, help="Adam's learning rate on the gate logits (default: 0.1)")
    sub.add_argument("--batch-size", type=int, default=16, help="images per step (default: 16)")
    sub.add_argument("--train-fraction", type=float, default=0.5,
                     help="share of each class's images that train; the rest are held out (default: 0.5)")
    sub.add_argument("--max-per-class", type=int, default=64,
                     help="images per class at most, a seeded draw (default: 64; 0: all)")
    sub.add_argument("--edge-units", type=int, default=2,
                     help="per layer, the circuit's strongest units whose causal edges are measured (default: 2; "
                          "0: none)")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--device", default=None)
    sub.add_argument("--threads", type=int, default=None, help=THREADS_HELP)


def _add_report(commands) -> None:
    sub = _stage_parser(commands, "report", "HTML page and Markdown summary of a run's evaluation and analysis",
                        _run_report)
    sub.add_argument("--max-images", type=int, default=2000,
                     help="images whose paths and thumbnails the page embeds (default: 2000, drawn evenly "
                          "from the classes)")
    sub.add_argument("--heatmaps", type=int, default=8,
                     help="neurons whose pixel attribution the page shows (default: 8; 0 skips them; the "
                          "model is still loaded, where it can be, to check the records' units)")
    sub.add_argument("--graph-nodes", type=int, default=250_000,
                     help="class-graph nodes of all methods together (default: 250000); the searched paths' "
                          "graphs always, the other methods' while they fit")
    sub.add_argument("--device", default=None)


def _add_compare(commands) -> None:
    compare = commands.add_parser(
        "compare", help="how far two runs' paths of the same images agree (neurons, whole paths, JAS)",
        description="Pair the records of two run folders by method and image: the share of path units and whole "
                    "paths in common, the JAS difference image by image (95% bootstrap interval, Wilcoxon "
                    "signed-rank p), and per layer the share of units in common. Reads records only.")
    compare.add_argument("--run", type=Path, required=True, help="run folder A")
    compare.add_argument("--against", type=Path, required=True, help="run folder B (same images, same model shape)")
    compare.add_argument("--method", nargs="+", default=None, help="methods to compare (default: all both hold)")
    compare.add_argument("--out", type=Path, default=None, help="also write the tables as FILE.csv and "
                                                                "FILE_layers.csv")
    compare.add_argument("--quiet", action="store_true")
    compare.set_defaults(handler=_run_compare)


def _positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise _UsageError(f"{name} must be a positive number; got {value}")


def _set_threads(threads: Optional[int]) -> None:
    """``torch.set_num_threads(threads)`` for this process (``None``: leave torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise _UsageError(f"--threads must be a positive number; got {threads}")
    import torch

    torch.set_num_threads(threads)


def _run_extract(args: argparse.Namespace) -> int:
    from captum_paths.pipeline import Run
    from captum_paths.search.registry import path_methods

    for name in ("--k", "--n-steps", "--batch-size", "--limit", "--num-classes"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.workers is not None and args.workers < 0:
        raise _UsageError(f"--workers must be 0 (decode in this process) or a positive number; got {args.workers}")
    if args.random_weights is not None and args.random_weights < 0:
        raise _UsageError(f"--random-weights must be a non-negative seed; got {args.random_weights}")
    if args.ablation == "zero":
        given = [flag for flag, value in (("--ablation-images", args.ablation_images),
                                          ("--ablation-seed", args.ablation_seed)) if value is not None]
        if given:
            raise _UsageError(f"{' and '.join(given)} apply to --ablation mean (its reference images); got "
                              "--ablation zero")
    _positive("--ablation-images", args.ablation_images)
    if args.ablation_seed is not None and args.ablation_seed < 0:
        raise _UsageError(f"--ablation-seed must be a non-negative seed; got {args.ablation_seed}")
    if args.ablation == "mean" and args.mode == "paper":
        raise _UsageError("--ablation mean needs --mode gate: the paper score scales activations towards 0")
    methods = list(path_methods()) if args.method == ["all"] else args.method
    settings = _extract_settings(args, methods)
    _set_threads(args.threads)
    summary = Run(args.out, device=args.device).extract(
        settings=settings, batch_size=args.batch_size, limit=args.limit, restart=args.restart,
        progress=not args.quiet, workers=args.workers,
    )
    if summary["rank"] == 0:
        print(f"records: {args.out / 'records.jsonl'} ({summary['records']} records, {summary['new_records']} new, "
              f"{summary['images']} images, {summary['unreadable']} unreadable, {summary['seconds']:.1f} s)")
    return 0


def _extract_settings(args: argparse.Namespace, methods: List[str]):
    """The run's :class:`~captum_paths.pipeline.settings.RunSettings`, built once from the
    arguments; a method option's error names the flag that gave it."""
    from captum_paths.pipeline.settings import RunSettings
    from captum_paths.search.base import MethodOptionError

    options, flags = _method_options(args)
    try:
        return RunSettings.create(
            model=args.model, data=args.data, methods=methods, checkpoint=args.checkpoint, pretrained=args.pretrained,
            num_classes=args.num_classes, label_map=args.label_map, random_weights=args.random_weights,
            model_args=_model_args(args.model_arg), k=args.k, n_steps=args.n_steps, approximation=args.approximation,
            mode=args.mode, target=args.target, method_options=options, dtype=args.dtype, units=args.units,
            ablation=args.ablation, ablation_images=args.ablation_images, ablation_seed=args.ablation_seed,
        )
    except MethodOptionError as err:
        flag = flags.get((err.method, err.option)) or next(
            (given for (method, _), given in flags.items() if method == err.method), None)
        if flag is None:
            raise
        raise _UsageError(f"{flag}: {err}") from None


def _method_options(args: argparse.Namespace) -> Tuple[Dict[str, Dict[str, Any]], Dict[Tuple[str, str], str]]:
    """``({method: {option: value}}, {(method, option): the flag that gave it})`` of
    ``--method-option METHOD.OPTION=VALUE`` and its aliases ``--refine`` and ``--beam``
    (neuron-path's); values are Python literals, else strings."""
    given = [(f"--{option} {value}", "neuron-path", option, value)
             for option, value in (("refine", args.refine), ("beam", args.beam)) if value is not None]
    for text in args.method_option:
        key, sep, value = text.partition("=")
        method, dot, option = key.strip().rpartition(".")
        if not sep or not dot or not method or not option.isidentifier():
            raise _UsageError(f"--method-option must be METHOD.OPTION=VALUE (e.g. neuron-path.refine=8); got {text!r}")
        given.append((f"--method-option {text}", method, option, value))
    options: Dict[str, Dict[str, Any]] = {}
    flags: Dict[Tuple[str, str], str] = {}
    for flag, method, option, value in given:
        if (method, option) in flags:
            raise _UsageError(f"{flags[method, option]} and {flag} both set {method} option {option}; give it once")
        options.setdefault(method, {})[option] = _literal(value)
        flags[method, option] = flag
    return options, flags


def _model_args(pairs: List[str]) -> dict:
    """``{key: value}`` from ``KEY=VALUE`` strings; values are Python literals (``112``, ``(1, 2)``,
    ``True``) or else strings."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise _UsageError(f"--model-arg must be KEY=VALUE with KEY a Python name; got {pair!r}")
        parsed[key.strip()] = _literal(value)
    return parsed


def _literal(text: str) -> Any:
    """A command-line value: a Python literal (``8``, ``'all'``, ``(1, 2)``, ``True``), else the string."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _run_merge(args: argparse.Namespace) -> int:
    from captum_paths.pipeline import Run

    if not args.run.is_dir():
        raise _UsageError(f"run folder {str(args.run)!r} does not exist")
    records = Run(args.run).merge()
    print(f"records: {args.run / 'records.jsonl'} ({len(records)} records)")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from captum_paths.pipeline import Run

    _positive("--batch-size", args.batch_size)
    _positive("--n-steps", args.n_steps)
    if args.max_images < 0:
        raise _UsageError(f"--max-images must be 0 (every image) or a positive number; got {args.max_images}")
    if args.faithfulness_classes < 0:
        raise _UsageError(f"--faithfulness-classes must be 0 (skip) or a positive number; got {args.faithfulness_classes}")
    _set_threads(args.threads)
    summary = Run(args.run, device=args.device).evaluate(
        batch_size=args.batch_size, factor=args.factor, jas_modes=args.jas_modes, n_steps=args.n_steps,
        pruning=not args.no_pruning, faithfulness=args.faithfulness_classes != 0,
        faithfulness_classes=args.faithfulness_classes or None, max_images=args.max_images or None)
    print(f"evaluation: {summary}")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from captum_paths.analysis import path_agreement
    from captum_paths.pipeline import Run
    from captum_paths.pipeline.report import markdown
    from captum_paths.pipeline.run import check_same_images
    from captum_paths.records import write_text_atomic

    a, b = Run(args.run), Run(args.against)
    records_a, records_b = a.records(), b.records()
    check_same_images(a, b, sorted({str(r["image_id"]) for r in records_a} & {str(r["image_id"]) for r in records_b}))
    tables = path_agreement(records_a, records_b, methods=args.method)
    print(f"A: {args.run}\nB: {args.against}\n\n{markdown(tables['summary'])}\n\n"
          f"Per layer, share of units in common:\n\n"
          f"{markdown(tables['layers'].pivot(index='layer', columns='method', values='same_units').reset_index())}")
    if args.out is not None:
        write_text_atomic(args.out.with_suffix(".csv"), tables["summary"].to_csv(index=False))
        write_text_atomic(args.out.with_name(args.out.stem + "_layers.csv"), tables["layers"].to_csv(index=False))
    return 0


def _run_analyze(args: argparse.Namespace) -> int:
    from captum_paths.pipeline import Run

    if args.causal_images < 0 or args.causal_images == 1:
        raise _UsageError(f"--causal-images must be 0 (none) or at least 2 (the effects are scaled by their spread "
                          f"over the images); got {args.causal_images}")
    summary = Run(args.run, device=args.device).analyze(method=args.method, permutations=args.permutations,
                                                        pixels=not args.no_pixels, causal_images=args.causal_images)
    print(f"analysis: {summary}")
    return 0


def _run_circuits(args: argparse.Namespace) -> int:
    from captum_paths.pipeline import Run

    for name, value in (("--classes", args.classes), ("--max-per-class", args.max_per_class),
                        ("--edge-units", args.edge_units)):
        if value < 0:
            raise _UsageError(f"{name} must be 0 or a positive number; got {value}")
    _positive("--steps", args.steps)
    _positive("--batch-size", args.batch_size)
    if not 0 < args.train_fraction < 1:
        raise _UsageError(f"--train-fraction must be between 0 and 1; got {args.train_fraction}")
    if args.lr <= 0:
        raise _UsageError(f"--lr must be positive; got {args.lr}")
    if args.strengths is not None and any(s < 0 for s in args.strengths):
        raise _UsageError(f"--strengths must be non-negative; got {args.strengths}")
    if not args.run.is_dir():
        raise _UsageError(f"run folder {str(args.run)!r} does not exist")
    _set_threads(args.threads)
    folder = Run(args.run, device=args.device).circuits(
        classes=args.classes or None, units=args.units, ablation=args.ablation, strengths=args.strengths,
        steps=args.steps, lr=args.lr, batch_size=args.batch_size, train_fraction=args.train_fraction,
        max_per_class=args.max_per_class or None, edge_units=args.edge_units, seed=args.seed,
        progress=not args.quiet)
    print(f"circuits: {folder}")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from captum_paths.pipeline import Run

    from captum_paths.explorer import ExplorerLimits

    limits = ExplorerLimits(max_images=args.max_images, heatmap_neurons=args.heatmaps, graph_nodes=args.graph_nodes)
    html, markdown = Run(args.run, device=args.device).report(limits=limits, heatmaps=args.heatmaps > 0)
    print(f"report: {html}\nsummary: {markdown}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from captum_paths.pipeline.demo import run_demo

    if args.limit is not None and args.limit < 1:
        raise _UsageError(f"--limit must be a positive number of images; got {args.limit}")
    if args.per_class is not None and args.per_class < 0:
        raise _UsageError(f"--per-class must be 0 (all) or a positive number; got {args.per_class}")
    _positive("--n-steps", args.n_steps)
    if args.threads is not None and args.threads < 0:
        raise _UsageError(f"--threads must be 0 (torch's default) or a positive number; got {args.threads}")
    kwargs = {} if args.per_class is None else {"per_class": args.per_class}
    if args.threads is not None:
        kwargs["threads"] = args.threads
    report = run_demo(args.out, limit=args.limit, progress=not args.quiet, n_steps=args.n_steps,
                      restart=args.restart, **kwargs)
    print(f"report: {report}")
    print(f"html report: {report.with_name('report.html')}")
    return 0


class _UsageError(Exception):
    """A user mistake: reported as one line, exit status 2."""


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from captum_paths.model.loading import ModelLoadError

    try:
        return args.handler(args)
    except (_UsageError, ValueError, TypeError, FileNotFoundError, NotADirectoryError, ModelLoadError,
            ImportError) as err:
        print(f"captum-paths {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"captum-paths {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as err:
        print(f"captum-paths {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        import torch

        if not isinstance(err, torch.cuda.OutOfMemoryError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"captum-paths {args.command}: error: out of GPU memory ({first}); use a smaller --batch-size, "
              "--dtype bf16, or a GPU with more free memory", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
