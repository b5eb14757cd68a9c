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
# # Chapter 7. iHAS: one architecture per group of instances
#
# **What you will learn.** Why giving every sample the same embedding widths is a compromise; how
# iHAS (Yu et al., CIKM 2023) lets each *instance* choose its fields' widths with Bernoulli gates, pushed
# to be sparse and bi-polarised; how K-means groups the samples by their gate patterns and one compact
# model per group is retrained (the paper), or one shared table that each group reads at its own widths;
# how a new sample is routed; and how to count the budget honestly when there are K groups and a router. iHAS has no public code: recsize ships the first implementation, and
# this chapter says plainly which design choices are ours.
#
# **What you need.** Chapters 3 (FM and DeepFM) and 4 (the budget language, masked and compact tables,
# ES and MDE). About a minute at the default parameters, on synthetic CTR data whose field importance
# differs by segment; the full run adds more epochs (two minutes on a shared 2-core CPU) and
# `benchmarks/ihas.py` runs ml-100k-ctr over seeds.

# %% tags=["parameters"]
# Parameters (papermill): CI defaults; the full run is noted on each line.
n_samples = 40000  # full run: 40000
n_fields = 9  # full run: 9 (the segment field and eight value fields)
segments = 4  # full run: 4
cardinality = 200  # full run: 200
backbone = "fm"  # full run: "fm"
d_max = 32  # full run: 32
density = 0.2  # full run: 0.2 (sparsity c = 80 %)
clusters = 4  # full run: 4
n_blocks = 4  # full run: 4 (gate blocks of d_max / 4 = 8 dimensions)
route_dim = 2  # full run: 2
hidden = 8  # full run: 8 (gate network width)
search_epochs = 6  # full run: 15
epochs = 6  # full run: 100 (early stopping on validation AUC)
seed = 0
out_dir = "results/ch07"

# %%
# A bad value stops the chapter here, in one line, before any work (see the Preface).
from recsize.params import check_parameters

check_parameters(
    globals(),
    n_samples="positive int",
    n_fields="positive int",
    segments="positive int",
    cardinality="positive int",
    backbone="ctr backbone",
    d_max="positive int",
    density="density",
    clusters="positive int",
    n_blocks="positive int",
    route_dim="positive int",
    hidden="positive int",
    search_epochs="positive int",
    epochs="positive int",
    seed="non-negative int",
    out_dir="path",
)

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from myst_nb import glue  # numbers of this run quoted in the text

from recsize.data import make_synthetic_ctr, split_ctr
from recsize.search import run_baseline
from recsize.search.ihas import (
    GateNetwork,
    IHASConfig,
    polarisation_penalty,
    run_ihas,
    sparsity_penalty,
)
from recsize.train import default_config

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

# %% [markdown]
# ## 7.1 One architecture for all instances is a compromise
#
# Every method so far gives a feature value (a row) one width, used by every sample that contains it.
# But samples differ: for one group of users the item's genre may decide a click, for another the time
# of day. A field that matters for a tenth of the samples still gets its width in all of them, and under a
# fixed budget that width is taken from the fields that matter elsewhere.
#
# The synthetic CTR data of this chapter makes the point sharp. Field 0 is a *segment*; each segment's
# labels depend on two value fields of its own (an FM over a segment-specific subset of fields), and the
# other fields are noise for it:

# %%
# NBVAL_CHECK_OUTPUT
data = make_synthetic_ctr(
    n_samples, n_fields, segments, seed=seed, cardinality=cardinality
)
split = split_ctr(data, seed=seed)
print(data)
print(split)
relevant = 2
segment_fields = [  # the value fields (column numbers) each segment's labels depend on
    [1 + (s * relevant + j) % (n_fields - 1) for j in range(relevant)]
    for s in range(segments)
]
for s, fields in enumerate(segment_fields):
    print(f"segment {s}: labels depend on {', '.join(data.fields[f] for f in fields)}")

