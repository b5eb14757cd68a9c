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
# # Chapter 4. The variable-size embedding
#
# **What you will learn.** How to give every user and item its own embedding width, and why the way
# most published code does it (a full table times a 0/1 mask) saves no memory at all. You will count
# *bytes*, not only parameters, for four storage forms of the same widths: the dense table, the masked
# table used for training, the compact table that really shrinks, and the per-width buckets that
# production embedding libraries want. You will learn the budget language of the papers ("sparsity
# $c$ = 90 %"), and train LightGCN on MovieLens-100K with the three budget-matched baselines that every
# search method of the later chapters must beat: equal sizes (ES), mixed random sizes (MR) and the
# frequency rule of mixed-dimension embeddings (MDE).
#
# **What you need.** Chapters 1 to 3 (the memory arithmetic, the protocol, the backbones) and
# MovieLens-100K in the cache. A few minutes at the default parameters; the full run (all three budgets,
# every model to convergence) takes longer: the note under the title gives the published run's wall time.

# %% tags=["parameters"]
# Parameters (papermill): CI defaults; the full run is noted on each line.
dataset = "ml-100k"  # full run: "ml-100k"
backbone = "lightgcn"  # full run: "lightgcn"
d_max = 64  # full run: 64 (the backbone protocol of Chapter 3)
sparsities = [0.8, 0.95]  # full run: [0.8, 0.9, 0.95] (the papers' c: pruned fractions)
methods = ["es", "mr", "mde"]  # full run: ["es", "mr", "mde"]
alpha = 0.3  # full run: 0.3 (MDE temperature)
epochs = 3  # full run: 300 (early stopping on validation NDCG@20)
patience = 10  # full run: 40 (narrow tables plateau for ~20 epochs, see Section 4.6)
seed = 0
out_dir = "results/ch04"  # figures and JSON go here
stored_runs = "../evidence"  # full run: the same (the evidence store of the grids, 4.8)

# %%
# A bad value stops the chapter here, in one line, before any work (see the Preface).
from recsize.params import check_parameters

check_parameters(
    globals(),
    dataset="dataset",
    backbone="top-k backbone",
    d_max="positive int",
    sparsities=["sparsity"],
    methods=["baseline method"],
    alpha="number in [0, 1]",
    epochs="positive int",
    patience="non-negative int",
    seed="non-negative int",
    out_dir="path",
    stored_runs="path",
)

# %%
import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from recsize import budget
from recsize.data import prepare
from recsize.embedding import CompactEmbedding, Embedding, MaskedEmbedding
from recsize.search import baseline_sizes, role_counts, run_baseline
from recsize.train import default_config, fit

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 4.1 One width per row
#
# A variable-size table has a full width $d_{max}$ and gives row $n$ a *size* $d_n \in [0, d_{max}]$.
# Every method in this book uses the same **prefix rule**: row $n$ keeps its *first* $d_n$ dimensions,
# and a lookup always returns a $d_{max}$-wide vector whose dimensions beyond $d_n$ are zero. Zero-padding
# is what makes mixed widths harmless for every backbone: an inner product $\langle e_u, e_i\rangle$ simply
# runs over the shared prefix, and an MLP sees zeros where a row has no dimensions.
#
# The training form is `MaskedEmbedding`: the full $N \times d_{max}$ table $E$ times a prefix mask,
# $e_n = E_n \odot m_n$ with $m_{n,s} = 1$ for $s < d_n$. A toy table of five rows, $d_{max} = 8$:

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(seed)
toy = MaskedEmbedding(num_rows=5, d_max=8, sizes=[8, 4, 2, 1, 0])
print("sizes:", toy.sizes.tolist())
print("masks m_n (one row per table row):")
print(toy.mask().int())
print("which lookup entries are non-zero:")
print((toy(torch.arange(5)) != 0).int())

# %% [markdown]
# Because the lookup *multiplies* by the mask, back-propagation gives exactly zero gradient to every
# entry outside it: the hidden dimensions of a narrow row are not trained, only hidden. And because the
# mask is computed from a `sizes` buffer at every lookup, a search method can change the sizes between
# two iterations with `set_sizes` without rebuilding the model or its optimizer:

# %%
# NBVAL_CHECK_OUTPUT
loss = toy(torch.arange(5)).pow(2).sum()  # any loss will do
loss.backward()
grad, mask = toy.weight.grad, toy.mask()
print(
    "gradient entries outside the mask:",
    int((mask == 0).sum()),
    "| all exactly zero:",
    bool((grad[mask == 0] == 0).all()),
)
print(
    "non-zero gradient entries per row:",
    (grad != 0).sum(1).tolist(),
    "= sizes",
    toy.sizes.tolist(),
)

weight_before = toy.weight
toy.set_sizes([2, 2, 8, 0, 1])
print(
    "after set_sizes:",
    toy.sizes.tolist(),
    "| same parameter tensor:",
    toy.weight is weight_before,
)
print("kept parameters sum(d_n):", toy.num_parameters(), "of", toy.num_rows * toy.d_max)

