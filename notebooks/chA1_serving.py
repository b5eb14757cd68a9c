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
# # Appendix A. Serving variable-size embeddings
#
# **What you will learn.** How the widths found by a search become a model you can ship: saving and
# loading compact tables, checking that the served model ranks exactly like the trained one, exporting
# per-width buckets, and the real production path: the buckets as a TorchRec collection, sharded by its
# planner across processes, and served quantised (FP16, INT8) — with what each step costs in bytes and
# quality, and what changes at the scale of millions of rows.
#
# **What you need.** Chapter 4 (the variable-size core). MovieLens-100K in the cache. Sections A.4-A.6
# need TorchRec: `pip install -e ".[torchrec]" && pip install --no-deps torchrec==1.8.0` (without it they
# print that line and nothing else). About a minute.

# %% tags=["parameters"]
# Parameters (papermill): CI defaults; the full run is noted on each line.
dataset = "ml-100k"
backbone = "mf"  # full run: "mf" (any top-k backbone works)
method = "mde"  # full run: "mde" (or "es", "mr", or the widths of a search method)
density = 0.1  # full run: 0.1 (c = 90 % pruned)
d_max = 64  # full run: 64
epochs = 5  # full run: 300
seed = 0
# full run: the same file (benchmarks/torchrec_serving.py, Section A.6)
benchmark_file = "../benchmarks/out/torchrec_serving.json"
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
    benchmark_file="path",
    out_dir="path",
)

# %%
import json
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
# ## A.4 The buckets as a TorchRec collection
#
# TorchRec, PyTorch's library of sharded embedding tables (on FBGEMM's kernels), has one width per
# *table*, and its kernels want widths divisible by 4. `export_tables` therefore rounds every row's
# width up to a multiple of 4 (the widest bucket to $d_{max}$ rounded the same way) and makes one
# `EmbeddingBagConfig` per (role, bucket), with the weights and an id -> (bucket, row) index; rows of
# width 0 live in no table. `BucketLookup` turns a batch of global ids into the `KeyedJaggedTensor` the
# collection reads (one key per bucket table; an id is a bag of one row under its bucket's key and an
# empty bag under the others) and returns the zero-padded $d_{max}$ vectors of the compact lookup, bit
# for bit. Its output is multiplied by each row's prefix mask, so training through the buckets moves the
# kept entries only, as training the compact table does.

# %%
import logging
import warnings

from recsize.evaluate import evaluate_topk
from recsize.torchrec_export import INSTALL, export_tables, has_torchrec
from recsize.torchrec_lookup import BucketLookup, DotScorer, quantise, stored_bytes
from recsize.torchrec_shard import make_plan, rank_bytes

for noisy in ("torchrec", "torch.fx._symbolic_trace"):  # import and planner chatter
    logging.getLogger(noisy).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="torchrec|fbgemm_gpu")
warnings.filterwarnings("ignore", category=FutureWarning)
torchrec_ok = has_torchrec()
if not torchrec_ok:
    print("TorchRec is not installed: A.4-A.6 print this line instead of results.")
    print(f"Install it with: {INSTALL}")

# %%
if torchrec_ok:
    export = export_tables(served)  # the compact tables loaded in A.2, by role
    lookup = BucketLookup(export)
    for name, weight in export.weights.items():
        rows, width = weight.shape
        print(f"{name:9s} {rows:5d} rows x {width:2d}")
    kjt = lookup.features({"user": torch.tensor([0, 1, 2])})
    print("keys:", kjt.keys())
    print("bag sizes, one row per key:\n", kjt.lengths().view(len(kjt.keys()), -1))
    every = {"user": users, "item": torch.arange(split.n_items)}
    with torch.no_grad():
        through = lookup(every)
    same = all(torch.equal(through[r], served[r](every[r])) for r in every)
    print("TorchRec lookups equal the compact lookups, bit for bit:", same)

# %% [markdown]
# ## A.5 A sharded plan
#
# `DistributedModelParallel` shards the collection over processes with a plan from TorchRec's planner,
# which weighs every table's bytes and lookups against each device's memory and bandwidth. The planner
# also runs in a single process: here it plans our tables for two CPU processes (`make_plan`), and
# `rank_bytes` reads the weight bytes every rank would hold off the plan. The tables go whole to one rank
# (`table_wise`) or split by rows (`row_wise`); `recsize.torchrec_shard` excludes data-parallel
# (replicated) tables unless asked, so every row exists once. The 2-process run itself needs `torchrun`:
#
# ```
# recsize export --format torchrec --out export.pt user=results/chA1/user.pt \
#     item=results/chA1/item.pt
# torchrun --nproc-per-node 2 -m recsize.torchrec_shard export.pt --check
# ```
#
# Each process ranks its share of the users through the sharded tables; `--check` compares the sharded
# forward and one SGD step (fused into the backward by FBGEMM) with one process. The tests run exactly
# this (`tests/test_torchrec_sharded.py`): the forward is bit for bit the same, the updated weights are
# the same, and the top-20 of every user equals recsize's own. One detail matters for training: TorchRec
# averages the tables' gradients over the ranks, as `DistributedDataParallel` does, so the one-process
# equivalent is the *mean* of the ranks' losses.
#
# A whole training run goes the same way (`benchmarks/torchrec_train.py`, run with `torchrun
# --nproc-per-node 2`): MF on ml-100k with MDE widths at c = 90 %, recsize's initial weights, its BPR
# batches (split over the two processes), its L2 term and early stopping. FBGEMM's CPU kernels fuse SGD
# and Adagrad into the backward, not Adam, so the tables train with Adagrad (lr 0.1, the best validation
# NDCG@20 of 0.02, 0.05 and 0.1), to convergence (at most 300 epochs, patience 10). The two processes
# reproduce the one-process run exactly (seeds 0 and 1: the same best epochs, 109 and 128, and test
# Recall@20, 0.3250 and 0.3324) and land a little above recsize's own trainer (Adam): 0.3186 and 0.3249.