# %% [markdown]
# ## 7.2 Gates and their regularisers
#
# iHAS's search stage (verified outline) puts **Bernoulli gates** on the field embeddings, makes them
# **instance-dependent**, samples them **stochastically** during the search and adds two regularisers: a
# **sparsity** term and a **bi-polarisation** term that pushes every gate to 0 or 1. recsize's reading:
#
# * the d_max dimensions of a field are cut into `n_blocks` blocks; one gate opens or closes a block;
# * a small MLP (the *gate network*) reads the instance's field embeddings (the first `route_dim`
#   dimensions of each, detached) and outputs $\mu \in [0,1]$ per (field, block);
# * during the search $z = b + \mu - \mathrm{sg}(\mu)$ with $b \sim \mathrm{Bernoulli}(\mu)$
#   (straight-through): the forward pass sees hard 0/1 gates, the backward pass the gradient for $\mu$;
#   the gates multiply the looked-up embeddings through `MaskedEmbedding.forward(ids, gates=...)`;
# * sparsity: $\lambda_s\,(\overline{\mu} - \text{target})$ where $\overline{\mu}$ is the expected open
#   fraction (blocks have equal width, so it counts parameters) and $\lambda_s \ge 0$ is a Lagrange
#   multiplier raised by dual ascent until $\overline{\mu} \le$ target;
# * polarisation: $\lambda_p\,\overline{\mu(1-\mu)}$, zero only at 0 and 1, ramped up over the epochs.
#
# The gradients point the right way: the sparsity term closes every gate a little, the polarisation term
# pushes each gate towards its nearer end:

# %%
# NBVAL_CHECK_OUTPUT
mu = torch.tensor([0.1, 0.4, 0.6, 0.9], requires_grad=True)
sparsity_penalty(mu, 0.25).backward()
print("mu                     ", [round(m, 3) for m in mu.detach().tolist()])
print("d sparsity / d mu      ", [round(g, 3) for g in mu.grad.tolist()])
mu.grad = None
polarisation_penalty(mu).backward()
print("d polarisation / d mu  ", [round(g, 3) for g in mu.grad.tolist()])
net = GateNetwork(n_fields, d_max, n_blocks, route_dim, hidden=hidden)
print(
    f"gate network: {n_fields} fields x {route_dim} dims in -> {n_fields} x {n_blocks} "
    "gates out, "
    f"{sum(p.numel() for p in net.parameters()):,} parameters"
)

# %% [markdown]
# Two first attempts failed, and the chapter keeps them because they teach something. With the
# *relaxed* gates $z = \mathrm{clip}(\mu + \sigma\epsilon, 0, 1)$ every $\mu$ sank to 0 while the loss
# stayed fine: an FM is not scale invariant, so the embeddings simply grew to make up for small soft
# gates. With a *fixed* sparsity weight the polarisation term won once the gates sat at 1. Hard
# straight-through gates and the dual-ascent multiplier fixed both.

# %% [markdown]
# ## 7.3 Search, cluster, retrain
#
# `run_ihas` runs the three stages. After the search, the deterministic gates are $z = 1[\mu > \tau]$,
# with $\tau$ set so that the training samples open exactly the target fraction (our choice: the
# expected value thresholded at the budget). K-means (scikit-learn, seeded) clusters the training
# samples' gate patterns; a field's width in a cluster is proportional to its mean open width there; one
# model per cluster is trained on that cluster's samples with those widths, masked during training and
# compact afterwards. A validation or test sample is routed to the cluster whose centroid is nearest to
# its gate pattern.
#
# That is the paper's layout. The run below uses recsize's `layout="shared"` instead: one model, trained
# on every sample, whose table stores each row as wide as its widest cluster wants it, each sample
# reading only its cluster's widths. 7.6 says what each layout stores, and 7.7 runs the paper's beside
# it: at this budget the paper's K models cannot afford their own tables. K is an upper bound: a
# cluster that no training sample is routed to is dropped (`cluster_patterns`), so a run can end with
# fewer; this one kept {glue:text}`n_clusters:d` of K = 4.