# %% [markdown]
# Two hooks let the search methods of later chapters reuse this table rather than write their own:
# `set_soft_weights(weights, row_block)` multiplies every lookup by learnable per-dimension weights
# shared by a block of rows (DNIS, Chapter 5), and `forward(ids, gates=...)` multiplies by per-instance
# gates (iHAS, Chapter 7).
#
# ## 4.2 Masks versus memory
#
# Now the point of this chapter. The official codes of CIESS, DNIS and PEP all keep their models this
# way, a dense table times a mask, from search to the final evaluation. The papers count kept parameters,
# $\sum_n d_n$, but the model in memory still stores every one of the $N \cdot d_{max}$ floats. To save memory the kept values
# must be stored without the zeros. recsize offers two such forms:
#
# * `CompactEmbedding`: the kept values back to back, row $n$ at `values[offsets[n]:offsets[n+1]]`,
#   plus $N + 1$ int64 offsets and $d_{max}$ floats of padding after the last row (so that every row can
#   be read as one $d_{max}$-wide window; the part beyond $d_n$ is masked away);
# * `EmbeddingBuckets`: one plain dense table per distinct width, plus a row $\to$ (bucket, position)
#   index. This is what production embedding libraries (which want dense tables of a few fixed widths)
#   can load. They often also want widths that are a multiple of 4 (aligned memory, vector
#   instructions), so widths can be rounded *up* to a multiple of 4 at export, at a small cost in bytes.
#
# Take the item table of MovieLens-100K at $d_{max} = 64$ with MDE sizes at a 10 % budget (the rule is
# explained in Section 4.4), and measure what each form really stores:

# %%
split = prepare(dataset, "random-811", seed=seed, verbose=True)
counts = role_counts(split)  # training frequency of every user and every item

# %%
# NBVAL_CHECK_OUTPUT
item_sizes = baseline_sizes("mde", counts["item"], d_max, density=0.1, alpha=alpha)
dense = Embedding(split.n_items, d_max)
masked = MaskedEmbedding(split.n_items, d_max, item_sizes)
compact = CompactEmbedding.from_masked(masked)
buckets = compact.export_buckets()  # one dense table per exact width
buckets4 = compact.export_buckets(round_to=4)  # widths rounded up to a multiple of 4

forms = [
    ("dense (nn.Embedding-like)", dense.num_parameters(), dense.num_bytes()),
    ("masked (dense x mask)", masked.num_parameters(), masked.num_bytes()),
    ("compact (values + offsets)", compact.num_parameters(), compact.num_bytes()),
    (
        f"buckets, exact widths ({len(buckets.tables)})",
        compact.num_parameters(),
        buckets.num_bytes(),
    ),
    (
        f"buckets, widths % 4 ({len(buckets4.tables)})",
        int(budget.round_widths(item_sizes, d_max, 4).sum()),
        buckets4.num_bytes(),
    ),
]
print(f"{split.n_items} items, d_max = {d_max}, mean width {item_sizes.mean():.2f}")
print(
    f"{'form (number of buckets)':32s} {'floats used':>12s} {'bytes':>10s} {'':>10s} "
    f"{'vs dense':>9s}"
)
for name, params, nbytes in forms:
    print(
        f"{name:32s} {params:12,d} {nbytes:10,d} {budget.format_bytes(nbytes):>10s} "
        f"{nbytes / dense.num_bytes():9.3f}"
    )

# %% [markdown]
# The masked table keeps 10 % of the parameters and costs *more* bytes than the dense one (it also stores
# the sizes). The compact table costs about an eighth. The bytes above are measured on the modules;
# `recsize.budget` computes the same numbers from the sizes alone, which is how the search chapters
# report memory without building anything:

# %%
# NBVAL_CHECK_OUTPUT
arithmetic = budget.storage_bytes(item_sizes, d_max, round_to=4)
print(arithmetic)
print(
    "measured == arithmetic:",
    arithmetic
    == {
        "dense": dense.num_bytes(),
        "masked": masked.num_bytes(),
        "compact": compact.num_bytes(),
        "buckets": buckets4.num_bytes(),
    },
)
values = int(item_sizes.sum()) * budget.FLOAT_BYTES
offsets = (len(item_sizes) + 1) * budget.INDEX_BYTES
padding = d_max * budget.FLOAT_BYTES
print(
    f"compact = values {values:,} + offsets {offsets:,} + padding {padding:,} = "
    f"{values + offsets + padding:,} bytes"
)

# %% [markdown]
# **The index is not free.** Every row of the compact table pays 8 bytes of offset, as much as two
# float32 values. At small budgets the mean width is only a few dimensions, and the offsets become a large
# share of the storage. The buckets pay twice that (bucket and position per row). A search method that
# claims "95 % of the parameters pruned" saves less than 95 % of the bytes:

# %%
# NBVAL_CHECK_OUTPUT
n_rows = split.n_users + split.n_items
print(f"{n_rows:,} rows (users + items)")
print(
    f"{'d_max':>5s} {'c':>5s} {'mean width':>10s} {'params saved':>12s} "
    f"{'bytes saved':>11s} "
    f"{'offsets share':>13s} {'buckets%4 saved':>15s}"
)
for dm in (64, 128):
    for c in (0.8, 0.9, 0.95):
        sizes = baseline_sizes(
            "es", np.ones(n_rows), dm, budget.density_from_sparsity(c)
        )
        b = budget.storage_bytes(sizes, dm, round_to=4)
        print(
            f"{dm:5d} {c:5.0%} {sizes.mean():10.1f} "
            f"{1 - budget.density(sizes, dm):12.1%} "
            f"{1 - b['compact'] / b['dense']:11.1%} "
            f"{(n_rows + 1) * 8 / b['compact']:13.1%} "
            f"{1 - b['buckets'] / b['dense']:15.1%}"
        )