# %%
if torchrec_ok:
    plan = make_plan(lookup, world_size=2)  # TorchRec's planner, in this process
    print(plan)
    per_rank = rank_bytes(plan, lookup, 2)
    print("weight bytes per rank:", ", ".join(format_bytes(b) for b in per_rank))

# %% [markdown]
# ## A.6 Quantised serving: narrow the widths, or quantise them?
#
# At serving time the tables can also shrink by precision: TorchRec's quantised collection stores FP16
# or INT8 weights (INT8 row-wise, with an FP16 scale and bias per row; every quantised row is aligned to
# 16 bytes, which costs the narrowest buckets most). `quantise` makes such a copy of the lookup, one type
# for every table or one per table. The cell serves this chapter's model three ways and evaluates each
# with recsize's full-ranking protocol (`DotScorer`: <e_u, e_i>, MF's score).

# %%
if torchrec_ok:
    print(f"{'served as':10s}{'bytes':>11s}{'Recall@20':>11s}{'NDCG@20':>9s}")
    precisions = {"float32": None, "FP16": torch.float16, "INT8": torch.qint8}
    for label, dtype in precisions.items():
        copy = lookup if dtype is None else quantise(lookup, dtype)
        scorer = DotScorer(copy, split.n_items)
        test = evaluate_topk(scorer, split, "test", ks=(20,), device="cpu")
        print(
            f"{label:10s}{format_bytes(stored_bytes(copy)):>11s}"
            f"{test['recall@20']:>11.4f}{test['ndcg@20']:>9.4f}"
        )

# %% [markdown]
# Which is better at equal bytes: narrower widths (a search) or full widths at lower precision? The
# benchmark `benchmarks/torchrec_serving.py` trains MF on ml-100k with full widths and with MDE widths at
# densities 0.5, 0.25 and 0.1, serves each as float32, FP16 and INT8, and also plans a 10M- and a
# 100M-row table with MDE widths at c = 90 % next to the dense table on 8 and 64 GPUs (the planner runs on
# the meta device: nothing is allocated). The cell prints its stored results ("x full": the tables'
# bytes over the full-width float32 tables; the int64 index comes on top).

# %%
measured = Path(benchmark_file)
if measured.exists():
    bench = json.loads(measured.read_text())
    groups = {}  # (widths, dtype) -> the runs of every seed
    for r in bench["quantisation"]:
        groups.setdefault((r["widths"], r["dtype"]), []).append(r)
    seeds = [r["seed"] for r in groups["full", "fp32"]]
    print(f"{bench['machine']}; MF, at most {bench['epochs']} epochs")
    print(f"means over seeds {seeds}")
    full = np.mean([r["tables"] for r in groups["full", "fp32"]])
    head = ("widths", "dtype", "tables", "x full", "R@20", "N@20", "best ep")
    specs = ("<10", ">6", ">11", ">8", ">8", ">8", ">8")
    print("".join(f"{h:{w}s}" for h, w in zip(head, specs)))
    for (widths, dtype), runs in groups.items():
        tables, recall, ndcg = (
            np.mean([r[k] for r in runs]) for k in ("tables", "recall@20", "ndcg@20")
        )
        print(
            f"{widths:10s}{dtype:>6s}{format_bytes(tables):>11s}{tables / full:>8.3f}"
            f"{recall:>8.4f}{ndcg:>8.4f}{max(r['best_epoch'] for r in runs):>8d}"
        )
    head = ("rows", " table", "ranks", "weights", "max/rank", "min/rank")
    specs = (">12", "<16", ">6", ">11", ">11", ">11")
    print("\n" + "".join(f"{h:{w}s}" for h, w in zip(head, specs)))
    for r in bench["planning"]:
        weights = format_bytes(r["weight_bytes"])
        most, least = (format_bytes(f(r["rank_bytes"])) for f in (max, min))
        print(
            f"{r['rows']:>12,} {r['table']:15s}{r['ranks']:>6d}{weights:>11s}"
            f"{most:>11s}{least:>11s}"
        )