# %%
train_config = default_config(
    backbone,
    epochs=epochs,
    patience=3,
    seed=seed,
    progress=False,
    lr=3e-3,
    batch_size=512,
)
ihas_config = IHASConfig(
    clusters=clusters,
    n_blocks=n_blocks,
    route_dim=route_dim,
    hidden=hidden,
    search_epochs=search_epochs,
    lr=3e-3,
    batch_size=512,
    layout="shared",  # one table, read per cluster (7.6); "per-cluster" in 7.7
)
run = run_ihas(backbone, split, density, d_max, ihas_config, train_config, seed=seed)
print(
    f"iHAS K = {clusters}: test AUC {run.test['auc']:.4f}, log loss "
    f"{run.test['logloss']:.4f}"
)
print("samples per cluster (train):", run.cluster_sizes["train"])
glue("n_clusters", len(run.cluster_sizes["train"]), display=False)

# %%
hist = run.search_history
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot([h["epoch"] for h in hist], [h["open_fraction"] for h in hist], marker="o")
axes[0].set_ylabel("open fraction (validation, tau = 0.5)")
axes[1].plot([h["epoch"] for h in hist], [h["lambda_s"] for h in hist], marker="o")
axes[1].set_ylabel("lambda_s (dual ascent)")
for ax in axes:
    ax.set_xlabel("search epoch")
    ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out / "search.png", dpi=120)
plt.show()

# %% [markdown]
# ## 7.4 The clusters
#
# A 2-D PCA of the training samples' deterministic gate patterns, coloured by cluster (left) and by the
# true segment (right), and the cross-table of the two. When the gates have found the segment structure,
# clusters and segments coincide, although the gates were never told the segments. (The colours of the
# two panels need not match: cluster numbers are arbitrary; what matters is whether the groups do.)

# %%
from sklearn.decomposition import PCA

from recsize.search.ihas import gate_patterns

rng = np.random.default_rng(seed)
sample = rng.choice(len(split.train), size=min(2000, len(split.train)), replace=False)
pat = gate_patterns(run.search_model, run.gates, data.X[split.train[sample]])
xy = PCA(n_components=2, random_state=seed).fit_transform(
    pat + rng.normal(0, 0.03, pat.shape)
)
labels = run.labels["train"][sample]
segment = data.X[split.train[sample], 0] - data.offsets[0]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
for ax, colour, title in (
    (axes[0], labels, "cluster"),
    (axes[1], segment, "true segment"),
):
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, s=6, cmap="tab10", alpha=0.6)
    ax.set_title(f"coloured by {title}")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
fig.suptitle("Gate patterns of the training samples (PCA, jittered)")
fig.tight_layout()
fig.savefig(out / "clusters_pca.png", dpi=120)
plt.show()
table = np.zeros((len(run.cluster_sizes["train"]), segments), dtype=int)
np.add.at(table, (run.labels["train"], data.X[split.train, 0] - data.offsets[0]), 1)
print("training samples, cluster (rows) x segment (columns):")
print(table)
majority = table.max(axis=0).sum() / table.sum()  # each segment's largest cluster
glue("segment_majority", float(majority), display=False)
big = table > 0.05 * table.sum(0)  # a cluster holds more than 5 % of a segment
glue("segments_split", int((big.sum(0) > 1).sum()), display=False)
big = table > 0.05 * table.sum(1)[:, None]  # a segment is more than 5 % of a cluster
glue("clusters_mixed", int((big.sum(1) > 1).sum()), display=False)

