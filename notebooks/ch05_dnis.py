# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
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
# alternating with the embedding weights; why its gradient is normalised per block; the two ways of
# turning a search into a model under a memory budget (the authors' in-place pruning of the trained
# tables, and recsize's earlier prefix widths retrained from scratch); and how they compare with magnitude
# pruning and the equal and frequency-based widths of Chapter 4 at the same *bytes*.
#
# **What you need.** Chapter 4 (masked and compact tables, budgets as densities, the ES / MR / MDE
# baselines, element-wise masks and CSR storage, MagPrune in Section 4.8). MovieLens-100K in the cache.
# About a minute at the default (CI) parameters with MF; the full run (LightGCN, a 20-epoch warm start
# and search, fine-tuning for up to 100 epochs) takes much longer on one CPU thread (the note under the
# title gives a published run's wall time), and `benchmarks/prune.py` repeats it over seeds and budgets,
# to convergence, against MagPrune and ES at equal bytes.

# %% tags=["parameters"]
# Parameters (papermill): CI defaults; the full run is noted on each line.
dataset = "ml-100k"  # full run: "ml-100k"
backbone = "mf"  # full run: "lightgcn"
d_max = 64  # full run: 64
blocks = 10  # full run: 10 (ten frequency blocks of 10 %, as the official scripts)
warm_epochs = 3  # full run: 20 (cap; early stopping, lr decay on plateau)
search_epochs = 3  # full run: 20 (cap of the alternating epochs; early stopping)
alpha_lr = 0.01  # full run: 0.01 (the paper and the official run scripts)
l1 = 1e-5  # full run: 1e-5 (lambda of the L1 term on alpha)
sparsity = 0.9  # full run: 0.9 (benchmarks/dnis.py: 0.8, 0.9 and 0.95)
retrain_epochs = 5  # full run: 100 (fine-tuning, retraining, baselines; patience 10)
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
import re
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from myst_nb import glue  # numbers of this run quoted in the text

from recsize import budget
from recsize.backbones import build_backbone
from recsize.data import prepare
from recsize.embedding import masked_factory
from recsize.plots import log_axis
from recsize.search import baseline_sizes, dnis, role_counts, run_baseline
from recsize.search.prune import (
    prefix_density_for_bytes,
    run_magprune,
    table_shapes,
    train_dense,
)
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
# As in the authors' code, the training and validation loaders are *zipped*: a search epoch is as many
# (training batch, validation batch) pairs as there are validation batches, about an eighth of the
# training batches at 8:1:1 (`alternation="every-batch"` takes an alpha step after every training
# batch). The warm start, the search and the final training all stop early on validation and divide the
# learning rate by 10 on a plateau, stopping once it has fallen to $10^{-6}$ ($10^{-5}$ in the search).
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
    patience=10,
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
glue("warm_epochs_run", searched.warm["epochs"] if searched.warm else 0, display=False)
glue("best_search_epoch", searched.best_epoch, display=False)
glue("search_minutes", searched.seconds["total"] / 60, display=False)
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
        f"{role:5s} mean alpha per block:\n  "
        + np.array2string(alpha.mean(1), precision=3, max_line_width=86)
    )
    glue(f"alpha_mean_{role}", float(alpha.mean()), display=False)
    glue(f"alpha_min_{role}", float(alpha.min()), display=False)
    glue(f"alpha_below_half_{role}", float((alpha < 0.5).mean()), display=False)
    glue(f"alpha_first_block_{role}", float(alpha[0].mean()), display=False)
    glue(f"alpha_last_block_{role}", float(alpha[-1].mean()), display=False)

