"""Build (and optionally execute) the tutorial notebooks.

    python tutorials/_build_notebooks.py            # write the notebooks, no outputs
    python tutorials/_build_notebooks.py --execute  # write and execute them in place

The notebooks are the source of truth for readers; this script only keeps them
consistent. Edit the cells here, rebuild, and commit the executed notebooks.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import warnings
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", message=".*IProgress not found.*")

import captum_paths.plots  # imported before the magic below, which then makes plots show inline
%matplotlib inline

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

torch.manual_seed(0)
torch.set_num_threads(1)  # the demo model is tiny: one thread is fastest, and avoids oversubscribed CPUs
pd.set_option("display.precision", 4)
plt.rcParams["figure.dpi"] = 80


def show(fig):
    \"\"\"Display a figure returned by a captum_paths plot function once, then free it.\"\"\"
    display(fig)
    plt.close(fig)
"""


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


# --------------------------------------------------------------------------- 01
NB01 = [
    md("""
# 01 · Joint attribution quickstart

A vision transformer's FFN layers hold thousands of *neurons*. Captum's layer
methods attribute one layer at a time, but a neuron in layer 5 depends on the
neurons of layers 0–4. `captum_paths` scores a **set of neurons spread over
several layers jointly**: all of them are scaled together from 0 to 1 while
everything downstream is recomputed. The result is the *Joint Attribution
Score* (JAS) of the set, from *Discovering Influential Neuron Path in Vision
Transformers* (Wang et al., ICLR 2025).

This notebook uses the small digits ViT that ships with the package, so it runs
offline on a CPU in seconds.
"""),
    md("## 1. Setup: the demo model and data"),
    code(SETUP),
    code("""
import sys
from captum_paths import JointNeuronIntegratedGradients, NeuronSites, remove_neurons
from captum_paths.demo import load_demo_data, load_demo_model

print("kernel:", sys.executable)
model = load_demo_model()
images, labels = load_demo_data("test")
with torch.no_grad():
    accuracy = (model(images).argmax(1) == labels).float().mean().item()
print(f"{len(images)} test images of shape {tuple(images.shape[1:])}, accuracy {accuracy:.3f}")

fig, axes = plt.subplots(1, 8, figsize=(9, 1.6))
for ax, img, lab in zip(axes, images, labels):
    ax.imshow(img[0], cmap="gray"); ax.set_title(int(lab)); ax.axis("off")
plt.show()
"""),
    md("""
## 2. Neuron sites

A *site* is one block's FFN hidden activation (after the non-linearity, before
the second linear layer). A *neuron* `(layer, j)` is channel `j` of that site,
read at the selected tokens — the CLS token by default. `NeuronSites` finds the
sites of timm, torchvision and Hugging Face ViTs and is the only place that
hooks the model.
"""),
    code("""
sites = NeuronSites.from_model(model)
print(sites)
with sites.record() as acts:
    with torch.no_grad():
        model(images[:8])
print({layer: tuple(a.shape) for layer, a in acts.items()})  # (batch, tokens, d_ff)
"""),
    code("""
cls_acts = torch.stack([acts[l][0, 0] for l in range(sites.num_layers)])  # image 0: (L, d_ff)
fig, ax = plt.subplots(figsize=(9, 2.4))
im = ax.imshow(cls_acts, aspect="auto", cmap="viridis")
ax.set_xlabel("neuron j"); ax.set_ylabel("layer"); ax.set_title("CLS-token FFN activations of image 0")
fig.colorbar(im, ax=ax)
plt.show()
"""),
    md("""
## 3. The JAS of a hand-picked neuron set

We pick, for the first image, the most active neuron of layers 1, 3 and 5 and
score the set `[(1, j1), (3, j3), (5, j5)]` on eight images. `F` is the
softmax probability of the true class. As Captum's attributions do, `attribute`
returns the per-neuron contributions `phi_n` (integrals), and with
`return_convergence_delta=True` also the convergence delta `sum(phi) - JAS`;
`return_jas=True` adds the JAS of the set between the two.
"""),
    code("""
neurons = [(l, int(cls_acts[l].argmax())) for l in (1, 3, 5)]
print("neuron set:", neurons)

jig = JointNeuronIntegratedGradients(model, sites)
x, y = images[:8], labels[:8]
phi, jas, delta = jig.attribute(x, neurons, target=y, n_steps=16, return_convergence_delta=True, return_jas=True)
table = pd.DataFrame(phi.numpy(), columns=[f"L{l}:{j}" for l, j in neurons])
table["JAS"] = jas.numpy()
table["delta"] = delta.numpy()
table
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 2.6))
table[[c for c in table.columns if c.startswith("L")]].plot.bar(ax=ax, width=0.8)
ax.set_xlabel("image"); ax.set_ylabel("contribution to p(label)")
ax.set_title("Per-neuron contributions of the set (gate semantics)")
plt.show()
"""),
    md("""
## 4. Completeness: JAS = F(x) − F(x with the set removed)

In the default `mode="gate"` the integral is *complete*: the contributions add
up to the change of the output when the whole set is zeroed. So the reported
JAS *is* that removal effect, computed exactly by one forward with the set
zeroed; the contributions are quadratures of the integral and miss it by the
convergence delta. We check both with `remove_neurons`, watch the delta shrink
as `n_steps` grows, and let `tol` pick the steps.
"""),
    code("""
with torch.no_grad():
    p_clean = model(x).softmax(1)[torch.arange(len(y)), y]
    with remove_neurons(sites, neurons):
        p_removed = model(x).softmax(1)[torch.arange(len(y)), y]
pd.DataFrame({"JAS": jas, "F(x) - F(x; removed)": p_clean - p_removed,
              "sum of contributions": phi.sum(1), "delta": delta})
"""),
    code("""
steps = [2, 4, 8, 16, 32]
max_delta = []
for n in steps:
    _, d = jig.attribute(x, neurons, target=y, n_steps=n, return_convergence_delta=True)
    max_delta.append(d.abs().max().item())
fig, ax = plt.subplots(figsize=(5, 2.8))
ax.semilogy(steps, max_delta, "o-")
ax.set_xlabel("n_steps (Gauss-Legendre)"); ax.set_ylabel("max |delta|")
ax.set_title("Convergence delta vs quadrature steps")
plt.show()
"""),
    md("""
`tol` asks for contributions that add up: the steps of each image are doubled
until `|delta| <= tol * |JAS|`.
"""),
    code("""
phi_tol, jas_tol, delta_tol = jig.attribute(x, neurons, target=y, n_steps=2, tol=1e-4,
                                            return_convergence_delta=True, return_jas=True)
print("max |delta| / |JAS| with tol=1e-4:", (delta_tol.abs() / jas_tol.abs()).max().item())
"""),
    md("""
## 5. Gate vs paper semantics

`mode="paper"` reproduces the authors' released scripts: the
sites up to the deepest set layer are *frozen* at their clean values except
the set neurons, the grid is a left Riemann sum with 20 steps, and the score is
a *product of sums* `[Σ_k Σ_n ∂F/∂a_n] · [Σ_n a⁰_n / m]`. Use it to compare with
published numbers; it has cross terms and is **not** complete, so its delta is
not a quadrature error. Use `mode="gate"` (the default) for everything else.
"""),
    code("""
_, jas_paper, delta_paper = jig.attribute(x, neurons, target=y, mode="paper", return_jas=True,
                                          return_convergence_delta=True)
modes = pd.DataFrame({"gate JAS": jas, "paper JAS": jas_paper, "gate delta": delta, "paper delta": delta_paper})
display(modes)
fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(jas, jas_paper)
lim = [min(jas.min(), jas_paper.min()).item(), max(jas.max(), jas_paper.max()).item()]
ax.plot(lim, lim, "k--", lw=0.8)
ax.set_xlabel("gate JAS"); ax.set_ylabel("paper JAS"); ax.set_title("Same set, two semantics")
plt.show()
"""),
    md("""
## 6. Next

The most *active* neurons above are not the most *influential*: their JAS is
a small share of `p(label)`. `02_Neuron_Path_Search` finds the set with the
highest JAS — one neuron per layer — instead of picking it by hand.
"""),
]