# %% [markdown]
# In the run on this page they nearly coincide: {glue:text}`segment_majority:.1%` of the training
# samples sit in the cluster that holds most of their segment; {glue:text}`segments_split:d` segments
# are split between clusters (more than 5 % of a segment's samples elsewhere) and
# {glue:text}`clusters_mixed:d` clusters mix segments. In the published run two clusters each took a
# slice of a second segment (the cross-table): the gates of those samples looked more like the other
# segment's than like their own.
#
# ## 7.5 Per-cluster widths
#
# The mean width each cluster's samples read of every field (the shared table stores each row as wide
# as the widest cluster wants it), after the widths were scaled so that all clusters together hit the
# budget. A cluster that serves one segment should spend its dimensions on that segment's fields.

# %%
widths = run.field_sizes()
fig, ax = plt.subplots(figsize=(7, 2.6))
im = ax.imshow(widths, cmap="viridis", aspect="auto")
ax.set_xticks(range(n_fields), data.fields, rotation=45)
ax.set_yticks(range(len(widths)), [f"cluster {k}" for k in range(len(widths))])
for k in range(widths.shape[0]):
    for f in range(widths.shape[1]):
        ax.text(
            f, k, f"{widths[k, f]:.0f}", ha="center", va="center", color="w", fontsize=8
        )
fig.colorbar(im, ax=ax, label="mean width")
fig.tight_layout()
fig.savefig(out / "cluster_widths.png", dpi=120)
plt.show()
own = []  # the share of a cluster's value-field widths on its segment's fields
for k, s in enumerate(table.argmax(axis=1)):  # s: the segment cluster k serves most
    own.append(widths[k, segment_fields[s]].sum() / max(widths[k, 1:].sum(), 1e-12))
print("share of each cluster's value-field width on its segment's fields:")
print(np.round(own, 2))
glue("own_share_mean", float(np.mean(own)), display=False)
glue("own_share_min", float(np.min(own)), display=False)

# %% [markdown]
# On average {glue:text}`own_share_mean:.0%` of a cluster's width on the value fields goes to the two
# fields its segment's labels depend on (the least, in one cluster: {glue:text}`own_share_min:.0%`).
# In the published run the rest goes, in the two clusters that took a slice of a second segment, to
# that segment's fields: a cluster reads what its samples need. Every cluster reads the segment field
# at least as wide as any other: it has only four rows, so a wide segment row costs almost nothing,
# and every sample needs it.
#
# ## 7.6 Counting the budget with K models and a router
#
# The budget is a density of the one d_max-wide feature table, as in Chapter 4: it keeps
# `target_parameters(density, n_features, d_max)` parameters. iHAS must fit *everything* it stores for
# inference into that number:
#
# * each cluster's feature table (rows of feature values that never occur in a cluster's training
#   samples get width 0: an unseen row would stay at its random initialisation anyway);
# * the router: the first `route_dim` columns of the search table (the gate network's input), the gate
#   network and the K centroids.
#
# The uniform baseline ES keeps the same total in its single table, and one first-order weight table
# (one scalar per feature value) that no method charges. iHAS's K - 1 extra first-order tables are
# storage ES does not have, so the default, `charge="routing+linear"`, charges them with the router:
# everything iHAS stores beyond one model comes out of the budget. `charge="embeddings"` charges
# neither (consistent too, the most favourable reading for iHAS; the paper does not say how it
# counts); `charge="routing"`, recsize's earlier accounting, charged the router only. On ml-100k-ctr
# the two consistent readings give the same AUC within noise (the breakdown below). DeepFM's MLP,
# K copies of it, is outside the embedding budget
# and printed separately. Each cluster's model is trained *from scratch* on its own samples: that is our
# choice (the paper is silent); `cluster_init="search"` starts every cluster model from the search
# model's weights instead, cut to the cluster's widths.
#
# One more reading separates two things iHAS does at once: it gives clusters their own widths *and* it
# splits the training data K ways. `layout="shared"` keeps the first and drops the second: one model,
# trained on every sample, whose single table stores each row as wide as its widest cluster wants it;
# a sample reads only the prefix its cluster allows (`SharedClusterModel`, a 0/1 gate per sample
# through the table's hook). The cluster widths cost one ratio per (cluster, field), charged with the
# router; there is one first-order table, as for ES. This chapter's run has that layout; its budget:

# %%
b = run.budget
r = b["routing_parameters"]
print(
    f"budget: {b['target_parameters']:,} parameters (density {density} of "
    f"{data.n_features:,} rows x {d_max})"
)
for k, p in enumerate(b["cluster_parameters"]):
    print(f"  cluster {k}: reads {p:>8,} parameters of the table")
print(
    f"  table:     {b['models_parameters']:>8,} parameters  "
    f"{sum(b['cluster_bytes']):>8,} bytes (compact: a row as its widest cluster)"
)
print(
    f"  routing:   {r['total']:>8,} parameters  (router table {r['router_table']:,}, "
    f"gate network {r['gate_network']:,},\n{'':14s}centroids {r['centroids']:,}, "
    f"cluster widths {r['cluster_widths']:,})"
)
print(
    f"  total:     {b['total_parameters']:>8,} parameters  {b['total_bytes']:>8,} bytes"
)
print(f"non-embedding parameters of the model: {b['non_embedding_parameters']:,}")
assert b["total_parameters"] == b["target_parameters"]
glue("routing_share", r["charged"] / b["target_parameters"], display=False)

# %% [markdown]
# The routing takes {glue:text}`routing_share:.0%` of the budget: its table keeps `route_dim` = 2 of
# the 32 columns of every row, a sixteenth of the dense table against a budget of a fifth of it.
#
# ## 7.7 The comparison at equal total parameters
#
# ES (equal widths), MDE (width grows with frequency), iHAS with K = 1 (the gates choose one width per
# field for all samples: a field-level search), and iHAS with K clusters in both layouts: "models", the
# paper's one model per cluster, and "shared", the run above; all at the same total, everything charged.
# The difference between K = 1 and K > 1 is what instance-wise selection adds.

# %%
rows = {}
for method in ("es", "mde"):
    base = run_baseline(backbone, split, method, density, d_max, train_config)
    rows[method.upper()] = {
        **base.result.test,
        "parameters": int(sum(base.sizes["feature"])),
    }
one = run_ihas(
    backbone,
    split,
    density,
    d_max,
    IHASConfig(**{**ihas_config.__dict__, "clusters": 1}),
    train_config,
    seed=seed,
)
rows["iHAS K=1"] = {**one.test, "parameters": one.budget["total_parameters"]}
paper = run_ihas(
    backbone,
    split,
    density,
    d_max,
    IHASConfig(**{**ihas_config.__dict__, "layout": "per-cluster"}),
    train_config,
    seed=seed,
)
pb = paper.budget
rows[f"K={clusters} models"] = {**paper.test, "parameters": pb["total_parameters"]}
rows[f"K={clusters} shared"] = {**run.test, "parameters": b["total_parameters"]}
print(f"{'method':12s}{'AUC':>8s}{'log loss':>10s}{'parameters':>12s}")
for name, m in rows.items():
    print(f"{name:12s}{m['auc']:8.4f}{m['logloss']:10.4f}{m['parameters']:12,}")
for i, m in enumerate(rows.values()):  # auc_0 ... auc_4, in the table's order
    glue(f"auc_{i}", float(m["auc"]), display=False)
glue("paper_clusters", len(paper.cluster_sizes["train"]), display=False)
charged = pb["routing_parameters"]["charged"] / pb["target_parameters"]
glue("paper_charged_share", charged, display=False)
glue("paper_first_order", pb["routing_parameters"]["first_order"], display=False)
glue("paper_tables", pb["models_parameters"], display=False)
_ = (out / "comparison.json").write_text(
    json.dumps(
        {"density": density, "d_max": d_max, "rows": rows, "ihas": run.to_dict()},
        indent=2,
        default=float,
    )
)