# %% [markdown]
# In the run shown on this page the mean of $\alpha$ is {glue:text}`alpha_mean_user:.3f` in the user
# table and {glue:text}`alpha_mean_item:.3f` in the item table;
# {glue:text}`alpha_below_half_item:.1%` of the item weights ({glue:text}`alpha_below_half_user:.1%`
# of the user weights) fell below 0.5; the last item block's mean is
# {glue:text}`alpha_last_block_item:.3f` against {glue:text}`alpha_first_block_item:.3f` in block 0,
# and the smallest item weight is {glue:text}`alpha_min_item:.3f` (user table:
# {glue:text}`alpha_min_user:.3f`). At CI parameters $\alpha$ hardly moves; in the full run
# it moves a little, most in the rare item blocks, where a few dimensions fall close to 0. With
# $\eta_\alpha = 0.01$ and a normalised gradient, a weight moves by about 0.01 per alpha step, and
# ml-100k gives about five alpha steps per search epoch: the
# {glue:text}`best_search_epoch:d` epochs kept here allow about a hundred steps, enough to move a
# weight only where the validation gradient keeps its sign. The warm start
# ({glue:text}`warm_epochs_run:d` epochs) and the search stop at their caps in the full run,
# validation NDCG@20 still rising; `benchmarks/prune.py` runs both to convergence (caps of 300,
# early stopping). So the in-place derivation below ranks entries mostly by $|E|$, consistent with
# what the full runs of 5.7 find on LightGCN: pruning by $|\alpha E|$ is no better than by $|E|$.
#
# ## 5.5 From the search to a model under the budget
#
# The search leaves a trained model whose lookups are $E_n \odot \alpha_{k(n)}$. Two ways lead from it
# to a model that fits a budget, and they are where implementations of DNIS differ most.
#
# **In place** (`derive="in-place"`, the default, as the authors). The trained table itself is pruned:
# every entry gets a score, one threshold over *all* tables keeps the highest scores that fit in the
# budget's bytes, the others are set to 0, and the model is fine-tuned with that mask fixed. Which score?
# The authors' pruning notebook (`pruning_Avazu.ipynb` in `SJTU-DMTai/AutoSrh`) continues training with
# $\alpha$ fixed and thresholds $|E_{n,j}|$: the product with $\alpha$ is commented out there. The
# re-implementation in the VLDB'24 benchmark (`Hsword/Hetu`, `methods/scheduler/autosrh.py`) prunes
# $|\alpha_{k(n),j} E_{n,j}|$. recsize offers both (`prune_by="weight"`, the default, or
# `"alpha-weight"`). A pruned row keeps an arbitrary *set* of dimensions, so it is stored as compressed
# sparse rows and the budget counts their index, exactly as MagPrune and PEP in Section 4.8: a budget of
# 10 % of the dense bytes keeps about 5.5 % of the entries at $d_{max} = 64$.
#
# **Prefix widths, retrained** (`derive="prefix-retrain"`, recsize's earlier derivation). Only the
# *count* of kept entries per row survives, as the row's width; a fresh model is trained from scratch with
# those widths and stored compact (Chapter 4). Which dimensions a row kept carries no information into
# the retrained model, so no column needs reordering; the budget is a fraction of the parameters, as for
# ES, MR and MDE. `granularity="block"` averages the scores per (block, dimension), one width per block.
#
# For prefix widths a threshold $t$ keeps the scores above it. It is binary-searched until the kept
# fraction $\sum_n d_n / (N d_{max})$ is within $10^{-3}$ of the target density; then the few entries
# nearest the threshold are added or dropped until exactly `target_parameters(density, N, d_max)` entries
# are kept, the same count the baselines of Chapter 4 keep. Every row keeps at least one dimension. On a
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
        f"{abs(kept - d):.5f} <= 0.001)\n"
        f"  after rounding {sizes.sum():,} = target "
        f"{budget.target_parameters(d, 1000, 64):,} "
        f"({info['adjusted']} entries moved); widths {sizes.min()}..{sizes.max()}"
    )

# %% [markdown]
# On the searched model, with one threshold over both tables (`budget_split="global"`, the authors' one
# joint table) or the same density in every table (`"per-table"`):

# %%
for split_rule in ("global", "per-table"):
    sizes, derivation = dnis.budget_sizes(searched, density, budget_split=split_rule)
    shares = ", ".join(
        f"{role}s {sizes[role].sum() / sizes[role].size / d_max:.4f}" for role in sizes
    )
    moved = next(iter(derivation.values()))["adjusted"]
    print(f"{split_rule:9s}: density per table {shares} ({moved} entries moved)")
