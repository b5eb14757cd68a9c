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
# # Chapter 2. Data and evaluation protocol
#
# **What you will learn.** Where the data of this book comes from and how it is verified; the three
# split protocols used in the literature on embedding-size search; full-ranking evaluation and the
# metrics (Recall, NDCG, Precision, Hit, MRR, and AUC / log loss for click prediction); and why the
# protocol moves the numbers more than most model changes do.
#
# **What you need.** Chapter 1 is not required. MovieLens-100K in the local cache
# (`recsize data fetch ml-100k`). About a minute at the default parameters.

# %% tags=["parameters"]
# Parameters (papermill): CI defaults; the full run is noted on each line.
dataset = "ml-100k"  # full run: "ml-100k"
epochs = 5  # full run: 300 (early stopping ends sooner)
seed = 0
out_dir = "results/ch02"

# %%
# A bad value stops the chapter here, in one line, before any work (see the Preface).
from recsize.params import check_parameters

check_parameters(
    globals(),
    dataset="dataset",
    epochs="positive int",
    seed="non-negative int",
    out_dir="path",
)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from recsize.data import (
    BPRSampler,
    cache_dir,
    ctr_view,
    load,
    make_split,
    make_synthetic,
    split_ctr,
)
from recsize.evaluate import evaluate_topk
from recsize.metrics import ndcg_at_k, recall_at_k, topk_metrics
from recsize.plots import log_axis
from recsize.train import default_config, fit

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 2.1 Where the data comes from
#
# `recsize.data.load` tries its sources in order and says which one served: the local cache
# (by default `~/.cache/recsize`, or the folder in `$RECSIZE_DATA`); the official GroupLens archive,
# verified by its published MD5; and, for MovieLens-100K only, the copy that the RecBole library
# redistributes inside its wheel on PyPI, read straight from the zip without installing RecBole and
# verified file by file with SHA-256. Every write to the cache goes through a temporary file and a
# rename (`recsize.files.atomic_write`), and every download is recorded, with its size and SHA-256, in
# the dataset folder's `.recsize-downloaded.json`. Files you put into the cache yourself are inputs:
# recsize only reads them. A bad one stops it with one message that names the file, the line and the
# fix, and the file is left as it was. Only a download of recsize's own that later fails its check is
# moved aside, by `recsize data fetch`, under a name that never overwrites (`x.corrupt`,
# `x.corrupt.1`, ...). For ML-1M you may also put the `ratings.dat` of its archive
# there: like the LightGCN-format files, it is parsed line by line and checked against
# the published sizes. In LightGCN-format files, (user, item) pairs that repeat, or that
# are in both train and test, are counted and reported in one warning.

# %%
data = load(dataset)
print("cache:", cache_dir())
print(data)

# %% [markdown]
# Every rating counts as a positive interaction (implicit feedback), as in the established protocol.
# Popularity is long-tailed, which is the reason different rows deserve different widths:

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for ax, counts, who in (
    (axes[0], data.item_counts(), "items"),
    (axes[1], data.user_counts(), "users"),
):
    ranked = np.sort(counts)[::-1]
    ax.plot(np.arange(1, len(ranked) + 1), ranked)
    log_axis(ax.xaxis)  # log scales with short labels that do not crowd (Chapter 1)
    log_axis(ax.yaxis)
    ax.set_xlabel(f"{who} ranked by interactions")
    ax.set_ylabel("interactions")
    ax.grid(alpha=0.3, which="both")
fig.suptitle(f"{dataset}: popularity and activity are long-tailed")
fig.tight_layout()
fig.savefig(out / "long_tail.png", dpi=120)
plt.show()

# %% [markdown]
# ## 2.2 Three split protocols
#
# * **random 8:1:1 per user** (`random-811`): the protocol of the established library we compare
#   backbones against. Each user's interactions are shuffled and cut 80/10/10; a user with few
#   interactions still gets one validation and one test item while keeping at least one for training.
# * **random 50/25/25 per user** (`ciess-50-25-25`): the protocol of the CIESS paper (Chapter 6).
# * **temporal leave-last-out** (`temporal-loo`): the latest interaction of each user is the test item,
#   the one before it the validation item.
#
# A split is three binary user-item matrices (`scipy.sparse`); printing it shows its statistics.

# %%
# NBVAL_CHECK_OUTPUT
splits = {
    p: make_split(data, p, seed=seed)
    for p in ("random-811", "ciess-50-25-25", "temporal-loo")
}
for s in splits.values():
    print(s, end="\n\n")

# %% [markdown]
# ## 2.3 Full ranking and the metrics
#
# For each user with held-out positives we score *every* item, remove the items the user already has
# in training (at test time also the validation items), and look at the top $k$. With $h_r = 1$ when
# the item at rank $r$ is a held-out positive and $P$ the user's held-out positives:
#
# $$\text{Recall@}k = \frac{\sum_{r \le k} h_r}{|P|}, \qquad
#   \text{NDCG@}k = \frac{\sum_{r \le k} h_r / \log_2(r+1)}{\sum_{r \le \min(|P|, k)} 1 / \log_2(r+1)}.$$
#
# Precision@$k$ divides the hits by $k$, Hit@$k$ asks whether there is any, and MRR@$k$ is the reciprocal
# rank of the first hit. A worked example, by hand and with the package:

# %%
# NBVAL_CHECK_OUTPUT
hits = torch.tensor(
    [
        [1, 0, 1, 0, 0],  # positives at ranks 1 and 3, the user has 2 positives
        [0, 0, 0, 1, 0],
    ],  # one positive at rank 4, the user has 3 positives
    dtype=torch.bool,
)
n_pos = torch.tensor([2, 3])
by_hand = [
    (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3)),
    (1 / np.log2(5)) / (1 + 1 / np.log2(3) + 1 / np.log2(4)),
]
print("NDCG@5 by hand:   ", np.round(by_hand, 4))
print("NDCG@5 by recsize:", ndcg_at_k(hits, n_pos, 5).numpy().round(4))
print("Recall@5:         ", recall_at_k(hits, n_pos, 5).numpy().round(4))
for name, v in topk_metrics(hits, n_pos, ks=(5,)).items():
    print(f"{name:12s} {v.numpy().round(4)}")

# %% [markdown]
# ## 2.4 The protocol moves the numbers
#
# We train the same model (BPR-MF, $d = 64$, same settings, same seed) under each protocol and evaluate
# it with full ranking. We also evaluate the 8:1:1 model *without* removing the training items from the
# ranking, a mistake that is easy to make and that sinks every number.

# %%
rows = {}
for protocol, s in splits.items():
    result = fit(
        "mf",
        s,
        dim=64,
        config=default_config("mf", epochs=epochs, seed=seed, progress=False),
    )
    rows[protocol] = result.test
    if protocol == "random-811":
        rows["random-811, seen items kept"] = evaluate_topk(
            result.model, s, "test", exclude_seen=False
        )
print(f"{'protocol':30s} {'Recall@20':>10s} {'NDCG@20':>10s} {'Hit@20':>10s}")
for protocol, m in rows.items():
    print(
        f"{protocol:30s} {m['recall@20']:10.4f} {m['ndcg@20']:10.4f} "
        f"{m['hit@20']:10.4f}"
    )

# %% [markdown]
# The same model scores very differently: with 50/25/25 there are more test positives per user and less
# training data; with leave-last-out there is a single, hard-to-predict test item per user. This is why
# every table in this book prints its split, filter, $k$ and ranking mode, and why we compare methods only
# within one protocol.
#
# ## 2.5 Training batches: vectorised BPR sampling
#
# The BPR loss compares a positive item with a negative one for the same user. `BPRSampler` draws a
# negative for every training positive of an epoch in one vectorised step and redraws, again vectorised,
# the few that collide with a training positive. No Python loop runs per interaction.

# %%
sampler = BPRSampler(splits["random-811"].train, seed=seed)
users, pos, neg = next(sampler.epoch(batch_size=8))
print("users    ", users.tolist())
print("positives", pos.tolist())
print("negatives", neg.tolist())
print(
    "any negative a training positive?",
    bool(sampler.is_positive(users.numpy(), neg.numpy()).any()),
)

# %% [markdown]
# ## 2.6 Synthetic data with planted dimensionality
#
# To check that a size search finds what it should, `make_synthetic` plants a true latent dimensionality
# for every item and user: popular items use many latent dimensions, rare ones few. The search chapters
# come back to this data set and compare the widths a method finds with the planted ones.

# %%
# NBVAL_CHECK_OUTPUT
synthetic = make_synthetic(seed=seed)
print(synthetic)
counts = synthetic.item_counts()
true_dims = synthetic.meta["true_item_dims"]
for lo, hi in ((0, 5), (5, 20), (20, 100), (100, 10**9)):
    sel = (counts >= lo) & (counts < hi)
    print(
        f"items with {lo:>3d}-{min(hi, 999):<3d} interactions: {sel.sum():4d}, mean "
        f"planted dims {true_dims[sel].mean():5.1f}"
    )

# %% [markdown]
# ## 2.7 A click-through-rate view
#
# Factorisation machines (Chapter 3) and iHAS (Chapter 7) work on samples made of categorical fields.
# The CTR view turns every rating into one sample labelled "liked" when the rating is at least 4, with
# eight fields: user, item, age bucket, gender, occupation, zip prefix, primary genre and release year.
# Its metrics are AUC and log loss.

# %%
# NBVAL_CHECK_OUTPUT
ctr = ctr_view(data)
print(ctr)
print(split_ctr(ctr, seed=seed))

# %% [markdown]
# ## Summary
#
# * Data comes from a verified cache, the official archive, or (ml-100k) the RecBole wheel, and the
#   loader says which one served.
# * Three protocols: random 8:1:1 per user, CIESS's 50/25/25, temporal leave-last-out; each split
#   prints its statistics.
# * Full ranking excludes already-seen items; forgetting that, or changing the split, changes the
#   numbers more than most model changes.
#
# ## Exercises
#
# 1. Change `seed` and rerun. How much do the split statistics and the metrics move?
# 2. Compute Recall@20 by hand for one user of the test split and compare with
#    `evaluate_topk(..., per_user=True)`.
# 3. Evaluate with sampled ranking (one positive against 100 random negatives) and compare the ordering of
#    two backbones with the full-ranking ordering. Why do sampled metrics mislead?