# %%
fig, ax = plt.subplots(figsize=(7, 3))
names = list(rows)
colours = ["#999", "#999", "#6a9", "#8bc", "#2a7"]
ax.bar(names, [rows[n]["auc"] for n in names], color=colours)
lo = min(rows[n]["auc"] for n in names)
ax.set_ylim(max(0.5, lo - 0.05), None)
ax.set_ylabel("test AUC")
ax.set_title(f"equal total embedding parameters (density {density})")
fig.tight_layout()
fig.savefig(out / "comparison.png", dpi=120)
plt.show()

# %% [markdown]
# Read the table with care: it is one seed. In the run on this page the shared layout scores
# {glue:text}`auc_4:.3f` test AUC against ES's {glue:text}`auc_0:.3f`, MDE's {glue:text}`auc_1:.3f`
# and field-level selection's (K = 1) {glue:text}`auc_2:.3f`. The paper's layout scores
# {glue:text}`auc_3:.3f`: charged with its router and its K - 1 extra first-order tables
# ({glue:text}`paper_first_order:,d` parameters of them), it has
# {glue:text}`paper_charged_share:.0%` of the budget spent before any cluster table, so its
# {glue:text}`paper_clusters:d` cluster models share {glue:text}`paper_tables:,d` embedding
# parameters. The search, held to open no more gates than that leaves, learns patterns that barely
# separate the segments (in the published run one cluster holds most samples of all four), and
# where the patterns are fewer than K, K-means keeps fewer clusters. At a density of 0.2 of this
# small table, the paper's layout cannot pay for K models; one shared table can.
#
# The benchmark below measured the paper's layout under recsize's *earlier* accounting, which did not
# charge the extra first-order tables, at $d_{max} = 64$ (`benchmarks/ihas.py`, FM, density 0.2, a
# reduced run of 30 training epochs with patience 3, 3 seeds, one thread of a shared 2-core CPU; the
# router charged, the extra first-order tables not; `benchmarks/out/ihas*.json`; DNIS is Chapter 5's
# row-granularity search, re-run on its own after a change to it, `ihas_dnis_rerun_*.json`) measured test
# AUC / log loss, mean ± standard deviation over seeds:
#
# | test AUC | synthetic, 15 | synthetic, 8 | ml-100k-ctr, 8 | DeepFM |
# |---|---|---|---|---|
# | ES | 0.789 ± 0.007 | 0.789 ± 0.007 | 0.783 ± 0.007 | 0.781 |
# | MDE | 0.789 ± 0.007 | 0.789 ± 0.007 | **0.784 ± 0.006** | **0.786** |
# | DNIS | 0.792 ± 0.005 | 0.791 ± 0.005 | 0.782 ± 0.006 | 0.784 |
# | iHAS K = 1 | 0.798 ± 0.003 | 0.797 ± 0.005 | 0.777 ± 0.010 | 0.767 |
# | iHAS K = 4 | **0.819 ± 0.012** | 0.788 ± 0.034 | 0.745 ± 0.004 | 0.759 |
#
# | test log loss | synthetic, 15 | synthetic, 8 | ml-100k-ctr, 8 | DeepFM |
# |---|---|---|---|---|
# | ES | 0.608 | 0.608 | 0.560 | 0.565 |
# | MDE | 0.608 | 0.608 | **0.559** | **0.561** |
# | DNIS | 0.589 | 0.585 | 0.561 | 0.567 |
# | iHAS K = 1 | 0.585 | 0.587 | 0.564 | 0.576 |
# | iHAS K = 4 | **0.526** | 0.554 | 0.594 | 0.583 |
#
# (Columns: the data and the number of search epochs; "DeepFM" is ml-100k-ctr with DeepFM, one seed and
# 20 search epochs.)
#
# Where importance really differs by segment and the search has run long enough to find the segments
# (balanced clusters that match them), instance-wise selection wins clearly, and most of the gain over
# field-level selection (K = 1) comes from the clustering. With too short a search, some seeds merge
# segments and the spread is large. On ml-100k-ctr iHAS **loses**: MovieLens samples are not made of
# segments that use disjoint fields, K models split the training data four ways (the biggest cluster
# held half to four fifths of the samples), and the router costs 18 % of this budget (6,660 of 36,582
# parameters). The bytes (7.6) add another cost: every cluster's compact table keeps one offset per
# row, K times over; storing per-field offsets would remove most of it (exercise 4).
#
# **Which of our choices cost iHAS the match?** The breakdown (DeepFM on ml-100k-ctr, density 0.2,
# every training to convergence with patience 10, three seeds sharing their splits;
# `benchmarks/ihas.py --cluster-inits scratch search --charges routing+linear embeddings --layouts
# per-cluster shared`, table in `benchmarks/README.md`) gives test AUC and the paired difference to
# ES (0.789):
#
# | iHAS variant | router and extra tables charged | nothing charged |
# |---|---|---|
# | K = 4, one model per cluster, from scratch | 0.763 (-0.026) | 0.757 (-0.032) |
# | K = 4, one shared table, from scratch | 0.774 (-0.015) | 0.774 (-0.015) |
# | K = 4, one model per cluster, warm start | 0.774 (-0.014) | 0.771 (-0.018) |
# | K = 4, one shared table, warm start | 0.783 (-0.006) | 0.784 (-0.004) |
# | K = 1 (nothing to route), from scratch | 0.782 (-0.006) | the same |
# | K = 1 (nothing to route), warm start | 0.784 (-0.004) | the same |
#
# Splitting the training data four ways costs about 0.01 AUC, and training the cluster models from
# scratch about as much again; what the budget charges changes nothing measurable. With both costs
# removed, K = 4 only ties K = 1: on MovieLens the clusters carry no information the field-level
# gates lack. No variant reaches ES, and MDE, the frequency rule, is ahead of ES (+0.004, the 95 %
# interval above 0).
#
# ## 7.8 What is the paper's and what is ours
#
# Verified from the paper's abstract and summaries: the three stages (search with stochastic Bernoulli
# gates and sparsity plus bi-polarisation regularisers, instance-dependent; K-means on a deterministic
# mode of the gates; one model per cluster, samples routed to their cluster). Everything else is
# **ours**, and open to change; no public code exists to compare with. The list is
# `recsize.search.departures` (which `ihas.py` points to), rendered:

# %%
from IPython.display import Markdown

from recsize.search.departures import departures_table

Markdown(departures_table("ihas"))

# %% [markdown]
# ## Summary
#
# * One width per row for every sample is a compromise when samples use different fields.
# * iHAS gates (instance, field, block) with hard stochastic gates during the search, a sparsity
#   constraint and a polarisation term; the deterministic gates are clustered and one compact model per
#   cluster is retrained (or, recsize's `layout="shared"`, one table that each cluster reads at its own
#   widths); new samples are routed by their gate pattern.
# * The honest budget counts every cluster's table *and* the router; the uniform baseline gets the same
#   total, and so are the K - 1 extra first-order tables (`charge` sets what is counted). Counted so,
#   a small budget cannot pay for the paper's K models; one shared table keeps the gain (7.7).
#
# ## Exercises
#
# 1. Set `clusters = 1, 2, 8`. Where does the gain of instance-wise selection stop, and why does K = 8
#    not help on four segments?
# 2. Lower `density` to 0.1. The router's share of the budget grows: at what density does it eat the
#    whole gain?
# 3. Run `recsize search --method ihas --backbone deepfm --dataset ml-100k-ctr --budget 0.2` and compare
#    with `--method es`. Do the clusters of MovieLens samples mean anything (look at their widths)?
# 4. A cluster's widths are (nearly) constant within a field. Count the bytes of a storage form with one
#    offset per field instead of one per row, and compare the total with ES's compact table.