block_sizes, _ = dnis.budget_sizes(
    searched, density, granularity="block", budget_split="per-table"
)

# %% [markdown]
# In place, on the same search: how many entries the byte budget holds, where the one threshold puts them,
# and the score behind it.

# %%
for prune_by in ("weight", "alpha-weight"):
    masks, byte_budget, thresholds = dnis.in_place_masks(searched, density, prune_by)
    kept = {role: int(m.sum()) for role, m in masks.items()}
    for r, k in kept.items():
        glue(f"kept_{prune_by}_{r}", k / masks[r].numel(), display=False)
    print(
        f"|{'alpha x ' if prune_by == 'alpha-weight' else ''}E|: "
        f"{byte_budget['entries']:,} entries fit in "
        f"{byte_budget['budget_bytes'] / 1024:.1f} KiB (CSR), threshold "
        f"{thresholds['global']:.4g}\n  "
        + ", ".join(f"{r}s {k:,} ({k / masks[r].numel():.3f})" for r, k in kept.items())
    )

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
    log_axis(ax.xaxis)  # log scale, labels that do not crowd (Chapter 1)
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
        "  mean row norm |E_n| per block:\n    "
        + np.array2string(per_block, precision=3, max_line_width=84)
    )
    for label, widths in (("row", sizes), ("block", block_sizes)):
        rho = spearman(counts[role], widths[role])
        glue(f"spearman_{label}_{role}", float(rho), display=False)
    glue(f"norm_ratio_{role}", float(per_block[-1] / per_block[0]), display=False)

# %% [markdown]
# How to read it. MDE's widths grow with popularity by construction. DNIS's need not: its importance is a
# *magnitude*, $|E_{n,j}|$ or $|\alpha_{k(n),j} E_{n,j}|$, and the magnitude of an embedding carries more
# than its importance. Under BPR with uniformly drawn negatives every item is drawn as a negative about equally
# often (tens of times per epoch on ml-100k), while a rare item is a positive once or twice: its embedding
# is mostly pushed *away* from the users, and its norm can grow (the row norms per block above show how
# much it did in this run). The magnitude rule then ranks such rows high although $\alpha$ (the heatmap)
# says little about them. The rating and CTR losses of the paper's experiments do not have this bias;
# `benchmarks/prune.py` measures what it costs on LightGCN.
#
# On this page the Spearman correlation of the row widths with the training frequency is
# {glue:text}`spearman_row_user:+.2f` for users and {glue:text}`spearman_row_item:+.2f` for items
# (per block {glue:text}`spearman_block_user:+.2f` and {glue:text}`spearman_block_item:+.2f`), where
# MDE's is close to +1 by construction, and the rows of the rarest block are
# {glue:text}`norm_ratio_user:.2f` (users) and {glue:text}`norm_ratio_item:.2f` (items) times as long
# as those of block 0. In the full run both row correlations are negative, the widths *fall* with
# popularity: the blocks of the most frequent users and items keep one or two dimensions each; the widest blocks are the least active users and
# the items of middling popularity, and the block of the rarest items (none or one training
# interaction) keeps one dimension, as the most popular do: at block granularity, per table.
#
# ## 5.7 At the same bytes as the baselines
#
# Every derivation of the one search, MagPrune (Section 4.8: the same in-place pruning of a model trained
# *without* $\alpha$, so it is also the ablation "does $\alpha$ matter?"), and ES and MDE. The element-wise
# forms get `density` of the dense bytes, index included; the prefix forms get `density` of the
# parameters (their compact tables then take somewhat more bytes), and "ES, equal bytes" is ES at the
# largest density whose compact tables fit in the same bytes as the element-wise forms. Every model is
# evaluated on the test split with its stored (CSR or compact) tables.