# --------------------------------------------------------------------------- 02
NB02 = [
    md("""
# 02 · Neuron path search

The *influential neuron path* of an image is one neuron per layer, chosen
layer by layer: at layer `t`, the neurons already chosen and the whole site
`t` are scaled jointly, and the neuron with the largest joint attribution is
kept (`LayerProgressiveNeuronPath`). This notebook runs the search,
its top-k and refinement options, compares it with every baseline path method,
and manipulates the paths (removal and enhancement).
"""),
    md("## 1. Setup"),
    code(SETUP),
    code("""
from captum_paths import (
    PATH_METHODS, LayerProgressiveNeuronPath, jas_comparison, probability_deviation,
    remove_neurons, enhance_neurons, summarize_deviation,
)
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.plots.evaluation import plot_deviation, plot_jas

model = load_demo_model()
images, labels = load_demo_data("test")
x, y = images[:32], labels[:32]   # a small batch keeps the notebook fast
N_STEPS = 16                      # quadrature steps of every integral (the library default is 4)
"""),
    md("""
## 2. The layer-progressive search

`attribute` returns a `PathResult`: `paths` `(batch, L, k)`, the per-neuron
`contributions` of the whole path, its `jas` (exactly `F(x) - F(x; path
removed)`) and the convergence `delta` of the contributions. By default the
search re-scores 6 candidates of each layer exactly (`refine=6`, next section).
"""),
    code("""
search = LayerProgressiveNeuronPath(model)
result = search.attribute(x, target=y, n_steps=N_STEPS)
print("paths:", tuple(result.paths.shape), "| settings:", result.settings)
pd.DataFrame({
    "label": y.numpy(),
    "path (one neuron per layer)": [p[:, 0].tolist() for p in result.paths],
    "JAS": result.jas.numpy(),
    "delta": result.delta.numpy(),
}).head(8)
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 2.8))
c = result.contributions[:, :, 0]
ax.plot(range(c.shape[1]), c.T, color="tab:blue", alpha=0.4)
ax.plot(range(c.shape[1]), c.mean(0), color="k", lw=2, label="mean")
ax.set_xlabel("layer"); ax.set_ylabel("contribution"); ax.legend()
ax.set_title("Contribution of each layer's path neuron, one line per image")
plt.show()
"""),
    md("""
## 3. Top-k paths and exact refinement

`k=3` keeps the three best neurons per layer; all of them join the scaled
prefix for later layers. The whole-site score is an approximation:
`refine=c` re-scores `c` candidates of each layer *exactly*
(`JAS(prefix ∪ {j}) = F(x) − F(x; prefix ∪ {j} removed)`, forward passes only)
and keeps the best. The candidates come in turn from three rankings: the
whole-site score, the first-order removal effect on top of the removed prefix,
and the activation magnitude (on pretrained ViTs the whole-site score ranks
some of the most influential, very active units last). `refine=0` is the
paper's whole-site search and `refine="all"` scores every candidate exactly
(the exact greedy).
"""),
    code("""
top3 = search.attribute(x, target=y, k=3, n_steps=N_STEPS)
whole = search.attribute(x, target=y, n_steps=N_STEPS, refine=0)
refined = result  # the default, refine=6
print("top-3 path of image 0 (layer x rank):\\n", top3.paths[0].numpy())
summary = pd.DataFrame({
    "k=1, refine=0": whole.jas.numpy(), "k=1, refine=6": refined.jas.numpy(), "k=3": top3.jas.numpy(),
})
print("images whose path refine=6 changed:", int((refined.refined_layers > 0).sum()), "of", len(x),
      "| mean layers changed per image:", refined.refined_layers.float().mean().item())
summary.describe().loc[["mean", "50%", "max"]]
"""),
    md("""
Top-3 paths hold three times as many neurons, so their JAS is larger; compare
paths of the same `k`. The exact greedy re-scores all 256 candidates of every
layer: more forward passes, so we run it on the first 8 images only. Re-scoring 6
candidates already gets (almost) all of its gain. A beam search
(`beam=4`) keeps the 4 best partial paths of each image after every layer and
can go beyond the greedy.
"""),
    code("""
exact = search.attribute(x[:8], target=y[:8], n_steps=N_STEPS, refine="all")
beam = search.attribute(x[:8], target=y[:8], n_steps=N_STEPS, beam=4)
pd.DataFrame({"refine=0": whole.jas[:8], "refine=6": refined.jas[:8], "refine='all'": exact.jas,
              "beam=4": beam.jas, "layers changed by 'all'": exact.refined_layers})
"""),
    md("""
## 4. Every baseline on the same images

The registry `PATH_METHODS` holds the search and the baselines
(activation, knowledge neurons, conductance, influence pattern, random); they
all return a `PathResult` of the same shape, so `jas_comparison` scores every
path the same way.
"""),
    code("""
paths = {name: cls(model).attribute(x, target=y, n_steps=N_STEPS) for name, cls in PATH_METHODS.items()}
paths["neuron-path (refine=0)"] = whole
jas_df = jas_comparison(model, x, y, paths, modes=("gate",), n_steps=N_STEPS)
display(jas_df.groupby("method", sort=False)["jas"].agg(["mean", "median"]).sort_values("mean", ascending=False))
show(plot_jas(jas_df))
"""),
    md("""
On this small model the whole-site approximation picks the same neurons as
per-layer knowledge-neuron IG (96% of them on the demo's test images); exact
refinement is what lifts the JAS above it. Activation, conductance and
influence-pattern paths score lower, and random paths score about zero.

## 5. Removal and enhancement

Zeroing all path neurons (`remove_neurons`) or doubling them
(`enhance_neurons`) should move the true-class probability more for the
searched path than for any baseline. A single edit looks like this:
"""),
    code("""
with torch.no_grad():
    p = model(x).softmax(1)[torch.arange(len(y)), y]
    with remove_neurons(model, result):
        p_removed = model(x).softmax(1)[torch.arange(len(y)), y]
    with enhance_neurons(model, result, factor=2.0):
        p_enhanced = model(x).softmax(1)[torch.arange(len(y)), y]
pd.DataFrame({"p": p, "removed": p_removed, "enhanced x2": p_enhanced}).head()
"""),
    md("`probability_deviation` runs both edits for every method; `p_after / p_before − 1` per image:"),
    code("""
dev = probability_deviation(model, x, y, paths)
display(summarize_deviation(dev)[["method", "operation", "mean_prob_deviation", "accuracy_deviation"]])
show(plot_deviation(dev))
"""),
    md("""
Are these differences more than noise on 32 images? Every method ran on the same
images, so compare them image by image: `paired_comparisons` takes, per image,
the searched path's value minus the method's, and reports the mean with a 95%
bootstrap interval, the share of images where the searched path does better
(here: removes more of the probability), and a Wilcoxon signed-rank test,
Holm-adjusted over the table's rows. `captum-paths evaluate` writes this table
(`comparisons.csv`) for every quantity, with per-method intervals
(`intervals.csv`).
"""),
    code("""
from captum_paths.statistics import paired_comparisons, per_image_values

removal = per_image_values(dev)[["image", "method", "prob_deviation_remove"]]
paired_comparisons(removal, "neuron-path")
"""),
]