# %% [markdown]
# At $c = 95$ % and $d_{max} = 64$ the mean width is 3.2 floats (12.8 bytes) against 8 bytes of offset:
# the offsets are more than a third of the compact table, which saves 92 % of the bytes rather than 95 %.
# With equal sizes the buckets degenerate to one or two dense tables and their index is pure overhead;
# rounding 3 or 4 up to 4 costs another few percent. (int32 offsets would halve the index for any table
# under two billion values; recsize keeps int64 for simplicity, and Exercise 2 asks what it would buy.)
#
# ## 4.3 Train masked, then really shrink, bit for bit
#
# The conversion between the forms must not change a single lookup, otherwise the quality measured during
# training is not the quality served. recsize guarantees that the lookups are *equal* (the kept entries bit
# for bit, exact zeros beyond), and its unit tests check it on random sizes with property-based testing.
# Here on the item table (with trained-looking random values):

# %%
# NBVAL_CHECK_OUTPUT
ids = torch.arange(split.n_items)
with torch.no_grad():
    reference = masked(ids)
    print(
        "masked -> compact, equal lookups:         ",
        torch.equal(compact(ids), reference),
    )
    print(
        "kept values bit for bit:                  ",
        torch.equal(compact.kept_values(), masked.weight[masked.mask().bool()]),
    )
    print(
        "compact -> masked, equal lookups:         ",
        torch.equal(compact.to_masked()(ids), reference),
    )
    compact.save(out / "items_compact.pt")
    print(
        "save -> load, equal lookups:              ",
        torch.equal(CompactEmbedding.load(out / "items_compact.pt")(ids), reference),
    )
    print(
        "buckets (exact widths), equal lookups:    ",
        torch.equal(buckets.lookup(ids), reference),
    )
    print(
        "buckets (widths % 4), equal lookups:      ",
        torch.equal(buckets4.lookup(ids), reference),
    )

# %% [markdown]
# The rounded buckets still return the same vectors: the extra dimensions of a rounded-up row are stored
# as zeros. The compact table is also an `nn.Module` whose values are an `nn.Parameter`, so when the
# sizes are fixed (a baseline, or the retraining stage of a search) one can train it directly with
# `recsize.embedding.compact_factory` and never hold the dense table at all.
#
# The usual recipe, and what `run_baseline` below does, is: build the backbone with
# `masked_factory(sizes_by_role, d_max)`, train it with the trainer of Chapter 3, then call
# `compact_tables(model)` to replace every masked table by its compact copy. Appendix A takes the compact
# tables on to serving: loading them, exporting buckets, and what changes at millions of rows.
#
# ## 4.4 The budget language of the papers
#
# Papers state budgets as a **sparsity** $c$: the pruned fraction of the $d_{max}$-wide table. recsize
# states them as a **density**, the kept fraction $\sum_n d_n / (N d_{max}) = 1 - c$, which is what
# `--budget` takes (`--sparsity` takes $c$). A budget fixes the total of kept parameters, computed once
# and rounded (halves up); every method of this book then hits that total *exactly*, so all are compared
# at the same memory, never at "about the same".

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"{'c (pruned)':>10s} {'density':>8s} {'mean width d_max=64':>20s} "
    f"{'d_max=128':>10s} "
    f"{'kept params, ml-100k, d_max=' + str(d_max):>32s}"
)
for c in (0.8, 0.9, 0.95):
    density = budget.density_from_sparsity(c)
    print(
        f"{c:10.0%} {density:8.0%} {density * 64:20.1f} {density * 128:10.1f} "
        f"{budget.target_parameters(density, n_rows, d_max):32,d}"
    )
for bad in (10, 0, 1.5):
    try:
        budget.check_budget(bad)
    except ValueError as e:
        print(textwrap.fill(f"check_budget({bad}): {e}", 88, subsequent_indent="    "))

# %% [markdown]
# ## 4.5 Three baselines that hit the budget exactly
#
# A search method is only interesting if it beats simple rules at the same budget. recsize implements
# three, all giving every row at least one dimension (`recsize.search.baselines`):
#
# * **ES, equal sizes**: every row gets the same width, $\lfloor B / N \rfloor$ for a budget of $B$
#   parameters over $N$ rows; the remainder goes one dimension each to the most frequent rows. This is
#   the uniform width of Chapter 1, at the budget.
# * **MR, mixed random sizes**: widths proportional to seeded uniform random scores, so they spread from 1 to
#   about twice the mean. It tells us what *any* non-uniform assignment costs or gains.
# * **MDE, the frequency rule** of mixed-dimension embeddings (Ginart et al., 2019): $d_n \propto
#   p_n^{\alpha}$, with $p_n$ the row's share of training interactions and the temperature
#   $\alpha \in [0, 1]$ ($\alpha = 0$ is ES; 0.3 is the default of the reference code). The paper applies
#   it to whole tables of a blocked model; recsize applies it per row, which is our choice.
#
# MR and MDE find the scale $s$ with $\sum_n \mathrm{clip}(s\,\mathrm{score}_n, 1, d_{max})$ equal to the
# budget by bisection, then round with the largest-remainder rule so that the integer widths sum to the
# total exactly. The check below is the budget check every search chapter repeats:

# %%
# NBVAL_CHECK_OUTPUT
all_sparsities = sorted(set(sparsities) | {0.8, 0.9, 0.95})
sizes_by = {}
print(
    f"{'c':>4s} {'method':6s} {'role':5s} {'min':>4s} {'median':>6s} {'max':>4s} "
    f"{'mean':>6s} "
    f"{'sum(d_n)':>9s} {'target':>8s} {'exact':>6s}"
)
for c in all_sparsities:
    density = budget.density_from_sparsity(c)
    for method in methods:
        for role in ("user", "item"):
            s = baseline_sizes(
                method, counts[role], d_max, density, seed=seed, alpha=alpha
            )
            sizes_by[c, method, role] = s
            target = budget.target_parameters(density, len(s), d_max)
            print(
                f"{c:4.0%} {method:6s} {role:5s} {s.min():4d} {np.median(s):6.1f} "
                f"{s.max():4d} "
                f"{s.mean():6.2f} {s.sum():9,d} {target:8,d} "
                f"{str(s.sum() == target):>6s}"
            )

# %% [markdown]
# Note that the budget is applied per table, so users and items each keep the same fraction. (In
# `run_baseline` the seed of MR differs per table, `seed + i` for the i-th role, so users and items get
# different random draws; the table above draws both with the same seed.) How do the three rules spend
# the budget? Width against popularity for the items at $c = 90$ %:

# %%
density = budget.density_from_sparsity(0.9)
popularity = counts["item"]
fig, ax = plt.subplots(figsize=(8.5, 4))
for method, marker in zip(methods, "o^s"):
    s = baseline_sizes(method, popularity, d_max, density, seed=seed, alpha=alpha)
    ax.scatter(
        popularity + 1,
        s,
        s=8,
        alpha=0.3 if method == "mr" else 0.7,
        marker=marker,
        zorder=1 if method == "mr" else 2,
        label=f"{method} (mean {s.mean():.1f})",
    )
ax.set_xscale("log")
ax.set_xlabel("item training interactions + 1 (log scale)")
ax.set_ylabel("width $d_n$")
ax.set_title(f"Width against popularity, {dataset} items, c = 90 % (d_max = {d_max})")
ax.grid(alpha=0.3)
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the cloud, not on it
fig.tight_layout()
fig.savefig(out / "width_vs_popularity.png", dpi=120)
plt.show()

# %% [markdown]
# ES is a flat line, MR a random cloud, and MDE a curve: with $\alpha = 0.3$ an item rated 300 times gets
# $(300/3)^{0.3} \approx 4$ times the width of an item rated 3 times, and the never-rated items keep the
# minimum of one dimension. Which of the three wins is an empirical question, and the answer is the bar
# every search method must clear.
#
# ## 4.6 The baselines on MovieLens-100K with LightGCN
#
# For each budget and rule, `run_baseline` computes the sizes from the training frequencies, builds the
# backbone with masked tables initialised like its plain tables, trains it with the trainer of Chapter 3
# (early stopping on validation NDCG@20), converts the tables to compact storage, and evaluates the test
# split *again* with the compact tables. The command line does the same:
# `recsize search --method mde --sparsity 0.9 --backbone lightgcn --dataset ml-100k`.
#
# A note on LightGCN: the sizes apply to the ego (layer-0) embeddings, which are the stored parameters.
# Propagation runs at $d_{max}$, so after one layer a narrow row borrows its neighbours' dimensions.
# Memory shrinks; compute does not. We also train the full-width model once, as the reference.

# %%
config = default_config(
    backbone, epochs=epochs, seed=seed, patience=patience, progress=False
)
full = fit(backbone, split, d_max, config)
full_bytes = sum(t.num_bytes() for t in full.model.embedding_tables().values())
print(
    f"full width d_max={d_max}: test Recall@20 {full.test['recall@20']:.4f}  NDCG@20 "
    f"{full.test['ndcg@20']:.4f}\n  {budget.format_bytes(full_bytes)}, "
    f"best epoch {full.best_epoch}, {full.seconds:.1f} s"
)

runs = []
for c in sparsities:
    for method in methods:
        run = run_baseline(
            backbone,
            split,
            method,
            budget.density_from_sparsity(c),
            d_max,
            config,
            seed=seed,
            alpha=alpha,
        )
        total = run.memory["total"]
        runs.append(
            {
                "method": method,
                "sparsity": c,
                "density": run.density,
                "parameters": total["parameters"],
                "masked_bytes": total["masked"],
                "compact_bytes": total["compact"],
                "best_epoch": run.result.best_epoch,
                "seconds": run.result.seconds,
                "test": run.result.test,
                "test_compact": run.test_compact,
            }
        )
        test = run.result.test
        print(
            f"c={c:4.0%} {method:4s} test Recall@20 {test['recall@20']:.4f}  "
            f"NDCG@20 {test['ndcg@20']:.4f}  best epoch "
            f"{run.result.best_epoch}, {run.result.seconds:.1f} s\n"
            f"{'':10s}masked {budget.format_bytes(total['masked'])}, "
            f"compact {budget.format_bytes(total['compact'])}; same metrics after "
            f"compaction: {run.test_compact == run.result.test}"
        )