# %%
train_config = default_config(
    backbone, epochs=retrain_epochs, patience=10, seed=seed, progress=False
)
variants = {
    "DNIS in place, |E| (authors)": {},
    "DNIS in place, |alpha E| (Hetu)": {"prune_by": "alpha-weight"},
    "DNIS in place, per table": {"budget_split": "per-table"},
    "DNIS prefix, retrained": {"derive": "prefix-retrain"},
}


def row(method, run, seconds):
    test = run.test_compact or run.result.test
    return {
        "method": method,
        "recall@20": test["recall@20"],
        "ndcg@20": test["ndcg@20"],
        "entries": run.memory["total"]["parameters"],
        "kib": run.stored_bytes / 1024,
        "seconds": seconds,
    }


table = []
for name, change in variants.items():
    run = dnis.run_dnis(
        backbone, split, density, replace(config, **change), searched=searched
    )
    table.append(row(name, run.run, run.seconds["retrain"]))
dense_model = train_dense(backbone, split, d_max, train_config)
magprune = run_magprune(
    backbone, split, density, d_max, train_config, dense=dense_model
)
table.append(row("MagPrune (no alpha)", magprune, magprune.seconds["total"]))
shapes = table_shapes(backbone, split, d_max)
for label, method, d in (
    ("ES", "es", density),
    ("ES, equal bytes", "es", prefix_density_for_bytes(shapes, density)),
    ("MDE", "mde", density),
):
    if d is None:  # less than one dimension per row fits
        continue
    base = run_baseline(backbone, split, method, d, d_max, train_config, seed=seed)
    table.append(row(label, base, base.result.seconds))
dense_kib = sum(budget.dense_bytes(n, d) for n, d in shapes.values()) / 1024
print(
    f"{backbone}, c = {100 * sparsity:.0f} %, d_max = {d_max}: dense tables "
    f"{dense_kib:.1f} KiB, budget {density * dense_kib:.1f} KiB"
)
print(
    f"{'method':32s}{'Recall@20':>10s}{'NDCG@20':>9s}{'entries':>9s}"
    f"{'KiB':>7s}{'train s':>8s}"
)
for r in table:
    print(
        f"{r['method']:32s}{r['recall@20']:>10.4f}{r['ndcg@20']:>9.4f}"
        f"{r['entries']:>9,}{r['kib']:>7.1f}{r['seconds']:>8.1f}"
    )
print(f"DNIS search: {searched.seconds['total']:.1f} s, once for every budget")
for r in table:  # glued as recall_<method>, e.g. recall_es_equal_bytes
    name = re.sub(r"[^a-z0-9]+", "_", r["method"].lower()).strip("_")
    for key in ("recall@20", "ndcg@20", "kib"):
        glue(f"{key.split('@')[0]}_{name}", float(r[key]), display=False)