# --------------------------------------------------------------------------- 03
NB03 = [
    md("""
# 03 · Class-level path graphs

One path explains one image. Collected over many images, paths show which
neurons a *class* relies on. Here we search the paths of 60 digits (6 per
class), turn them into records (one JSON line per image), and analyse them as a layered
`networkx` graph, per-class frequencies, shared neurons and class similarity,
then explain a path neuron in pixel space.
"""),
    md("## 1. Setup: paths of 60 images as records"),
    code(SETUP),
    code("""
import networkx as nx
from captum_paths import (
    LayerProgressiveNeuronPath, PathGraph, class_similarity, consensus_paths, nearest_classes,
    neuron_frequencies, path_sharing, shared_neurons, typical_paths,
)
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.plots.paths import (
    plot_class_similarity, plot_neuron_frequency_heatmap, plot_neuron_pixels, plot_path_graph,
)

model = load_demo_model()
images, labels = load_demo_data("test")
idx = torch.cat([torch.nonzero(labels == c).flatten()[:6] for c in range(10)])
x, y = images[idx], labels[idx]
result = LayerProgressiveNeuronPath(model).attribute(x, target=y)
with torch.no_grad():
    pred = model(x).argmax(1)
records = result.to_records(image_ids=[f"test/{int(i):04d}" for i in idx], labels=y.tolist(),
                            predictions=pred.tolist(), model_id="demo")
print(len(records), "records; first:", {k: records[0][k] for k in ("image_id", "label", "path", "jas")})
"""),
    md("""
## 2. The path graph

`PathGraph.from_records` builds a layered `networkx.DiGraph` whose nodes are
`(layer, neuron)` and whose edges join consecutive path neurons; counts and
classes are node and edge attributes, so any networkx algorithm applies.
"""),
    code("""
pg = PathGraph.from_records(records)
g = pg.graph
print(f"{g.number_of_nodes()} neurons, {g.number_of_edges()} edges, {pg.num_paths} paths")
print("most travelled route:", nx.dag_longest_path(g, weight="count"))
display(pg.top_nodes(n=5))
show(plot_path_graph(pg))
"""),
    code("""
show(plot_path_graph(pg, cls=7))
"""),
    md("""
## 3. Per-class frequencies and consensus paths

The consensus path of a class is its most frequent neuron in each layer.
"""),
    code("""
freq = neuron_frequencies(records)
display(freq.head())
display(consensus_paths(records).head(10))
show(plot_neuron_frequency_heatmap(records, top=8))
"""),
    md("""
## 4. Shared neurons and class similarity

Neurons used by several classes are general-purpose; the rest are
class-specific. Class similarity is the cosine of the classes' neuron-count
vectors; `path_sharing` asks whether images of one class share path neurons
more than images of different classes (the paper's claim).
"""),
    code("""
display(shared_neurons(records, min_classes=3).head())
sharing = path_sharing(records)
print(f"mean Jaccard of paths: within class {sharing.within:.3f}, between classes {sharing.between:.3f}")
sim = class_similarity(records)
display(nearest_classes(sim, 7, n=3))
show(plot_class_similarity(sim))
"""),
    code("""
display(typical_paths(records, 7, n=3))
"""),
    md("""
## 5. Pixel explanations of path neurons

Which pixels drive a path neuron? `plot_neuron_pixels` runs Captum's
`NeuronIntegratedGradients` on the neuron and shows the per-pixel and
per-patch attributions next to the image.
"""),
    code("""
from captum_paths.demo import DEMO_MEAN, DEMO_STD
i = 0
for layer in (0, 5):
    neuron = records[i]["path"][layer][0]
    fig, pixels, patches = plot_neuron_pixels(model, x[i], layer, neuron, mean=[DEMO_MEAN], std=[DEMO_STD], n_steps=16)
    fig.suptitle(f"image {records[i]['image_id']} (label {records[i]['label']}): neuron ({layer}, {neuron})")
    show(fig)
"""),
    md("""
## 6. Saving the graph

The graph round-trips through GraphML (Gephi, Cytoscape) and node-link JSON.
"""),
    code("""
import tempfile, os
with tempfile.TemporaryDirectory() as tmp:
    path = pg.to_graphml(os.path.join(tmp, "paths.graphml"))
    back = PathGraph.from_graphml(path)
    print(path.name, "->", back.graph.number_of_nodes(), "nodes")
"""),
]

