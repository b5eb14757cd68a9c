# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 5. DNIS: searching embedding sizes by gradient descent
#
# **What you will learn.** How DNIS (Cheng, Shen and Huang, arXiv 2006.04466) turns the discrete choice of
# a width per row into a continuous one: a *soft selection layer* $\alpha$ that weighs every dimension of
# every frequency block; how $\alpha$ is learned on validation data by *bi-level optimisation*,
# alternating with the embedding weights; why its gradient is normalised per block; how a learned
# $\alpha$ becomes integer widths that meet a memory budget *exactly*; and how the result compares with
# the equal, random and frequency-based widths of Chapter 4 at the same budget.
#
# **What you need.** Chapter 4 (masked and compact tables, budgets as densities, the ES / MR / MDE
# baselines). MovieLens-100K in the cache. About half a minute at the default (CI) parameters with MF; the
# full run (LightGCN, 20 warm-start and 20 search epochs, retraining to convergence) takes a few minutes
# on a 2-core CPU, and `benchmarks/dnis.py` repeats it over seeds and budgets against the baselines.

# %% tags=["parameters"]
# Parameters (papermill): CI defaults; the full run is noted on each line.
dataset = "ml-100k"  # full run: "ml-100k"
backbone = "mf"  # full run: "lightgcn"
d_max = 64  # full run: 64
blocks = 10  # full run: 10 (ten frequency blocks of 10 %, as the official scripts)
warm_epochs = 3  # full run: 20 (warm start with alpha = 1, the official scripts' value)
search_epochs = 3  # full run: 20 (alternating embedding / alpha epochs)
alpha_lr = 0.01  # full run: 0.01 (the paper and the official run scripts)
l1 = 1e-5  # full run: 1e-5 (lambda of the L1 term on alpha)
sparsity = 0.9  # full run: 0.9 (benchmarks/dnis.py: 0.8, 0.9 and 0.95)
retrain_epochs = (
    5  # full run: 100 (retraining and the baselines, early stopping with patience 5)
)
seed = 0
out_dir = "results/ch05"

# %%
# A bad value stops the chapter here, in one line, before any work (see the Preface).
from recsize.params import check_parameters

check_parameters(
    globals(),
    dataset="dataset",
    backbone="top-k backbone",
    d_max="positive int",
    blocks="positive int",
    warm_epochs="non-negative int",
    search_epochs="non-negative int",
    alpha_lr="positive number",
    l1="non-negative number",
    sparsity="sparsity",
    retrain_epochs="positive int",
    seed="non-negative int",
    out_dir="path",
)

# %%
import inspect
import json
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import NullFormatter

from recsize import budget
from recsize.backbones import build_backbone
from recsize.data import prepare
from recsize.embedding import masked_factory
from recsize.search import baseline_sizes, dnis, role_counts, run_baseline
from recsize.train import default_config

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
density = round(1 - sparsity, 6)

# %% [markdown]
# ## 5.1 From a discrete choice to a continuous one
#
# Chapter 4 gave every row $n$ a width $d_n$: its lookup is $E_n \odot m_n$ with the 0/1 prefix mask
# $m_{n,j} = [j < d_n]$. Choosing $d_n$ for every row is a combinatorial search over $d_{max}^{N}$
# possibilities. DNIS *relaxes* the mask into continuous weights in $[0, 1]$ and learns them by gradient
# descent. To keep their number small it ties them within *frequency blocks*: the rows of a table are
# ranked by training frequency and cut into $K$ blocks (10 blocks of 10 % by default), and block $k$ gets
# one row $\alpha_k \in [0, 1]^{d_{max}}$. The lookup of row $n$ in block $k(n)$ becomes
#
# $$\tilde e_n = E_n \odot \alpha_{k(n)}.$$
#
# A weight $\alpha_{k,j}$ near 0 says "dimension $j$ is not worth its memory for the rows of block $k$".
# Learning $\alpha$ on the *training* loss would only make it large (more capacity always fits the
# training data better), so DNIS learns it on the *validation* loss, with the embeddings $\Theta$ trained
# on the training loss: a bi-level problem,
#
# $$\min_{\alpha \in [0,1]^{K \times d_{max}}} \; \mathcal L_{val}\big(\Theta^*(\alpha), \alpha\big)
#   + \lambda \lVert\alpha\rVert_1
#   \quad\text{s.t.}\quad \Theta^*(\alpha) = \arg\min_\Theta \mathcal L_{train}(\Theta, \alpha),$$
#
# the same structure as differentiable architecture search (DARTS), with $\lambda = 10^{-5}$.
#
# Here are the frequency blocks of MovieLens-100K (block 0 holds the most frequent rows):