summary = {
    "dataset": dataset,
    "backbone": backbone,
    "d_max": d_max,
    "epochs": epochs,
    "seed": seed,
    "full": {"bytes": full_bytes, "test": full.test, "best_epoch": full.best_epoch},
    "runs": runs,
}
_ = (out / "baselines.json").write_text(json.dumps(summary, indent=2))

# %% [markdown]
# "Same metrics after compaction: True" is the end-to-end form of Section 4.3: the compact tables produce
# the very same rankings. Now quality against memory. Each baseline is drawn twice: a filled marker at
# its compact bytes (what it really needs) and a hollow one at its masked bytes (what the usual code keeps
# in memory, the same as the full model's for every budget):

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
for ax, metric in zip(axes, ("recall@20", "ndcg@20")):
    for method, marker in zip(methods, "o^s"):
        mine = sorted(
            (r for r in runs if r["method"] == method), key=lambda r: r["compact_bytes"]
        )
        (line,) = ax.plot(
            [r["compact_bytes"] for r in mine],
            [r["test"][metric] for r in mine],
            marker=marker,
            label=f"{method}, compact",
        )
        ax.scatter(
            [r["masked_bytes"] for r in mine],
            [r["test"][metric] for r in mine],
            marker=marker,
            facecolors="none",
            edgecolors=line.get_color(),
            label=f"{method}, masked",
        )
    ax.scatter(
        [full_bytes],
        [full.test[metric]],
        marker="*",
        s=120,
        color="black",
        label="full width",
    )
    ax.set_xscale("log")
    # one tick per budget, labelled with its bytes and its sparsity (exact budgets: the
    # three baselines land on the same bytes), rather than a label next to every point
    sparsity_at = {r["compact_bytes"]: r["sparsity"] for r in runs} | {full_bytes: 0.0}
    ticks = sorted(sparsity_at)
    ax.set_xticks(
        ticks, [f"{budget.format_bytes(t)}\nc = {sparsity_at[t]:.0%}" for t in ticks]
    )
    ax.xaxis.set_minor_formatter(lambda x, _: "")
    ax.set_xlabel("embedding bytes, users + items (log scale)")
    ax.set_ylabel(f"test {metric.replace('recall', 'Recall').replace('ndcg', 'NDCG')}")
    ax.grid(alpha=0.3)
# one legend for both panels, below them, in a size that reads
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
fig.suptitle(f"Quality against bytes, {backbone} on {dataset}, d_max = {d_max}")
fig.tight_layout(rect=(0, 0.13, 1, 1))
fig.savefig(out / "quality_vs_bytes.png", dpi=120)
plt.show()

# %% [markdown]
# Read the shape, not the values, where the note under the title says this page shows a CI run (a few
# epochs). For the full run (`epochs=300`, the three budgets) the CIESS paper gives an ordering to
# compare with, on another protocol (ML-1M,
# 50/25/25 split, $d_{max} = 128$, LightGCN): ES ahead of MR at every budget, for example Recall@20
# 0.2248 against 0.2004 at $c = 80$ %. The published run of this page (one seed, patience 40) agrees:
# ES is ahead of MR at every budget. A random assignment wastes
# width on rows that cannot use it and starves rows that could. The hollow markers make this chapter's
# main point visually: trained with masks, every budget costs the memory of the full model.
#
# ## 4.7 What the storage benchmark measured
#
# `benchmarks/embedding.py` measures, for an ml-100k-sized table (2,625 rows) and a 1M-row table, at
# densities 5 / 10 / 20 % of $d_{max}$ = 64 and 128 (MDE widths on Zipf frequencies), the bytes of the
# dense, masked and compact forms and the lookup speed of each, forward only and forward + backward, on
# one thread, in process CPU time. "Dense" is not one thing once training counts, so it measures three
# dense baselines and compares the compact table with the best of them: `nn.Embedding` (whose backward
# builds a gradient of the whole table), `nn.Embedding(sparse=True)` (a gradient of the batch rows only)
# and, where FBGEMM is installed, its fused kernel (the optimizer step inside the backward). Its table is
# in the README and in `benchmarks/out/embedding.txt`. On the project's 2-core CI machine it found:
#
# * the compact bytes lie within 0.6 % of the ideal $4 \sum_n d_n + 8 (N + 1)$ (the padding of $d_{max}$
#   floats is the only difference), while the masked table costs slightly more than the dense one;
# * a forward lookup through PyTorch operators runs at a tenth to a half of the best dense speed (0.09 to
#   0.49 times at 10 % density). PyTorch has no single operator for "copy the $d_n$ kept values, then
#   write $d_{max} - d_n$ zeros", so `_window_rows` reads each row as a full $d_{max}$ window, gathers its
#   mask and multiplies: three passes over the batch where the dense table makes one;
# * that one pass, written as what it is, is a twelve-line C loop (`recsize.native.SOURCE`: `memcpy` the
#   kept values, `memset` the rest). recsize compiles it with the system C compiler on first use and calls
#   it through `ctypes`; it reads only the kept values and runs at 0.44 to 0.72 times the best dense speed
#   at 10 % density (0.34 to 1.34 over all twelve tables, ahead only on the widest 1M-row rows). Without a
#   compiler the PyTorch path is used, with one warning; the lookups are bit-identical either way;
# * forward + backward, the compact table runs at 0.20 to 0.76 times the best dense baseline at 10 %
#   density, always behind `sparse=True`, and falls as the table grows and the density rises: its backward
#   builds the gradient of all its kept values, a dense gradient of the compact table. Against plain
#   `nn.Embedding`, whose gradient is a full $N \times d_{max}$ tensor at every step, it is 3 to 33 times
#   *faster* at 1M rows; but nobody trains a table of that size with a dense gradient.
#
# So compact storage is the memory win it promises, and with the one-pass loop it serves at roughly half
# to three quarters of the best dense speed; it is not a speed win, for serving or training. The stored
# table, if present, and a quick measurement on your own machine
# (one table of ml-100k's size, forward only; timings on a shared or busy machine are noisy):