# --------------------------------------------------------------------------- 04
NB04 = [
    md("""
# 04 · Pruning with neuron paths

If a class really relies on its path neurons, a model that keeps only the
class *consensus* path and zeroes the other FFN neurons should still recognise
that class. The pruning study tests this on images that were **not**
used to build the consensus.
"""),
    md("## 1. Setup"),
    code(SETUP),
    code("""
from captum_paths import LayerProgressiveNeuronPath, class_consensus, prune_neurons, pruning_study
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.plots.evaluation import plot_pruning

model = load_demo_model()
images, labels = load_demo_data("test")
idx = torch.cat([torch.nonzero(labels == c).flatten()[:6] for c in range(10)])
x, y = images[idx], labels[idx]
print(len(x), "images, 6 per class")
"""),
    md("""
## 2. Class consensus paths

Top-k paths of some images of a class give the class consensus: the most
frequent neuron per layer and rank (`class_consensus`).
"""),
    code("""
half = torch.arange(len(x)) % 6 < 3          # the first 3 images of each class
top3 = LayerProgressiveNeuronPath(model).attribute(x[half], target=y[half], k=3)
consensus = class_consensus(top3, y[half], k=3)
print("consensus of class", 0, "(layer x rank):\\n", consensus[0].numpy())
"""),
    md("""
## 3. Pruning by hand

`prune_neurons(sites, keep, p, depth)` zeroes, with probability `p`, every
neuron not in `keep` in the first `depth` layers. Here we keep the consensus
of class 0 and zero everything else in all layers on other images of class 0.
"""),
    code("""
others = x[(y == 0) & ~half]                 # images not used for the consensus
with torch.no_grad():
    before = model(others).softmax(1)[:, 0]
    with prune_neurons(model, consensus[0], p=1.0, depth=6) as zeroed:
        after = model(others).softmax(1)[:, 0]
print("zeroed neurons per layer:", {l: int(m.sum()) for l, m in zeroed.items()})
pd.DataFrame({"p(0) unpruned": before, "p(0) keeping only the consensus": after})
"""),
    md("""
## 4. The pruning study

`pruning_study` does this for every class over a grid of `k` (consensus
neurons kept per layer), `p` and `depth` (pruned layers), splitting each
class's images into consensus images and evaluation images that never overlap.
"""),
    code("""
study = pruning_study(model, x, y, ks=(1, 3, 5), ps=(0.25, 0.5, 0.75, 1.0), depths=(3, 6))
display(study.head())
"""),
    code("""
# mean true-class probability over the evaluation images of every class (weighted by images)
weighted = study.assign(prob_x_images=study["mean_prob"] * study["images"])
sums = weighted.groupby(["depth", "p", "k"])[["prob_x_images", "images"]].sum()
mean_prob = (sums["prob_x_images"] / sums["images"]).unstack("k")
unpruned = (study["mean_prob_unpruned"] * study["images"]).sum() / study["images"].sum()
print(f"unpruned model: {unpruned:.3f} (same grid of images for every cell)")
display(mean_prob.rename(columns=lambda k: f"keep k={k}"))
show(plot_pruning(study))
"""),
    md("""
## 5. Reading the result

Read the row `depth = 6, p = 1.0`: every CLS-token FFN neuron of every layer
is zeroed except the `k` consensus neurons per layer, on images that were not
used to find the consensus. The true-class probability stays close to the
unpruned model's, and closer as `k` grows: a handful of path neurons per layer
carries the class. The authors report the same on ViT-B/16 / ImageNet
(top-5 consensus kept: mean true-class probability 0.688 against 0.676
unpruned). Rerun with more images (and other seeds) before reading small
differences between cells.
"""),
]