_ = (out / "dnis.json").write_text(
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
# One seed and one budget, with every training capped (at CI parameters a handful of epochs, in the
# full run 100): an illustration, not evidence. In the run on this page DNIS in place (the authors'
# $|E|$) keeps {glue:text}`recall_dnis_in_place_e_authors:.3f` Recall@20 in
# {glue:text}`kib_dnis_in_place_e_authors:.1f` KiB, by $|\alpha E|$
# {glue:text}`recall_dnis_in_place_alpha_e_hetu:.3f`, MagPrune
# {glue:text}`recall_magprune_no_alpha:.3f`, and ES at equal bytes
# {glue:text}`recall_es_equal_bytes:.3f` in {glue:text}`kib_es_equal_bytes:.1f` KiB. A row that
# trained for only a few seconds stopped early: narrow LightGCN tables sit on a plateau for about
# 20 epochs, longer than patience 10 waits (in the published run ES at equal bytes stopped there),
# which is why the LightGCN grids below use patience 20. The full runs below (the experiments
# `prune_lightgcn20`, `prune_lightgcn`, `prune_neumf` and `prune_deepfm`: LightGCN and NeuMF on ml-100k,
# 8:1:1, and DeepFM on its CTR view; $d_{max} = 64$, every training to convergence with early stopping,
# three seeds that share their splits across methods) give the evidence. Their cells are stored in
# `evidence/NAME.jsonl` (`recsize experiment run NAME` computes them, `recsize experiment report NAME`
# prints them); the cell reads them and prints, per experiment and budget, each method's per-seed test
# quality (Recall@20; AUC for DeepFM), its mean, and its paired difference to ES at equal bytes with a
# 95 % interval.

# %%
from recsize.experiments import load_grids
from recsize.search.compare import paired_summary

stored = Path("..") / "evidence"
shown = ("dnis", "dnis-alpha", "dnis-table", "dnis-prefix", "magprune")
shown += ("magprune-table", "pep")
shown += ("mde-bytes", "es-bytes", "es")
# prune_lightgcn20: patience 20, prune_lightgcn: 10
names = ("prune_lightgcn20", "prune_lightgcn", "prune_neumf", "prune_deepfm")
for name, g in load_grids(names, stored).items():
    runs, metric, first = g.runs, g.metric, g.settings[0]
    patience = first["patience"]
    print(f"\n{name} on {first['dataset']}, test {metric}, patience {patience}")
    head = f"{'c':>4s} {'method':14s}{'per seed':>20s}{'mean':>8s}"
    print(head + "  vs es-bytes [95 % CI]")
    for row in paired_summary(runs, "es-bytes", metric, shown):
        d, vs = row["delta"], ""
        if d is not None:
            ci = "" if d["low"] is None else f" [{d['low']:+.3f}, {d['high']:+.3f}]"
            vs = f"{d['mean']:+.4f}{ci} (n={d['n']})"
        per = " ".join(f"{r[metric]:.3f}" for r in row["cells"].values())
        c, m = 100 * row["sparsity"], row["method"]
        print(f"{c:3.0f}% {m:14s}{per:>20s}{row['mean']:>8.4f}  {vs}")


# %% [markdown]
# What the full runs say (LightGCN and NeuMF, ml-100k, 8:1:1, $d_{max} = 64$; three seeds unless the
# table above shows fewer; Recall@20; `benchmarks/README.md` has the same numbers with stored bytes and
# epochs):
#
# * **Patience decides the verdict.** With patience 10 (`prune_lightgcn`), ES at equal bytes stopped
#   on the plateau narrow LightGCN tables sit on for about 20 epochs: two of three seeds peaked at epoch
#   19 at $c$ = 90 %, and the pruned tables seemed 0.036 ahead. With patience 20 for every method
#   (`prune_lightgcn20`) the same seeds reach 0.326 and 0.338, and the order turns.
# * **Equal widths win from 50 to 90 %.** At patience 20, ES at equal bytes has the best mean at 50, 80
#   and 90 %; DNIS in place and MagPrune lose 0.019 Recall@20 at 80 %, with 95 % intervals below 0, and
#   about 0.01 at 90 % (intervals spanning 0). Only at 95 %, where the 8-byte row offsets of prefix
#   storage leave ES about one float per row, do the pruned tables lead (by 0.013-0.018, intervals that
#   include 0). Chapter 4's published run (patience 40, one seed) puts ES further ahead still.
# * **$\alpha$ matters little, most on DeepFM.** On LightGCN, DNIS in place and MagPrune, the same
#   pruning without $\alpha$, agree within noise at every budget and both patiences, and pruning by
#   $|\alpha E|$ (Hetu) is no better than by $|E|$ (the authors). On NeuMF and DeepFM $|\alpha E|$ is
#   ahead of $|E|$ at every budget over three seeds: by about 0.005 Recall@20 on NeuMF (intervals
#   spanning 0), by 0.006-0.009 AUC on DeepFM from 80 % on (+0.009 at 90 %, interval above 0), where
#   it brings DNIS level with ES (-0.001 at 90 %). The search costs 2-7 minutes on one CPU thread on
#   top of the training.
# * **The probe's lead does not survive.** A single-seed probe at equal *parameters*, index bytes not
#   counted and ES capped at 30 epochs, had pruning beat ES by 20-23 % at 95 %; at equal bytes with
#   converged training it is a lead at 95 % only, and a loss below.
# * **One threshold over all tables, as the authors.** On LightGCN (patience 10, three seeds)
#   per-table budgets lose from 80 % on: 0.331 against 0.350 at 80 % and 0.260 against 0.318 at 90 %
#   (paired differences -0.019 and -0.058, intervals below 0); at 50 % they tie. Users and items do
#   not deserve the same density. NeuMF is the exception (below): there one threshold empties the MLP
#   branch, and per table does better, though far from ES.
# * **NeuMF and MF: element-wise pruning collapses, and the dot product is why.** On NeuMF at equal
#   bytes, MagPrune and DNIS in place keep 0.240 and 0.235 Recall@20 at 80 % against ES's 0.334 (three
#   seeds, intervals far below 0), and 0.054 and 0.051 against 0.250 at 95 %; MF (one seed) is no
#   different: 0.238 against 0.353 at 80 %. One threshold over NeuMF's four tables keeps almost
#   nothing of the MLP branch from 80 % on (at most 0.02 % of its entries: they are about four times
#   smaller than the GMF ones), yet one budget per table (`magprune-table`, `dnis-table`) recovers
#   little: 0.247 at 80 %. The cause is the
#   product $e_u \odot e_i$ that MF and NeuMF's GMF branch score with: a term survives only where
#   *both* rows keep that dimension. Prefix widths line every row up from dimension 0, so a test pair
#   shares $\min(d_u, d_i)$ dimensions, 10.9 at 80 %; the magnitude masks of a user and an item share
#   6.3 on NeuMF (2.0 per table) and 1.6 on MF, and at 95 % almost none (`benchmarks/overlap.py`,
#   `shared_dimensions`). LightGCN's stored rows share even fewer, 0.8 at 80 %, but LightGCN scores
#   with the *propagated* rows, means over neighbourhoods, which keep all 64 dimensions (63.9 shared):
#   propagation fills the holes. Element-wise pruning suits models that mix dimensions before the dot
#   product; for a plain dot product, prefix widths are the safer storage.
# * **DeepFM drifts the same way, less.** At equal bytes (test AUC, three seeds) MagPrune trails ES by
#   0.005 / 0.009 / 0.014 at 80 / 90 / 95 % (the 90 % interval below 0) while MDE is level or ahead
#   (+0.005 at 90 %, interval above 0): FM's pairwise term is a dot product of two pruned rows too,
#   softened by the MLP on top.
# * **PEP, at its authors' defaults, is magnitude pruning of its own state.** Its thresholds never
#   reach a budget here (Section 4.8), so every mask is PEP's last state cut by magnitude, then
#   retrained from the initial weights. On LightGCN (patience 20) that gives 0.380 / 0.346 / 0.296 /
#   0.213 at 50 / 80 / 90 / 95 %, below MagPrune's fine-tuned 0.379 / 0.351 / 0.317 / 0.270 from 80 %
#   on (one seed's 95 % ticket stalled at epoch 2 of 23); on NeuMF it collapses like every element-wise
#   mask (0.224 at 80 %); on DeepFM it stays within 0.005 AUC of ES at every budget, ahead of MagPrune
#   at 90 and 95 % (0.783 and 0.776 against 0.776 and 0.765).
# * **Prefix widths retrained are better than their reputation** once every training converges (global
#   threshold, lr decay): at 95 % they keep 0.315 against ES's 0.266 at the same parameters (seed 0),
#   though with 1.6 times the bytes of the in-place forms. On NeuMF they do not collapse (0.318 at 80 %,
#   three seeds, against ES's 0.334, with 16 % more bytes): prefixes line the dimensions of a user and an
#   item up, which is what a dot product needs.
#
# ## 5.8 Where recsize follows the paper, the authors' code, and where it departs
#
# The official code is `SJTU-DMTai/AutoSrh` (search: `main_nas.py`, `model/nas.py`; derivation:
# `pruning_Avazu.ipynb`); the VLDB'24 benchmark re-implemented it in `Hsword/Hetu`
# (`tools/EmbeddingMemoryCompression`, `methods/layers/autosrh.py`, `methods/scheduler/autosrh.py`).
# The table below is rendered from `recsize.search.departures`, the one list of design points that
# `dnis.py` points to: "as the authors" only where recsize's default does what the named file does.

# %%
from IPython.display import Markdown

from recsize.search.departures import departures_table

Markdown(departures_table("dnis"))

# %% [markdown]
# Four rows change the budget of the run rather than the method. The authors train the embeddings
# at lr $10^{-3}$ for a 20-epoch warm start and 50 search epochs; recsize uses the backbone's
# learning rate and caps of 300 epochs with early stopping in `benchmarks/prune.py`, because ml-100k
# gives about 40 batches an epoch (this chapter's full run caps the warm start, the search and the
# training at 20, 20 and 100 epochs: see 5.4). With the authors' patience of 0, the LightGCN warm start decayed at the first noisy dip and
# stopped after 9 epochs (the full-width model needs about 80 at a constant rate); patience 5 lets it
# reach 93. The authors' pruned model is evaluated as pruned; recsize fine-tunes it with the mask fixed,
# as MagPrune, so the two differ only by $\alpha$.
#
# The authors rank users and items as **one** list into ten frequency blocks, with one $\alpha$ per
# block shared by both; recsize's default ranks each table on its own. `block_ranking="joint"` is the
# authors' ranking, and `benchmarks/prune.py --methods dnis-joint` measures it on the LightGCN grid
# (patience 20, three seeds, equal bytes, the same warm start). Joint against per table, Recall@20:
# 0.3773 / 0.3515 / 0.3193 / 0.2671 against 0.3782 / 0.3505 / 0.3181 / 0.2654 at $c$ = 50 / 80 / 90 /
# 95 %, paired differences -0.0009, +0.0010, +0.0012 and +0.0016, every 95 % interval spanning 0: no
# difference the seeds can see. Against ES at equal bytes the joint ranking reads as the per-table one
# does (behind at 80 %, -0.018 [-0.024, -0.012]; within the noise elsewhere). The default stays per
# table, not because the authors' ranking is worse but because every stored three-seed grid of this
# chapter and of Chapter 8 was run per table, and its `dnis` cells must stay what their name says;
# `block_ranking="joint"` is one setting away. (DeepFM has one feature table, so there the two
# rankings are the same.)
#
# Earlier versions of this chapter and of `dnis.py` said that the authors' notebook thresholds
# $|\alpha E|$; it thresholds $|E|$ (the $\alpha$ product is commented out there), and only Hetu uses
# $|\alpha E|$. Both are settings here (`prune_by`), and the full runs above compare them. The second
# order unrolls one SGD step of size $\xi$ (DARTS) and normalises the whole hypergradient; the official
# code unrolls its Adam step and normalises the first-order part only.
#
# ## Summary
#
# * DNIS relaxes the width of a row into soft weights $\alpha \in [0, 1]$, one per (frequency block,
#   dimension), learned on validation data by alternating with the embeddings: a bi-level problem solved
#   with first-order (or unrolled second-order) hypergradients.
# * Per-block gradient normalisation lets rare blocks move as fast as frequent ones.
# * The authors keep the trained weights: one magnitude threshold over all tables prunes them in place.
#   recsize then fine-tunes the kept entries (ours; the authors evaluate as pruned) and stores them as
#   CSR, whose index the budget counts. Deriving only prefix widths and retraining from scratch throws
#   the search's weights away.
# * Every departure from the authors' code is one row of `recsize.search.departures`, rendered above.
# * MagPrune is the same in-place pruning without $\alpha$: the ablation that says whether the search adds
#   anything. Compare at equal bytes, over seeds, with paired intervals.
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
# 5. Set `lr_patience=0, search_lr_patience=1` in `DNISConfig` (the authors' schedule) and run the search
#    with LightGCN. After how many warm-start epochs does it stop, and what does it cost at c = 90 %?