# %%
# the storage columns and the summary of the stored run (the speed columns of every
# table are in the file itself)
stored = Path("../benchmarks/out/embedding.txt")
if not stored.exists():
    print("run `python benchmarks/embedding.py` from the repository root")
else:
    table, summary = stored.read_text().split("\n\n", 1)
    lines = [line.split(" | ")[0].rstrip() for line in table.splitlines()]
    for line in [line for line in lines if line] + [""] + summary.splitlines():
        print(textwrap.fill(line, 88, subsequent_indent="    ") if line else "")

# %%
import contextlib

from torch.utils import benchmark

from recsize import native

batch = torch.from_numpy(np.random.default_rng(seed).choice(split.n_items, 4096))
dense_torch = torch.nn.Embedding(
    split.n_items, d_max
)  # the benchmark's dense reference
print("native one-pass lookup available:", native.available())
for name, table, path in (
    ("dense", dense_torch, None),
    ("masked", masked, None),
    ("compact", compact, "native"),
    ("compact", compact, "torch"),
):
    with (
        torch.no_grad(),
        native.disabled() if path == "torch" else contextlib.nullcontext(),
    ):
        t = benchmark.Timer(
            "table(batch)", globals={"table": table, "batch": batch}
        ).blocked_autorange(min_run_time=0.2)
    label = f"{name} ({path})" if path else name
    print(
        f"{label:17s} forward, 4,096 item ids: {t.median * 1e6:8.1f} us  "
        f"({4096 / t.median / 1e6:.1f} M rows/s)"
    )

# %% [markdown]
# ## 4.8 Element-wise masks: magnitude pruning and PEP
#
# A prefix keeps each row's *first* $d_n$ dimensions, so one number per row describes it. Pruning
# methods keep arbitrary entries instead: magnitude pruning (MagPrune) keeps the largest $|E_{nj}|$
# of a trained table, PEP (Liu et al., ICLR 2021) learns a threshold per entry. Their compact form
# is CSR-style (`recsize.embedding.CSREmbedding`): the kept values, a row offset per row, and a
# column index *per entry* (one byte while $d_{max} \le 256$). That index is the price of the
# freedom, and it changes what a memory budget buys. The VLDB'24 benchmark counts 4-byte column
# indices, so at $d = 16$ half the dense memory keeps only 22 % of the entries:

# %%
# NBVAL_CHECK_OUTPUT
n = 1_000_000
print(
    f"{'d':>4s}{'prefix (compact)':>18s}{'CSR, uint8 index':>18s}"
    f"{'CSR, int32 index':>18s}"
)
for d in (16, 64):
    half = budget.dense_bytes(n, d) / 2
    kept = [
        budget.entries_for_bytes(half, n, d, form) / (n * d)
        for form in ("compact", "csr", "csr_int32")
    ]
    print(f"{d:>4d}" + "".join(f"{k:>18.1%}" for k in kept))