else:
    script = "benchmarks/torchrec_serving.py"
    print(f"{measured} is not here: run python {script} --out {measured}")

# %% [markdown]
# What the stored run says (MF on ml-100k, three seeds, each its own split and initialisation, every
# training to convergence; the float32 rows equal recsize's own compact evaluation exactly; means over
# the seeds, and `benchmarks/README.md` has every seed):
#
# * **At equal bytes, quantising the full widths beats narrowing them.** Full width at FP16 (0.50 of the
#   float32 bytes) keeps Recall@20 0.371 where MDE at density 0.5 in float32 (0.52) has 0.356; full width
#   at INT8 (0.31) has 0.372 against 0.353 for MDE at 0.25 in float32 (0.27). Every seed agrees.
# * **Quantisation is almost free here**: INT8 moves the mean Recall@20 by at most 0.002 in every row of
#   the table, while narrowing costs from 0.003 (density 0.5 to 0.25) to 0.04 (0.25 to 0.1).
# * **Both together go furthest**: MDE 0.5 at INT8 (0.17 of the bytes) keeps 0.355, above MDE 0.25 at
#   FP16 (0.15, 0.353) and MDE 0.1 in float32 (0.12, 0.311). Quantise first, then narrow what is left.
#   MDE is a frequency rule, not a learned search; a search that narrows better (Chapters 5-7) has to
#   win back about 0.015 of Recall@20 at half the bytes to change that order.
# * **Alignment** blunts INT8 on narrow buckets: a width-4 INT8 row (4 bytes, plus 4 of scale and bias)
#   is padded to 16 bytes, as many as in float32.
#
# At scale, the searched 100M-row table holds 3.2 GiB of weights against 23.8 GiB dense. On 8 GPUs the
# planner puts every bucket table whole on one GPU (the width-8 bucket alone, 84M rows, is 2.5 GiB) and
# splits the dense table by rows over all eight (3.0 GiB each); on 64 GPUs it keeps both inside one host
# of 8 (`table_row_wise`) and leaves the other 56 empty. These are weights only; the optimizer's state
# comes on top.

# %% [markdown]
# ## A.7 What changes at millions of rows
#
# * **Offsets cost 8 bytes a row**, two floats' worth. At a mean width of 6.4 (c = 95 % of 128) they are a
#   quarter of the compact table; 32-bit offsets (enough below $2^{31}$ values) halve that.
# * **Lookups**: a compact lookup copies the kept values of each row and pads it with zeros; the README's
#   storage benchmark (`benchmarks/embedding.py`, one thread, CPU time) measures it against three dense
#   baselines, `nn.Embedding`, `nn.Embedding(sparse=True)` and FBGEMM's fused kernel, and against the
#   buckets through FBGEMM. With a million rows, training through a compact table is much faster than
#   through an `nn.Embedding` whose gradient spans the whole table, but that is not the baseline to beat:
#   against the best dense baseline (`sparse=True`) the compact forward+backward runs at 0.20-0.33x at 1M
#   rows and 10 % density, its forward at 0.66-0.72x. The buckets through FBGEMM's CPU kernels are the
#   slowest form everywhere (below 0.01 to 0.44x the best dense baseline; the "unassembled" lookup, the kept
#   values without the zero padding, included): a pooled collection writes one output slot per bucket
#   table for every id. So `CompactEmbedding` does not dispatch to FBGEMM on CPU, TorchRec present or not;
#   FBGEMM's GPU kernels were not measured here.
# * **Sharding**: buckets shard like ordinary tables (A.5): TorchRec's planner puts each bucket table
#   whole on one device or splits it by rows; rounding widths to a multiple of 4 (what FBGEMM's kernels
#   need) or 8 keeps the number of tables small and rows aligned.
# * **Updates**: sizes are fixed after the search; new ids (cold start) need a default width, for example
#   the width of the least popular bucket, until the next search.
#
# ## Summary
#
# * Train masked, convert to compact, save atomically, load in the server: the ranking is unchanged.
# * Buckets turn a compact table into a handful of dense tables for production libraries; as a TorchRec
#   collection they look up bit for bit like the compact table, shard with a planner-made plan, and
#   serve quantised.
# * At scale the index overhead and the number of buckets are the numbers to watch.
#
# ## Exercises
#
# 1. Serve a LightGCN model: which embeddings must the server store, the ego table or the propagated one?
#    What does that do to the memory saving?
# 2. Change the offsets to int32 and recompute the compact bytes at c = 95 %, d_max = 128.
# 3. Plot the bucket bytes against `round_to` in {1, 2, 4, 8, 16}. Where is the knee?
# 4. Quantise only the widest bucket table to INT8 (`quantise(lookup, {name: torch.qint8})`). How many
#    bytes does that save, and what does it cost in NDCG@20?