# --------------------------------------------------------------------------- 05
NB05 = [
    md("""
# 05 · A pretrained ViT on your own images

Everything in tutorials 01–04 works on any timm, torchvision or Hugging Face
ViT. This notebook loads a pretrained timm ViT with `load_model`, reads an
ImageNet-style folder (`root/<class>/<image>`) with `ImageFolderDataset`, and
finds the neuron paths of a few images.

**Offline?** Downloading the weights needs the Hugging Face Hub. The first
cell sets `HF_HUB_OFFLINE=1` unless you set it yourself, so that an offline
machine fails fast instead of retrying; delete that line (or set
`HF_HUB_OFFLINE=0`) to download. When the weights cannot be loaded, the
notebook says so and falls back to the embedded demo model, so it always runs.
"""),
    md("## 1. Setup"),
    code("""
import os
if "HF_HUB_OFFLINE" not in os.environ:
    os.environ["HF_HUB_OFFLINE"] = "1"  # delete these two lines to allow downloading the weights
"""),
    code(SETUP),
    md("""
## 2. An ImageNet-style folder

Point `ROOT` at your own folder. Here we write a few demo digits as PNGs into a
temporary folder (`0/`, `1/`, … one sub-folder per class).
"""),
    code("""
import tempfile
from pathlib import Path
from captum_paths.demo import save_demo_image_folder

ROOT = Path(tempfile.mkdtemp()) / "my_images"
save_demo_image_folder(ROOT, split="test", limit_per_class=1)
print(sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.png"))[:5], "...")
"""),
    md("""
## 3. Load a pretrained ViT (or fall back to the demo model)

`load_model` returns the model in eval mode and the matching preprocessing.
It raises `ModelLoadError` when the weights cannot be downloaded.
"""),
    code("""
from captum_paths import load_model
from captum_paths.model.loading import ModelLoadError

SPEC = "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"
try:
    model, transform = load_model(SPEC, pretrained=True)
    source, n_images, n_steps = SPEC, 2, 4   # a real ViT is heavy on a CPU: keep it tiny
    torch.set_num_threads(os.cpu_count() or 1)
except ModelLoadError as err:
    print(f"Could not load the pretrained weights of {SPEC}:")
    print("   ", err)
    print("Falling back to the embedded demo model (digits ViT), which runs offline.")
    model, transform = load_model("demo")
    source, n_images, n_steps = "demo", 10, 8
print("model:", source, "| parameters:", sum(p.numel() for p in model.parameters()))
"""),
    md("""
## 4. Read the folder with the model's preprocessing

Class indices of the folder (sorted folder names) need not match the model's
classes, so we explain the model's **predicted** class (`target=None`).
"""),
    code("""
from captum_paths.model.data import ImageFolderDataset

dataset = ImageFolderDataset(ROOT, transform=transform, mode="L" if source == "demo" else "RGB")
print(dataset)
batch = torch.stack([dataset[i][0] for i in range(n_images)])
ids = [dataset[i][2] for i in range(n_images)]
print("batch:", tuple(batch.shape))
"""),
    md("## 5. Neuron paths of the images"),
    code("""
from captum_paths import LayerProgressiveNeuronPath, NeuronSites

sites = NeuronSites.from_model(model)
print(sites)
result = LayerProgressiveNeuronPath(model, sites).attribute(batch, target=None, n_steps=n_steps)
pd.DataFrame({"image": ids, "predicted class": result.targets.numpy(),
              "path": [p[:, 0].tolist() for p in result.paths], "JAS": result.jas.numpy()})
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.plot(result.contributions[:, :, 0].T, alpha=0.6)
ax.set_xlabel("layer"); ax.set_ylabel("contribution of the path neuron")
ax.set_title(f"Neuron paths on {source}")
plt.show()
"""),
    md("## 6. A path neuron in pixel space"),
    code("""
from captum_paths.plots.paths import plot_neuron_pixels
layer = sites.num_layers - 1
neuron = int(result.paths[0, layer, 0])
fig, _, _ = plot_neuron_pixels(model, batch[0], layer, neuron, n_steps=8)
show(fig)
"""),
    md("""
## 7. Clean up

Remove the temporary image folder (keep your own, of course).
"""),
    code("""
import shutil
shutil.rmtree(ROOT.parent, ignore_errors=True)
"""),
]

NOTEBOOKS = {
    "01_Joint_Attribution_Quickstart.ipynb": NB01,
    "02_Neuron_Path_Search.ipynb": NB02,
    "03_Class_Level_Path_Graphs.ipynb": NB03,
    "04_Pruning_With_Neuron_Paths.ipynb": NB04,
    "05_Pretrained_ViT_on_Your_Images.ipynb": NB05,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: str, timeout: int = 300) -> None:
    from nbclient import NotebookClient

    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": cwd}},
    ).execute()


def main(argv) -> None:
    run = "--execute" in argv
    names = [a for a in argv if not a.startswith("--")] or list(NOTEBOOKS)
    for name in names:
        nb = build(name)
        if run:
            start = time.time()
            with tempfile.TemporaryDirectory() as tmp:
                execute(nb, tmp)
            print(f"{name}: executed in {time.time() - start:.1f} s")
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main(sys.argv[1:])