# %% [markdown]
# So recsize states element-wise budgets in **bytes**: `--budget 0.1` for MagPrune or PEP means a
# tenth of the dense table's bytes, index included. That is less than the prefix methods' compact
# tables take at the same `--budget`, whose row offsets come on top of their tenth of the
# parameters (below: 131 against 152 KiB at $c$ = 80 %), so `benchmarks/prune.py` also runs ES at
# exactly the pruning methods' bytes.
# recsize's MagPrune (`magprune`, its own recipe, the classic one) trains the full-width
# model, keeps the largest entries by **one threshold over all tables**
# (`prune_split="global"`; `"per-table"` gives every table the same fraction), and
# fine-tunes with the mask fixed (`ElementMaskedEmbedding`: zero gradient outside it). The
# TOIS 2025 benchmark of lightweight embeddings runs a different MagPrune, `magprune-tois`
# here (end of this section).
# PEP trains $\mathrm{sign}(v)\,
# \mathrm{relu}(|v| - \sigma(s))$ with learnable thresholds $s$, snapshots the mask when the
# kept count first falls to the budget, and retrains from the *initial* weights with that mask
# (the lottery-ticket step). With the authors' defaults ($s_0 = -15$, scale 1) the thresholds
# reach no budget on ml-100k. Their gradient through $\sigma(-15)$ is tiny, so the weight decay's pull
# towards $s = 0$ dominates, and Adam turns it into a climb of about one learning rate per step that
# stops at $\sigma(0) = 0.5$. After 300 epochs LightGCN (lr 0.01) sits there and still keeps 64.6 %
# of its entries, NeuMF (lr 0.002) 87.7 % and DeepFM (lr 0.001) 82.5 %, their thresholds still
# climbing, at 0.009 and 0.016 (`benchmarks/pep_levels.py`); a budget of half the bytes allows
# 37.5 %. NeuMF and DeepFM ran out of steps, not out of room: ml-100k gives 20 (LightGCN, NeuMF) to
# 40 (DeepFM) optimizer steps an epoch, the authors' ML-1M about 580 (batch 1,024), so a cap of 300
# epochs is roughly ten times fewer steps than 300 of theirs. recsize caps PEP by epochs like every
# other method and says so (`reached: False`): it cuts the last state to the budget by magnitude, so
# at these defaults PEP is magnitude pruning of its own trained state, rewound to the initial weights.
#
# The TOIS 2025 benchmark reaches its PEP budgets only after a per-dataset Optuna search of the
# threshold's start (-20 or -30), its weight decay (0.1) and the model's L2
# (`chenxing1999/recsys-benchmark`, e.g. `configs/gowalla/pep_find_mask08.yaml`); an independent
# reading of both codes (issue 32) reports that its Gowalla configuration, run on ml-100k, passes every target
# with a model that has learned nothing (the BPR loss stays at $\ln 2 = 0.693$): thresholds that climb
# fast enough prune whatever the loss says. A budget PEP "reaches" is worth only what its retrained
# ticket scores. The table below lists every design point of PEP against the authors' code,
# rendered from `recsize.search.departures` (MagPrune's follow, further on).

# %%
from IPython.display import Markdown

from recsize.search.departures import departures_table

Markdown(departures_table("pep"))

# %%
from recsize.search.prune import run_magprune, train_dense

dense = train_dense(backbone, split, d_max, config)
es = {r["sparsity"]: r for r in runs if r["method"] == "es"}
for c in sparsities:
    mp = run_magprune(
        backbone, split, budget.density_from_sparsity(c), d_max, config, dense=dense
    )
    line = (
        f"c={c:4.0%} MagPrune Recall@20 {mp.result.test['recall@20']:.4f} "
        f"({budget.format_bytes(mp.memory['total']['csr'])} CSR)"
    )
    if c in es:
        line += (
            f" | ES {es[c]['test']['recall@20']:.4f} "
            f"({budget.format_bytes(es[c]['compact_bytes'])} compact)"
        )
    print(line)

# %% [markdown]
# In a CI run (a few epochs; the note under the title says which run a page shows) these numbers only
# show that the path runs. In the published run
# (one seed, patience 40) MagPrune stays below ES at every budget, though in fewer bytes; the converged,
# three-seed comparison at equal bytes is an experiment's job (`recsize experiment run prune_lightgcn20`,
# stored in `evidence/prune_lightgcn20.jsonl`). There, on LightGCN with patience 20, PEP's rewound
# tickets keep 0.380 / 0.346 / 0.296 / 0.213 Recall@20 at $c$ = 50 / 80 / 90 / 95 %, MagPrune's
# fine-tuned masks 0.379 / 0.351 / 0.317 / 0.270 and ES at equal bytes 0.384 / 0.370 / 0.329 / 0.252:
# on LightGCN, rewinding costs more than fine-tuning as the budget tightens (on DeepFM it is the other
# way round, Chapter 5). On MF and NeuMF, whose scores are dot products of the stored rows, MagPrune
# collapses from 80 % on: Chapter 5 shows why (a user's and an item's pruned rows share almost no
# dimensions).
#
# ### MagPrune as the TOIS'25 benchmark runs it, and what a budget counts
#
# The TOIS 2025 benchmark (Tran et al., `chenxing1999/recsys-benchmark`) found that
# magnitude pruning rivals the complex methods. Its MagPrune is not recsize's
# `magprune`: it prunes every table on its own, protects each row's `min_item` largest
# entries (`min_item` chosen by a binary search on validation NDCG) and does **not**
# fine-tune. `magprune-tois` (`recsize.search.magprune_tois`, `recsize search --method
# magprune-tois`) runs it as its code does, except where the second table below says; on
# DeepFM the search reads validation AUC. The floor is what a dot product needs: a row
# that keeps its largest entries keeps dimensions that a user's and an item's rows
# share. It also prunes to a different count. The benchmark, like the papers, keeps
# $1 - c$ of the **parameters**; recsize's grids keep $1 - c$ of the **bytes**, column
# indices and row offsets included, because that is what a deployment stores and pays.
# At $d_{max} = 64$ an entry costs 5 bytes instead of 4 and a row 8 bytes of offset, so
# equal bytes keep fewer entries, far fewer as $c$ grows. `magprune-params` and
# `magprune-tois-params` run the two procedures at equal parameters. The tables list
# both MagPrunes against the benchmark's code.

# %%
Markdown(departures_table("magprune"))

# %%
Markdown(departures_table("magprune-tois"))

