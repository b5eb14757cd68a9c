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
# # Appendix A. Serving variable-size embeddings
#
# **What you will learn.** How the widths found by a search become a model you can ship: saving and
# loading compact tables, checking that the served model ranks exactly like the trained one, exporting
# per-width buckets for a production embedding library, and what changes at the scale of millions of rows.
#
# **What you need.** Chapter 4 (the variable-size core). MovieLens-100K in the cache. Under a minute.

# %% tags=["parameters"]
# Parameters (papermill): CI defaults; the full run is noted on each line.
dataset = "ml-100k"
backbone = "mf"  # full run: "mf" (any top-k backbone works)
method = "mde"  # full run: "mde" (or "es", "mr", or the widths of a search method)
density = 0.1  # full run: 0.1 (c = 90 % pruned)
d_max = 64  # full run: 64
epochs = 5  # full run: 300
seed = 0
out_dir = "results/chA1"

# %%
# A bad value stops the chapter here, in one line, before any work (see the Preface).
from recsize.params import check_parameters

check_parameters(
    globals(),
    dataset="dataset",
    backbone="top-k backbone",
    method="baseline method",
    density="density",
    d_max="positive int",
    epochs="positive int",
    seed="non-negative int",
    out_dir="path",
)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from recsize.budget import buckets_bytes, compact_bytes, dense_bytes, format_bytes
from recsize.data import prepare
from recsize.embedding import CompactEmbedding
from recsize.search.baselines import baseline_sizes, run_baseline
from recsize.train import default_config

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## A.1 Train with variable widths, then shrink
#
# We train a backbone with the widths of a baseline rule (Chapter 4) in masked form and convert its tables
# to compact storage. `run_baseline` does both and evaluates the test split again after the conversion.

# %%
split = prepare(dataset, "random-811", seed=seed)
run = run_baseline(
    backbone,
    split,
    method,
    density,
    d_max=d_max,
    config=default_config(backbone, epochs=epochs, seed=seed, progress=False),
    seed=seed,
)
model = run.model
print(
    f"test NDCG@20 trained {run.result.test['ndcg@20']:.4f}, after conversion "
    f"{run.test_compact['ndcg@20']:.4f}"
)
print({role: type(table).__name__ for role, table in model.embedding_tables().items()})

# %% [markdown]
# ## A.2 Save, load, serve
#
# A compact table is saved as its offsets and kept values (written to a temporary file, then renamed, so a
# crash never leaves half a file). A serving process loads the tables and ranks items with nothing but a
# lookup, a matrix product and a top-k; the ranking must be identical to the trained model's.

# %%
paths = {}
for role, table in model.embedding_tables().items():
    paths[role] = out / f"{role}.pt"
    table.save(paths[role])
served = {role: CompactEmbedding.load(path) for role, path in paths.items()}

users = torch.arange(split.n_users)
with torch.no_grad():
    served_scores = served["user"](users) @ served["item"].table().T
    trained_scores = model.score_all(users)
top_served = served_scores.topk(20, dim=1).indices
top_trained = trained_scores.topk(20, dim=1).indices
print("identical top-20 for every user:", torch.equal(top_served, top_trained))
for role, path in paths.items():
    print(
        f"{role:5s} file {format_bytes(path.stat().st_size):>10s}   in memory "
        f"{format_bytes(served[role].num_bytes()):>10s}"
        "   dense would be "
        f"{format_bytes(dense_bytes(served[role].num_rows, d_max)):>10s}"
    )

# %% [markdown]
# ## A.3 Buckets for production embedding libraries
#
# Production embedding libraries and parameter servers want plain dense tables. `export_buckets` gives one
# table per distinct width, and can round widths up to a multiple of 4 (aligned rows, fewer tables) at a
# small cost in memory. The served vectors are the same.

# %%
# NBVAL_CHECK_OUTPUT
sizes = baseline_sizes(method, split.item_popularity(), d_max, density, seed=seed)
print(
    f"{len(sizes)} item rows, {len(np.unique(sizes))} distinct widths, mean width "
    f"{sizes.mean():.2f}"
)
print(f"{'form':34s} {'bytes':>10s}")
print(f"{'dense':34s} {format_bytes(dense_bytes(len(sizes), d_max)):>10s}")
print(f"{'compact':34s} {format_bytes(compact_bytes(sizes, d_max)):>10s}")
for round_to in (1, 4, 8):
    widths = len(np.unique(np.minimum(-(-sizes // round_to) * round_to, d_max)))
    print(
        f"{f'buckets, round to {round_to} ({widths} tables)':34s} "
        f"{format_bytes(buckets_bytes(sizes, d_max, round_to)):>10s}"
    )

# %%
buckets = served["item"].export_buckets(round_to=4)
ids = torch.arange(split.n_items)
print(
    "bucket lookups equal compact lookups:",
    torch.equal(buckets.lookup(ids), served["item"](ids)),
)
widths = sorted(buckets.tables)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.bar([str(w) for w in widths], [len(buckets.tables[w]) for w in widths])
ax.set_xlabel("bucket width (rounded up to a multiple of 4)")
ax.set_ylabel("item rows")
ax.set_title(f"{method.upper()} widths at density {density:g}, as buckets")
fig.tight_layout()
fig.savefig(out / "buckets.png", dpi=120)
plt.show()

# %% [markdown]
# ## A.4 What changes at millions of rows
#
# * **Offsets cost 8 bytes a row**, two floats' worth. At a mean width of 6.4 (c = 95 % of 128) they are a
#   quarter of the compact table; 32-bit offsets (enough below 2^31 values) halve that.
# * **Lookups**: a compact lookup reads one window of the values and masks it; the README's storage
#   benchmark (`benchmarks/embedding.py`) measures it against a dense table. With a million rows, training
#   through a compact table is much faster than through a dense one whose gradient spans the whole table.
# * **Sharding**: buckets shard like ordinary tables, one bucket per shard group; rounding widths to a
#   multiple of 4 or 8 keeps the number of tables small and rows aligned.
# * **Updates**: sizes are fixed after the search; new ids (cold start) need a default width, for example
#   the width of the least popular bucket, until the next search.
#
# ## Summary
#
# * Train masked, convert to compact, save atomically, load in the server: the ranking is unchanged.
# * Buckets turn a compact table into a handful of dense tables for production libraries.
# * At scale the index overhead and the number of buckets are the numbers to watch.
#
# ## Exercises
#
# 1. Serve a LightGCN model: which embeddings must the server store, the ego table or the propagated one?
#    What does that do to the memory saving?
# 2. Change the offsets to int32 and recompute the compact bytes at c = 95 %, d_max = 128.
# 3. Plot the bucket bytes against `round_to` in {1, 2, 4, 8, 16}. Where is the knee?