# %%
# NBVAL_CHECK_OUTPUT
split = prepare(dataset, "random-811", seed=seed, verbose=True)
counts = role_counts(split)
for role in ("user", "item"):
    row_block = dnis.frequency_blocks(counts[role], blocks)
    print(f"{role}s: {len(row_block)} rows in {blocks} blocks")
    print(f"  {'block':>5s} {'rows':>5s} {'training interactions (min - max)':>34s}")
    for k in range(blocks):
        c = counts[role][row_block == k]
        print(f"  {k:5d} {len(c):5d} {c.min():>20d} - {c.max():<11d}")

# %% [markdown]
# The item blocks span three orders of magnitude: block 0 holds items with hundreds of training
# interactions, the last blocks items seen once or twice. The paper re-indexes the ids so that the blocks
# are contiguous; recsize keeps the ids and stores each row's block, which is the same thing.
#
# ## 5.2 The soft selection layer
#
# $\alpha$ is a `(blocks, d_max)` parameter per table, initialised to 1 (every dimension fully on) and
# clamped to $[0, 1]$ after every step. It reaches the lookups through the soft-weight hook of the masked
# table of Chapter 4, `MaskedEmbedding.set_soft_weights(alpha, row_block)`, so no backbone changes: MF,
# NeuMF (four tables, four $\alpha$), LightGCN, FM and DeepFM (one table of feature values) all work as
# they are. With $\alpha = 1$ a lookup is the plain row:

# %%
# NBVAL_CHECK_OUTPUT
model = build_backbone("mf", split, d_max, embedding=masked_factory(None, d_max))
alphas = dnis.attach_soft_selection(model, counts, blocks)
for role, alpha in alphas.items():
    print(
        f"{role}: alpha {tuple(alpha.shape)}, all ones: {bool((alpha == 1).all())}, "
        f"hooked into the table: {model.embedding_tables()[role].soft_weights is alpha}"
    )
ids = torch.arange(5)
print(
    "alpha = 1 leaves the rows unchanged:",
    torch.equal(model.item(ids), model.item.weight[ids]),
)
with torch.no_grad():
    alphas["item"][:, d_max // 2 :] = (
        0.0  # switch off the second half of every item's dimensions
    )