# %% [markdown]
# The stored three-seed grids, read from the evidence store (`evidence/NAME.jsonl`,
# printed in full by `recsize experiment report NAME`): `prune_lightgcn20` (LightGCN
# with patience 20), `prune_neumf` and `prune_deepfm` (DeepFM on the CTR view). Both
# MagPrunes in both accountings, next to ES at equal bytes: mean test quality over the
# seeds, the stored CSR bytes, the kept entries, and `min_item` per seed. This cell
# runs nothing.

# %%
from recsize.experiments import load_grids
from recsize.search.compare import LABELS, paired_summary

mag = {"es-bytes": "ES, equal bytes", "magprune": "MagPrune, equal bytes",
       "magprune-tois": "TOIS, equal bytes",
       "magprune-params": "MagPrune, equal params",
       "magprune-tois-params": "TOIS, equal params"}
grids = load_grids(("prune_lightgcn20", "prune_neumf", "prune_deepfm"), stored_runs)
if not grids:
    print(f"no stored grid in {stored_runs}: recsize experiment run NAME")
for g in grids.values():
    print(f"\n{g.backbone}: test {LABELS[g.metric]}, mean over the seeds")
    for row in paired_summary(g.runs, "es-bytes", g.metric, mag):
        cells = list(row["cells"].values())
        kib = np.mean([r["bytes"] for r in cells]) / 1024
        kept = np.mean([r["kept"] for r in cells])
        floor = ", ".join(str(r["min_item"]) for r in cells if "min_item" in r)
        c = f"{row['sparsity']:.0%}" if row["method"] == "es-bytes" else ""
        line = f"{c:>4s} {mag[row['method']]:23s}{row['mean']:7.4f} ({len(cells)})"
        line += f"{kib:7.0f} KiB{kept:9,.0f} kept"
        print(line + (f"  min_item {floor}" if floor else ""))

# %% [markdown]
# What the stored grids show. Fine-tuning is most of the difference. On LightGCN and on
# DeepFM the benchmark's masks, evaluated as pruned, fall far behind recsize's
# fine-tuned ones from 80 % on. On LightGCN the byte budgets leave room for a floor of
# at most 3 entries per row at 90 % and none at 95 %, and at 90 % the search, finding
# `min_item` = 0 above 1, stops at 0 (each cell keeps every value it tried,
# `min_item_values`; `search="all"` tries them all). On NeuMF it is the other way round
# at the tight budgets: the floor keeps dimensions that a user's and an item's rows
# share, and the benchmark's masks beat recsize's fine-tuned global threshold at 90 and
# 95 %, without any training, though both stay far behind ES. At equal parameters both
# procedures keep more entries, in more bytes, and score higher with them (recsize's
# fine-tuned MagPrune then leads ES on LightGCN at 90 and 95 %): what they gain is the
# larger budget. A deployment stores, and pays, the
# bytes; so the grids, and Chapter 8's verdict, compare at equal bytes and show the
# parameter count beside them.
#
# ## Summary
#
# * A variable-size table gives row $n$ its first $d_n$ of $d_{max}$ dimensions and returns zero-padded
#   $d_{max}$ vectors, so every backbone accepts mixed widths unchanged.
# * Training with a mask is convenient (sizes change in place, gradients outside the mask are exactly
#   zero) but stores the whole table: the masked model costs the memory of the full model at every budget.
# * The compact form (values + offsets) really shrinks, to within 1 % of the ideal; the buckets form is what
#   production libraries load, optionally with widths rounded to a multiple of 4. Conversions are bit-exact.
# * The index is not free: 8 bytes of offset per row is a third of the compact bytes at $c$ = 95 % and
#   $d_{max}$ = 64. Report bytes, not only parameters.
# * Element-wise masks (MagPrune, PEP) are stored CSR-style; their column indices cost memory, so
#   their budgets are bytes, and a byte budget keeps fewer entries than a parameter budget suggests.
# * PEP's learned thresholds climb about one learning rate per step. On LightGCN (lr 0.01) they stop
#   at half their scale; on NeuMF and DeepFM they are still near 0.009 and 0.016 after 300 epochs:
#   they ran out of steps. At its authors' defaults PEP reaches no budget on ml-100k, and its masks
#   are its last state cut by magnitude.
# * The papers' sparsity $c$ is a pruned fraction; recsize's budget is the density $1 - c$, hit exactly by
#   every method. ES, MR and MDE are the budget-matched baselines every search method must beat.
#
# ## Exercises
#
# 1. Run the chapter with the full-run parameters. At which budget does MDE overtake ES, if at all? Try
#    $\alpha = 0.1$ and $0.5$.
# 2. Recompute the "bytes saved" table of Section 4.2 with int32 offsets (4 bytes per row). How much does
#    the compact table save at $c$ = 95 % then? What is the largest table for which int32 offsets suffice?
# 3. The buckets store a row $\to$ (bucket, position) index of 16 bytes per row. Design an index for
#    buckets whose rows are sorted by width so that it needs no per-row entry at all. What does a lookup
#    cost then?
# 4. Train a compact model directly (`fit(..., embedding=compact_factory(sizes, d_max))`) with ES sizes at
#    $c$ = 90 %. Is the result the same as with the masked factory? Why (not)?