print("second half switched off:", bool((model.item(ids)[:, d_max // 2 :] == 0).all()))

# %% [markdown]
# ## 5.3 Alternating updates
#
# Solving the inner problem to convergence for every step of $\alpha$ is out of the question. DNIS
# alternates, batch by batch, after a *warm start* that trains every weight with $\alpha$ fixed at 1:
#
# 1. **embedding step**: one Adam step on the embedding tables (and, for FM / DeepFM, the per-feature
#    first-order weights) on a training batch; every other weight (MLPs, the global bias) stays frozen;
# 2. **alpha step**: the gradient $g$ of $\mathcal L_{val} + \lambda\lVert\alpha\rVert_1$ on a
#    validation batch, normalised per block, $g_k \leftarrow g_k / \overline{|g_k|}$, one SGD step
#    $\alpha \leftarrow \alpha - \eta_\alpha g$ with $\eta_\alpha = 0.01$, then $\alpha \leftarrow
#    \mathrm{clip}(\alpha, 0, 1)$.
#
# The normalisation matters because of the long tail: the rows of block 0 appear in most batches and
# receive most of the gradient, the rows of the last block almost none. Without it, $\alpha$ would move
# only where the data is frequent. For top-k backbones a validation batch is a set of BPR triples (user,
# validation positive, negative), the negatives avoiding the user's training *and* validation items; for
# CTR backbones it is a batch of validation samples. The validation loss is the data term alone (no L2).
#
# The default is *first-order*: $g$ is taken at the current weights. `second_order=True` uses the
# DARTS-style one-step lookahead $w' = w - \xi \nabla_w \mathcal L_{train}(w, \alpha)$ and
#
# $$\nabla_\alpha \mathcal L_{val}(w', \alpha) - \xi\, \nabla^2_{\alpha, w} \mathcal L_{train}(w, \alpha)\,
#   \nabla_{w'} \mathcal L_{val}(w', \alpha),$$
#
# with the mixed second derivative computed exactly by double back-propagation (about three times the
# cost of a first-order step). The alpha step in full:

# %%
print(inspect.getsource(dnis.alpha_step))

# %% [markdown]
# ## 5.4 The search on MovieLens-100K

# %%
config = dnis.DNISConfig(
    d_max=d_max,
    blocks=blocks,
    warm_epochs=warm_epochs,
    search_epochs=search_epochs,
    alpha_lr=alpha_lr,
    l1=l1,
    retrain_epochs=retrain_epochs,
    patience=5,
    seed=seed,
    progress=False,
)
searched = dnis.search(backbone, split, config)
if searched.warm:
    print(
        f"warm start: {searched.warm['epochs']} epochs, valid NDCG@20 "
        f"{searched.warm['valid']['ndcg@20']:.4f}"
    )
for h in searched.history:
    print(
        f"search epoch {h['epoch']}: train loss {h['train_loss']:.4f}, valid loss "
        f"{h['valid_loss']:.4f}, "
        f"valid NDCG@20 {h['ndcg@20']:.4f}"
    )
print(
    f"kept the state of search epoch {searched.best_epoch}; search took "
    f"{searched.seconds['total']:.1f} s "
    f"(warm start {searched.seconds['warm']:.1f} s)"
)

# %% [markdown]
# What did $\alpha$ learn? One heatmap per table: rows are the frequency blocks (most frequent on top),
# columns the dimensions, sorted within each block from the largest weight to the smallest (the order a
# prefix-width table would keep them in).

# %%
fig, axes = plt.subplots(
    1, len(searched.alphas), figsize=(5.2 * len(searched.alphas), 3.4), squeeze=False
)
for ax, (role, alpha) in zip(axes[0], searched.alphas.items()):
    image = ax.imshow(
        -np.sort(-alpha, axis=1), aspect="auto", cmap="viridis", vmin=0, vmax=1
    )
    ax.set_title(f"alpha of the {role} table")
    ax.set_xlabel("dimension (sorted within each block)")
    ax.set_ylabel("frequency block (0 = most frequent)")
fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
fig.savefig(out / "alpha_heatmap.png", dpi=120, bbox_inches="tight")
plt.show()
for role, alpha in searched.alphas.items():
    print(
        f"{role:5s} mean alpha per block: {np.array2string(alpha.mean(1), precision=3)}"
    )

# %% [markdown]
# ## 5.5 From alpha to widths that meet the budget exactly
#
# The paper derives the final embeddings by magnitude: an entry $(n, j)$ is worth keeping when the
# $\alpha$-scaled weight $|\alpha_{k(n),j} E_{n,j}|$ is large, and prunes the others (unstructured
# pruning; the official code's pruning notebooks threshold the whole table). recsize's core keeps a
# *prefix* of every row, and the retrained model starts from scratch, so which dimensions a row kept
# carries no information into it, only how many: a row's width is its number of kept entries, and no
# column needs to be reordered. That is the default, `granularity="row"`. The alternative
# `granularity="block"` averages the magnitudes per (block, dimension), which gives one width per frequency
# block, $\alpha$'s own granularity.
#
# A threshold $t$ keeps the scores above it. It is binary-searched until the kept fraction
# $\sum_n d_n / (N d_{max})$ is within $10^{-3}$ of the target density; then the few entries nearest the
# threshold are added or dropped until every table keeps *exactly* `target_parameters(density, N, d_max)`
# entries, the same count the baselines of Chapter 4 keep. Every row keeps at least one dimension. On a
# fixed matrix of scores:

# %%
# NBVAL_CHECK_OUTPUT
scores = (
    np.abs(np.random.default_rng(0).standard_normal((1000, 64)))
    * np.linspace(2.0, 0.2, 1000)[:, None]
)
for d in (0.2, 0.1, 0.05):
    t, kept = dnis.threshold_for_density(scores, d, min_size=1, tolerance=1e-3)
    sizes, info = dnis.derive_sizes(scores, d, min_size=1)
    print(
        f"density {d:4.2f}: threshold {t:.4f} keeps {kept:.5f} (|error| "
        f"{abs(kept - d):.5f} <= 0.001); "
        f"after rounding {sizes.sum():,} = target "
        f"{budget.target_parameters(d, 1000, 64):,} "
        f"({info['adjusted']} entries moved); widths {sizes.min()}..{sizes.max()}"
    )

# %% [markdown]
# On the searched model:

# %%
sizes, derivation = dnis.budget_sizes(searched, density)  # granularity "row"
for role, info in derivation.items():
    print(
        f"{role:5s}: threshold {info['threshold']:.4g} keeps "
        f"{info['kept_at_threshold']:.5f}, "
        f"{info['adjusted']} entries moved to reach {info['target']:,} = density "
        f"{info['density']:.4f}"
    )
block_sizes, _ = dnis.budget_sizes(searched, density, granularity="block")

# %% [markdown]
# ## 5.6 Widths against popularity
#
# MDE (Chapter 4) *imposes* wider rows for frequent entities. DNIS is free to learn the opposite: the
# widths come from the validation loss and from the magnitudes of the embeddings.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for ax, role in zip(axes, ("user", "item")):
    c = counts[role]
    ax.scatter(
        c + 1,
        sizes[role],
        s=4,
        alpha=0.3,
        color="tab:grey",
        label="DNIS, granularity row (a row)",
    )
    blocks_of = searched.row_blocks[role]
    centre = [np.median(c[blocks_of == k]) + 1 for k in range(blocks)]
    ax.plot(
        centre,
        [block_sizes[role][blocks_of == k].mean() for k in range(blocks)],
        "o-",
        color="tab:blue",
        label="DNIS, granularity block (a block)",
    )
    mde = baseline_sizes("mde", c, d_max, density)
    order = np.argsort(c)
    ax.plot(c[order] + 1, mde[order], color="tab:orange", label="MDE (Chapter 4)")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"training interactions of the {role} + 1")
    ax.set_ylabel("width")
    ax.set_title(f"{role}s, c = {100 * sparsity:.0f} %")
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / "widths_vs_popularity.png", dpi=120)
plt.show()


def spearman(a, b):
    rank = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable")
    return np.corrcoef(rank(a), rank(b))[0, 1]


for role in ("user", "item"):
    mde = baseline_sizes("mde", counts[role], d_max, density)
    print(
        f"{role}s: Spearman correlation of width and frequency: row "
        f"{spearman(counts[role], sizes[role]):+.2f}, "
        f"block {spearman(counts[role], block_sizes[role]):+.2f}, MDE "
        f"{spearman(counts[role], mde):+.2f}"
    )
    norms = searched.model.embedding_tables()[role].weight.detach().norm(dim=1).numpy()
    blocks_of = searched.row_blocks[role]
    per_block = np.array([norms[blocks_of == k].mean() for k in range(blocks)])
    print(
        f"  mean row norm |E_n| per block: "
        f"{np.array2string(per_block, precision=3)}"
    )

# %% [markdown]
# How to read it. MDE's widths grow with popularity by construction. DNIS's need not: its importance is a
# *magnitude*, $|\alpha_{k(n),j} E_{n,j}|$, and the magnitude of an embedding carries more than its
# importance. Under BPR with uniformly drawn negatives every item is drawn as a negative about equally
# often (tens of times per epoch on ml-100k), while a rare item is a positive once or twice: its embedding
# is mostly pushed *away* from the users, and its norm can grow (the row norms per block above show how
# much it did in this run). The magnitude rule then ranks such rows high although $\alpha$ (the heatmap)
# says little about them. The rating and CTR losses of the paper's experiments do not have this bias;
# `benchmarks/dnis.py` measures what it costs on LightGCN and DeepFM.
#
# ## 5.7 At the same budget as the baselines
#
# A fresh model is trained from scratch with the derived widths (masked tables), its tables are converted
# to compact storage, and the test split is evaluated. The baselines keep exactly the same number of
# parameters per table and train with the same settings.

# %%
train_config = default_config(
    backbone, epochs=retrain_epochs, patience=5, seed=seed, progress=False
)
table = []
for granularity in ("row", "block"):
    run = dnis.run_dnis(
        backbone,
        split,
        density,
        replace(config, granularity=granularity),
        searched=searched,
    )
    table.append(
        {
            "method": f"dnis ({granularity})",
            "recall@20": run.run.result.test["recall@20"],
            "ndcg@20": run.run.result.test["ndcg@20"],
            "parameters": run.run.memory["total"]["parameters"],
            "compact_bytes": run.run.memory["total"]["compact"],
            "seconds": run.seconds["retrain"],
        }
    )
for method in ("es", "mr", "mde"):
    base = run_baseline(
        backbone, split, method, density, d_max, train_config, seed=seed
    )
    table.append(
        {
            "method": method,
            "recall@20": base.result.test["recall@20"],
            "ndcg@20": base.result.test["ndcg@20"],
            "parameters": base.memory["total"]["parameters"],
            "compact_bytes": base.memory["total"]["compact"],
            "seconds": base.result.seconds,
        }
    )
dense = budget.dense_bytes(split.n_users + split.n_items, d_max)
print(
    f"{backbone}, c = {100 * sparsity:.0f} % (density {density}), d_max = {d_max}; "
    f"dense tables {dense / 1024:.1f} KiB"
)
print(
    f"{'method':14s}{'Recall@20':>10s}{'NDCG@20':>10s}{'parameters':>12s}"
    f"{'compact KiB':>13s}{'train s':>9s}"
)
for r in table:
    print(
        f"{r['method']:14s}{r['recall@20']:>10.4f}{r['ndcg@20']:>10.4f}"
        f"{r['parameters']:>12,}"
        f"{r['compact_bytes'] / 1024:>13.1f}{r['seconds']:>9.1f}"
    )
print(f"DNIS search: {searched.seconds['total']:.1f} s, once for every budget")
(out / "dnis.json").write_text(
    json.dumps(
        {
            "search": searched.to_dict(),
            "table": table,
            "sizes": {r: s.tolist() for r, s in sizes.items()},
        },
        indent=1,
        default=float,
    )
)

# %% [markdown]
# At CI parameters these numbers say little: the models see a handful of epochs. `benchmarks/dnis.py`
# runs the full settings with LightGCN on ml-100k and with DeepFM on its CTR view, three seeds and three
# budgets; the README's DNIS section reports what it measured, including where DNIS does not win.
#
# ## 5.8 Where recsize follows the paper, and where it had to choose
#
# recsize follows the paper's method: frequency blocks, $\alpha \in [0, 1]^{K \times d_{max}}$ initialised
# to 1 and clamped after every step, a warm start, alternating embedding and $\alpha$ steps with the L1
# term ($\lambda = 10^{-5}$), per-block gradient normalisation and SGD on $\alpha$ with learning rate 0.01
# (the paper and the official run scripts; the code's default is $10^{-3}$), first-order by default with
# the second-order hypergradient as an option, magnitude pruning of the $\alpha$-scaled weights, and
# retraining. Where the official code differs or the paper is silent, the choices are ours:
#
# * the official code, like every published size-search code, keeps a dense table times $\alpha$ and never
#   saves memory; recsize retrains with the derived widths and stores them compactly (Chapter 4);
# * widths are prefix counts, not sets of dimensions (above); one width per block is an option;
# * every table meets the budget exactly (binary search, then rounding), as the baselines do;
# * an epoch runs over every training batch, with validation batches drawn from a cycling stream (the
#   official code zips the two loaders, so its epoch stops at the shorter one);
# * the second-order option unrolls one SGD step of size $\xi$ (DARTS) and normalises the whole
#   hypergradient; the official code unrolls its Adam step and normalises the first-order part only;
# * the search keeps the weights and $\alpha$ of its best validation epoch; no learning-rate decay.
#
# ## Summary
#
# * DNIS relaxes the width of a row into soft weights $\alpha \in [0, 1]$, one per (frequency block,
#   dimension), learned on validation data by alternating with the embeddings: a bi-level problem solved
#   with first-order (or unrolled second-order) hypergradients.
# * Per-block gradient normalisation lets rare blocks move as fast as frequent ones.
# * Widths come from the magnitudes of the $\alpha$-scaled weights: a binary-searched threshold, then an
#   exact rounding, so the comparison with the baselines is at exactly the same parameter count.
# * One search serves every budget; retraining from scratch and compact storage turn the widths into real
#   memory savings.
#
# ## Exercises
#
# 1. Run the chapter with `search_epochs = 20` and `alpha_lr = 0.1`. How far does $\alpha$ move, and do
#    the widths change? How many alpha steps does one epoch of ml-100k give, compared with the paper's
#    datasets (MovieLens-20M, Criteo)?
# 2. Compare `granularity="block"` and `"row"` at c = 95 %. Which one tracks popularity, and which wins on
#    validation?
# 3. Switch the gradient normalisation off (`DNISConfig(grad_norm=False)`). Which blocks stop moving?
# 4. Turn on `second_order=True` and measure the cost of a search epoch. Does $\alpha$ end up different?
