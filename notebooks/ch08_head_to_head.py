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
# # Chapter 8. Head to head: every method at the same budgets
#
# **What you will learn.** How to compare embedding-size search methods fairly: the same backbone, the
# same split, the same budgets and the same retraining for all of them, quality measured with the compact
# tables a server would hold and memory measured in real bytes; how to read a *Pareto front* of quality
# against bytes; what each method costs to search, and why a search that serves several budgets at once
# must be counted once; and, from the measurements, which method to use when.
#
# **What you need.** Chapters 4 to 7 (the baselines ES / MR / MDE, DNIS, CIESS and iHAS). MovieLens-100K
# in the cache. About a minute at the default (CI) parameters, which run MF and FM with tiny schedules;
# the full run of the chapter (LightGCN and NeuMF on ml-100k, DeepFM on its CTR view, one seed, the
# reduced search schedules, 30-epoch caps) takes about half an hour on a 2-core CPU:
# `recsize book run --full --chapters ch08_head_to_head --out results/ch08-full`. The evidence of
# Sections 8.6 to 8.8 is different: converged grids over three seeds, hours of CPU per backbone, each
# declared once as an experiment (`recsize experiment list`), computed by `recsize experiment run NAME`
# and stored with the repository in `evidence/NAME.jsonl`; the chapter reads them back
# (`recsize experiment report NAME` prints one).

# %% tags=["parameters"]
# Parameters (papermill): CI defaults; the full run is noted on each line.
topk_backbones = ["mf"]  # full run: ["lightgcn", "neumf"]
ctr_backbone = "fm"  # full run: "deepfm"
sparsities = [
    0.8,
    0.9,
    0.95,
]  # full run: [0.8, 0.9, 0.95] (the papers' c; densities 0.2 / 0.1 / 0.05)
d_max = 64  # full run: 64
epochs = 3  # full run: 30 (top-k retraining cap, every method; CIESS's reference too)
patience = 3  # full run: 10 (top-k early stopping, every method)
ctr_epochs = 2  # full run: 30 (CTR retraining cap, every method)
ctr_patience = 1  # full run: 3 (validation AUC peaks within a few epochs)
warm_epochs = 2  # full run: 20 (DNIS warm start)
search_epochs = 2  # full run: 20 (DNIS alternating epochs)
episodes = 2  # full run: 6 (CIESS; the paper: 30)
iterations = 2  # full run: 5 (CIESS; the paper: 10)
epochs_per_iteration = 1  # full run: 3 (CIESS)
ciess_hidden = 32  # full run: 256 (CIESS actor and critic width)
clusters = 4  # full run: 4 (iHAS K)
ihas_search_epochs = 2  # full run: 10 (iHAS)
seed = 0  # full run: 0
n_seeds = 1  # full run: 1 (benchmarks/head_to_head.py --seeds 0 1 2 for three)
# full run: the same folder (the evidence store of the grids, Sections 8.6-8.8)
stored_runs = "../evidence"
out_dir = "results/ch08"

# %%
# A bad value stops the chapter here, in one line, before any work (see the Preface).
from recsize.params import check_parameters

check_parameters(
    globals(),
    topk_backbones=["top-k backbone"],
    ctr_backbone="ctr backbone",
    sparsities=["sparsity"],
    d_max="positive int",
    epochs="positive int",
    patience="non-negative int",
    ctr_epochs="positive int",
    ctr_patience="non-negative int",
    warm_epochs="non-negative int",
    search_epochs="non-negative int",
    episodes="positive int",
    iterations="positive int",
    epochs_per_iteration="positive int",
    ciess_hidden="positive int",
    clusters="positive int",
    ihas_search_epochs="positive int",
    seed="non-negative int",
    n_seeds="positive int",
    stored_runs="path",
    out_dir="path",
)

# %%
import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from myst_nb import glue  # numbers of this run quoted in the text

from recsize import budget
from recsize.data import prepare
from recsize.search import (
    HeadToHeadConfig,
    head_to_head,
    pareto_front,
    pareto_plot,
    search_costs,
    summary_table,
)
from recsize.search.compare import (
    FAMILIES,
    NAMES,
    applicable_methods,
    format_costs,
    format_table,
    pareto_points,
)

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
seeds = list(range(seed, seed + n_seeds))

# %% [markdown]
# ## 8.1 What a fair comparison holds fixed
#
# Each of Chapters 5 to 7 compared one method with the baselines under that chapter's settings. Put side
# by side, those tables would mix different epoch caps, patiences and search lengths. A head-to-head run
# fixes everything but the method:
#
# * **the same backbone, split and budgets**: seed $s$ prepares the split; the budgets are the papers'
#   sparsities $c$ = 80 / 90 / 95 % pruned, i.e. densities 0.2 / 0.1 / 0.05 of the $d_{max}$-wide
#   tables;
# * **the same retraining**: every final model trains from scratch with the backbone's default trainer
#   settings, the same epoch cap and the same early-stopping patience (CIESS's full-width reference
#   model too);
# * **the same measurement**: test metrics evaluated with the compact tables, the kept parameters, and
#   the bytes really stored by the compact modules (for iHAS, every cluster's table *plus* the router).
#
# Which methods apply depends on the backbone: CIESS searches the widths of users and items, so it needs
# a top-k model; iHAS gates the field embeddings of a CTR model. `head_to_head` runs every method that
# applies, and naming one that does not is an error rather than a silent gap in a table:

# %%
# NBVAL_CHECK_OUTPUT
for name in ("lightgcn", "neumf", "deepfm"):
    print(f"{name:9s}", ", ".join(applicable_methods(name)))
try:
    head_to_head("lightgcn", "ml-100k", methods=("es", "ihas"))
except ValueError as error:
    print(textwrap.fill(f"ValueError: {error}", 88, subsequent_indent="    "))

# %% [markdown]
# The budget in numbers, for the ml-100k tables at $d_{max} = 64$: the parameters every method may keep
# and what they cost in compact storage, against the dense table. ES, MR, MDE and DNIS hit the parameter
# count exactly, table by table; CIESS keeps at most it (over users and items together); iHAS fits its
# K cluster tables and its router into the same count.

# %%
topk_split = prepare("ml-100k", "random-811", seed=seed)
ctr_split = prepare("ml-100k-ctr", seed=seed)

# %%
# NBVAL_CHECK_OUTPUT
tables = {
    "LightGCN (user, item)": [topk_split.n_users, topk_split.n_items],
    "NeuMF (2 x user, 2 x item)": [topk_split.n_users, topk_split.n_items] * 2,
    "DeepFM (one feature table)": [ctr_split.data.n_features],
}
print(
    f"{'tables':28s}{'c':>6s}{'parameters':>12s}{'compact bytes':>15s}"
    f"{'dense bytes':>13s}{'ratio':>7s}"
)
for name, rows in tables.items():
    for c in sparsities:
        params = sum(budget.target_parameters(1 - c, n, 64) for n in rows)
        # compact bytes depend on sum(d_n) and the row count only:
        # any widths with this total cost the same
        compact = (
            sum(budget.compact_bytes(np.full(n, 0), 64) for n in rows)
            + params * budget.FLOAT_BYTES
        )
        dense = sum(budget.dense_bytes(n, 64) for n in rows)
        print(
            f"{name:28s}{100 * c:5.0f}%{params:>12,}{compact:>15,}{dense:>13,}"
            f"{compact / dense:>7.3f}"
        )

# %% [markdown]
# At $c$ = 95 % the offsets (8 bytes per row) are already a large share of the compact bytes: a row of
# 3.2 floats on average costs 12.8 bytes of values and 8 of offset. Methods that need more than one table
# per row, like iHAS with its K cluster tables, pay the offsets K times.
#
# ## 8.2 Reading a Pareto front
#
# Every (method, budget) pair gives one point: memory (compact bytes) and quality (say Recall@20). A
# point *dominates* another if it needs at most the bytes and gives at least the quality, one of them
# strictly. The points no other point dominates form the **Pareto front**: for every memory limit, the
# best quality any method reached within it. A method worth using has points on or near the front. A
# small example by hand:

# %%
# NBVAL_CHECK_OUTPUT
names = ["A", "B", "C", "D", "E", "F"]
nbytes = [100, 100, 200, 300, 300, 400]
recall = [0.30, 0.20, 0.50, 0.45, 0.60, 0.60]
front = pareto_front(nbytes, recall)
print("on the front:", [names[i] for i in front])
print("dominated:   ", [names[i] for i in range(len(names)) if i not in front])

# %% [markdown]
# B loses to A (same bytes, lower recall), D to C (fewer bytes, higher recall) and F to E (fewer bytes,
# the same recall). With a lower-is-better metric such as log loss, `pareto_front(...,
# higher_is_better=False)` turns the comparison round.
#
# ## 8.3 The head-to-head run
#
# One call per backbone. Every method is the package's own function (`run_baseline`, `dnis.search` and
# `run_dnis`, `run_ciess`, `run_ihas`); `head_to_head` only holds the settings fixed and collects one flat
# record per (seed, method, budget). At the CI parameters this is MF and FM with a few epochs, so the
# numbers below say little about the methods; Section 8.6 reads the converged runs.
# iHAS is charged here as in the stored run, its router only (`charge="routing"`, recsize's earlier
# accounting): with the consistent default of Chapter 7, which also charges the K - 1 extra
# first-order tables, K = 4 does not fit ml-100k-ctr at $c$ = 95 % (15,234 parameters of routing and
# extra tables against a budget of 9,146).

# %%
config = HeadToHeadConfig(
    sparsities=tuple(sparsities),
    seeds=tuple(seeds),
    d_max=d_max,
    epochs=epochs,
    patience=patience,
    dnis={"warm_epochs": warm_epochs, "search_epochs": search_epochs},
    ciess={
        "episodes": episodes,
        "iterations": iterations,
        "epochs_per_iteration": epochs_per_iteration,
        "hidden": ciess_hidden,
        "top_l": 1,
    },
    ihas={
        "clusters": clusters,
        "search_epochs": ihas_search_epochs,
        "charge": "routing",  # the router only (see the text above)
    },
    progress=False,
)
records = []
for backbone in topk_backbones:
    records += head_to_head(backbone, "ml-100k", config)
records += head_to_head(
    ctr_backbone, "ml-100k-ctr", config, epochs=ctr_epochs, patience=ctr_patience
)
print(f"{len(records)} records; the first:")
print(json.dumps(records[0], indent=1))
_ = (out / "records.json").write_text(
    json.dumps({"config": config.to_dict(), "records": records}, indent=1)
)

# %% [markdown]
# `summary_table` averages over seeds (mean ± standard deviation; one seed here) and `format_table`
# prints it, marking the best first metric per budget:

# %%
print(format_table(summary_table(records)))

# %% [markdown]
# ## 8.4 Quality against bytes
#
# `pareto_plot` draws one marker per method and one point per budget (mean over seeds), the compact bytes
# on a log scale, and circles the points on the Pareto front. ES, MR, MDE and DNIS keep exactly the same
# parameters at each budget, so their points share an x position and only the quality separates them;
# CIESS may land left of them (fewer parameters), iHAS right of them (the same parameters, more bytes:
# K tables of offsets and the router).

# %%
backbones = list(dict.fromkeys(r["backbone"] for r in records))
fig, axes = plt.subplots(
    1, len(backbones), figsize=(5.5 * len(backbones), 4), squeeze=False
)
for ax, name in zip(axes[0], backbones):
    pareto_plot(records, backbone=name, ax=ax)
fig.tight_layout()
fig.savefig(out / "pareto.png", dpi=120)
plt.show()

# %% [markdown]
# ## 8.5 What the search costs
#
# ES, MR and MDE cost nothing to search: their widths follow from the training frequencies. One DNIS
# search and one CIESS search (with its full-width reference model) serve all three budgets, so their
# cost is counted **once**, not three times; iHAS's gates aim at one budget, so it searches once per
# budget. Retraining is paid by every method at every budget.

# %%
print(format_costs(search_costs(records)))

# %% [markdown]
# ## 8.6 The measured runs
#
# The evidence is not the CI run above but the converged grids of Chapters 4 and 5, the experiments
# `prune_lightgcn20`, `prune_neumf` and `prune_deepfm` (`evidence/NAME.jsonl`): LightGCN and NeuMF on
# ml-100k (random 8:1:1 per user, full ranking) and DeepFM on the ml-100k CTR view, $c$ = 50 / 80 /
# 90 / 95 %, every method at the same **bytes** of its stored form, every model trained to convergence
# (cap 300 epochs, patience 20 for LightGCN and 10 for the others), three seeds that share their splits. CIESS runs its authors' settings at the reduced schedule of Chapter 6
# (6 x 5 iterations of 200 batches of 10,000), iHAS its defaults of Chapter 7 (K = 4, one model per
# cluster, the router and the extra first-order tables charged). `grid_records` turns the stored cells
# into the records of 8.3, so the same plot and cost table read them; this cell runs nothing.

# %%
from recsize.experiments import load_grids
from recsize.search.compare import grid_records, metrics_of

stored = Path(stored_runs)
names = ("prune_lightgcn20", "prune_neumf", "prune_deepfm")
grids = load_grids(names, stored)  # each read once
shown = ("es-bytes", "mde-bytes", "mr-bytes", "magprune", "pep", "dnis", "dnis-alpha")
shown += tuple(FAMILIES)  # quantised and hashed tables (8.9), where stored
measured = {
    name: [r for r in grid_records(g.runs, g.settings)
           if r["method"] in (*shown, "ciess", "ihas")]
    for name, g in grids.items()
}
if not measured:
    print(f"no stored grid in {stored}: recsize experiment run NAME")
else:
    fig, axes = plt.subplots(
        len(measured), 1, figsize=(7.5, 4 * len(measured)), squeeze=False
    )
    for ax, (name, mine) in zip(axes[:, 0], measured.items()):
        n = len(grids[name].seeds)
        pareto_plot(mine, ax=ax, title=f"{grids[name].backbone}: {n} seeds, converged")
    fig.tight_layout()
    fig.savefig(out / "pareto_measured.png", dpi=120)
    plt.show()

# %% [markdown]
# What each method cost, per seed (mean over the seeds): a search that serves every budget (MagPrune's
# dense model, PEP, DNIS, CIESS with its reference model) counted once, the retraining summed over the
# four budgets. The runs shared two cores with up to four others, so the times compare only roughly.

# %%
if measured:
    every = [r for mine in measured.values() for r in mine]
    print(format_costs(search_costs(every)))
    for name, mine in measured.items():
        seconds = sum(r["search_seconds"] + r["retrain_seconds"] for r in mine)
        n = len(grids[name].seeds)
        print(
            f"{grids[name].backbone}: these methods' grid {seconds / 3600:.1f} h "
            f"of one core ({seconds / 60 / n:.0f} min per seed)"
        )

# %% [markdown]
# Which points are on the front, per backbone (mean over seeds; Recall@20 for top-k, AUC for CTR):

# %%
for name, mine in measured.items():
    metric = metrics_of(mine)[0]
    on = sorted(
        (p for p in pareto_points(mine, metric) if p["on_front"]),
        key=lambda p: p["compact_bytes"],
    )
    print(grids[name].backbone)
    for p in on:
        c = 100 * p["sparsity"]
        kib = p["compact_bytes"] / 1024
        label = NAMES[p["method"]]
        print(f"  {label:9s} at c = {c:g} %: {p[metric]:.4f}, {kib:.0f} KiB")

# %% [markdown]
# ## 8.7 What to use when
#
# The verdict rests on the converged grids of 8.6. For each
# budget the cell names the best mean, the methods whose paired 95 % interval against it includes 0
# (within the noise), and those shown to be behind, with their mean difference (`within_noise`). It
# reads the stored outputs; it runs nothing.

# %%
from recsize.search.compare import within_noise

short = {"es-bytes": "ES", "mde-bytes": "MDE", "mr-bytes": "MR", "magprune": "MagPrune",
         "magprune-tois": "MagPrune/TOIS", "pep": "PEP", "dnis": "DNIS|E|",
         "dnis-alpha": "DNIS|aE|", "ciess": "CIESS", "ihas": "iHAS"}
short |= {m: NAMES[m].replace(" ", "") for m in FAMILIES}  # the families of 8.9
for g in grids.values():
    print(f"\n{g.backbone}, test {g.metric}, {len(g.seeds)} seeds")
    for row in within_noise(g.runs, g.metric, tuple(short)):
        best = row["rows"][0]
        tied = [short[r["method"]] for r in row["rows"][1:] if r["tied"]]
        behind = [
            f"{short[r['method']]} {r['delta']['mean']:+.3f}"
            for r in row["rows"]
            if not r["tied"]
        ]
        top = f"{short[best['method']]} {best['mean']:.3f}"
        line = (
            f"c = {row['sparsity']:.0%}: best {top}; tied: {', '.join(tied) or '-'}"
            f"; behind: {', '.join(behind) or '-'}"
        )
        print(textwrap.fill(line, 88, subsequent_indent="    ", break_on_hyphens=False))

# %% [markdown]
# Every cell above is at equal **bytes**. The TOIS'25 benchmark compared at equal
# **parameters** ($1 - c$ of the entries, the index not counted), where an element-wise
# mask keeps more entries than the same bytes hold. Both accountings for the two
# MagPrunes (recsize's, global threshold and fine-tuning; `magprune-tois`, the
# benchmark's, per table with a floor of `min_item` entries per row and no fine-tuning,
# Chapter 4.8): the paired difference to ES at equal bytes with its 95 % interval, and
# the entries and bytes each stores over ES's.

# %%
from recsize.search.compare import paired_summary

both = {"magprune": "MagPrune, bytes", "magprune-params": "MagPrune, params",
        "magprune-tois": "TOIS, bytes", "magprune-tois-params": "TOIS, params"}
for g in grids.values():
    es = {(r["sparsity"], r["seed"]): r for r in g.runs if r["method"] == "es-bytes"}
    print(f"\n{g.backbone}, test {g.metric}: vs ES at equal bytes")
    for row in paired_summary(g.runs, "es-bytes", g.metric, ("es-bytes", *both)):
        d, cells = row["delta"], row["cells"]
        if d is None:   # ES itself
            continue
        ci = "one seed" if d["low"] is None else f"[{d['low']:+.3f}, {d['high']:+.3f}]"
        base = {s: es[row["sparsity"], s] for s in cells}
        over = [(r["kept"] / base[s]["kept"], r["bytes"] / base[s]["bytes"])
                for s, r in cells.items()]
        kept, size = np.mean(over, axis=0)
        print(
            f"c = {row['sparsity']:.0%} {both[row['method']]:17s}{row['mean']:.3f} "
            f"{d['mean']:+.3f} {ci:16s} n={d['n']} "
            f"{kept:.2f}x entries {size:.2f}x bytes"
        )

# %% [markdown]
# What the converged grids say:
#
# * **Quantise before you narrow** (8.9). Where its floor allows, the full-width table in int4
#   (rounded after training, or trained through the rounding) has the best mean on LightGCN and
#   NeuMF at $c$ = 50 and 80 %, and at 80 % int4 is ahead of ES beyond the noise: +0.015 Recall@20
#   [+0.003, +0.026] on LightGCN and +0.011 [+0.002, +0.021] on NeuMF, in 14 % of the float32 bytes.
#   On DeepFM int8, int4 and QAT int4 are level with ES. Int8 cannot go below 26.6 % of the bytes
#   and int4 below 14.1 %, so at 90 and 95 % the width methods below are what is left.
# * **Among the widths, start with the free baselines, and run both.** Of the width methods, ES
#   (equal widths) or MDE (the frequency rule) has the best mean at 8 of the 12 (backbone, budget)
#   cells, and the other of the two is within the noise in 6 of those 8. They cost no search and one
#   retraining each per budget.
# * **No search beats them on these data.** DNIS is never ahead of the best free baseline beyond the
#   noise, nor with the authors' joint frequency blocks of users and items, which on LightGCN are level
#   with recsize's per-table blocks (every paired difference within 0.002 Recall@20, Chapter 5.8).
#   CIESS at its authors' settings (a tenth of their training per iteration and of their
#   iterations) is level with ES on LightGCN at equal bytes (0.384 / 0.367 / 0.340 / 0.226 against
#   0.384 / 0.370 / 0.329 / 0.252 at 50 / 80 / 90 / 95 %, every interval spanning 0; its 90 % mean is
#   the best of that cell) and behind it in every mean on NeuMF (AUKC 0.936; Chapter 6.8).
#   iHAS is behind ES in every accounting and layout tried (Chapter 7); in the DeepFM grid, with its
#   defaults, it trails by 0.032 AUC at 50 % and 0.019 at 80 % (intervals below 0) while storing 1.3
#   and 1.4 times the bytes, and at 90 and 95 % its router and extra first-order tables alone (15,234
#   parameters) exceed the budget.
# * **Element-wise pruning only where nothing takes a dot product of pruned rows.** On LightGCN,
#   MagPrune, PEP and DNIS in place are within the noise of ES at 50, 90 and 95 % (MagPrune has the
#   best mean at 95 %), and MagPrune and DNIS are behind at 80 %; on DeepFM, DNIS by $|\alpha E|$
#   stays within the noise at every budget and PEP at all but 80 %; on NeuMF (and MF) they collapse from 80 % on, 0.09 to 0.21 Recall@20 behind
#   (Chapter 5: a pruned user row and a pruned item row share almost no dimensions).
#   MagPrune as the TOIS'25 benchmark runs it (`magprune-tois`: per table, a floor of
#   `min_item` entries per row, no fine-tuning; Chapter 4.8) is behind ES at equal bytes
#   at every budget of the three grids; on NeuMF its floor narrows the collapse at 90 and
#   95 % (without fine-tuning it is ahead of recsize's MagPrune there), everywhere else
#   the missing fine-tuning costs it more than the floor gives.
# * **Never MR.** Random widths are behind the best at 80, 90 and 95 % on LightGCN, at 50-90 % on
#   NeuMF and at 80 % on DeepFM; they are the control that shows the widths matter.
# * **Count bytes, and a shared search once.** Parameter counts hide row offsets, CSR column indices
#   and iHAS's router; at equal parameters the prefix forms of DNIS store up to 1.6 times the bytes of
#   the in-place ones. One DNIS or PEP search serves every budget (2-7 minutes here); iHAS searches
#   once per budget. At equal parameters, as the TOIS'25 benchmark and the papers count, the
#   element-wise masks keep 1.07 to 2.83 times the entries ES keeps at equal bytes and
#   store 1.31 to 1.89 times its bytes (the accounting cell above). Counted that way and
#   fine-tuned, recsize's MagPrune is ahead of ES on LightGCN at 90 and 95 % and level
#   with it at 50 and 80 % and on DeepFM, and still far behind on NeuMF from 80 % on: the
#   parameter count, not the method, is what puts magnitude pruning level with or ahead of
#   equal widths here. A deployment pays the bytes.
#
# How this compares with the benchmarks of the field: the TOIS 2025 benchmark (Tran et al.) found
# magnitude pruning and PEP rival every complex method on Gowalla, Yelp2018, Criteo and Avazu. Here
# they do rival the search methods, within the noise of DNIS nearly everywhere, but on ml-100k neither
# they nor the searches beat equal widths or the frequency rule at equal bytes, and on a plain dot
# product they fail. That benchmark counted parameters and ran its own MagPrune, without
# fine-tuning; run as its code runs it (`magprune-tois`), it is the weakest MagPrune here
# on LightGCN and DeepFM, and even at equal parameters its mean stays below ES's at every
# budget of the three grids. The VLDB 2024 benchmark (Zhang et al., code in `Hsword/Hetu`) compares 14
# compression methods on CTR data only (Criteo and Avazu; DLRM, DCN, DeepFM and WDL; AUC) at several
# memory budgets. What we could check of it (its abstract and its code; the paper's tables were not
# reachable from this book's machines) agrees with two things here: the standing of the methods
# changes with the budget (on LightGCN ES has the best mean at 50 and 80 %, CIESS at 90 % and MagPrune
# at 95 %), and an
# element-wise mask is charged a value and an index per kept entry, so DNIS's successor AutoSrh is a
# pruning method there as it is here (Chapter 5). None of its cells covers top-k data, MovieLens, CIESS
# or iHAS, so no number of ours compares with one of theirs. A third-party summary of the paper
# (sciencestack.ai, arXiv 2311.15578; a summary, not the paper, and not checked against it) names
# hashing and deduplication as the strongest families there; neither narrows rows, so neither is a
# width search. Section 8.9 puts hashing (plain, and the quotient-remainder trick) beside the widths:
# on the one seed run so far both trail ES at 50 to 90 %, a little on DeepFM and far on NeuMF, where
# ids that share rows meet in a dot product (as pruned rows do, Chapter 5); deduplication is not in
# this book. The published claims of DNIS (a gain at
# 50 % on collaborative filtering), CIESS (ahead of ES at 80-95 %) and iHAS (ahead of field-level
# selection) are not reproduced on this data; whether they hold on ML-1M-sized data is the GPU run
# this book still owes.
#
# **What the comparison costs.** The three grids of 8.6 took 4.4 to 4.9 hours of one core each (87 to
# 98 minutes per seed), about 14 hours in all, or 7 on both cores of this machine: far above the 90
# minutes we aimed at. Those are wall times, with up to seven benchmark processes sharing the two
# cores. Where the time goes (`benchmarks/where_time_goes.py`, one grid cell per backbone): imports
# cost 2.4 s per process, and no stage of an epoch dominates; LightGCN spends about 45 % of it in the
# sparse product (forward and backward), NeuMF 30 % of its operator time drawing dropout masks. Two
# things shrink LightGCN's sparse product, both with bit-identical results (tested). `LightGCN` now
# propagates only the columns some row's mask keeps (ES at $c$ = 90 % keeps 7 of 64): 1.09-1.37 times
# faster in CPU time for K = 1 to 8 models one by one (`benchmarks/stacked.py`). And
# `recsize.stacked.train_stacked` trains K models of one split in one pass, 1.21-1.48 times faster
# than one by one with every column, little above trimming alone, since the sparse product costs the
# same per column stacked or not (stacked without trimming: 0.95-1.10). In the grid, `prune.py
# --stacked` trains seed 0's 12 ES / MDE / MR LightGCN cells in 6.3 minutes of CPU against 7.3 one by
# one, every cell the same; the stored grid records 53 minutes for the same cells, so most of the
# hours above are the shared machine, not the work: run with a core to itself, a whole seed of the
# LightGCN or the DeepFM grid costs about 24 minutes of CPU (`benchmarks/README.md`), and the three
# grids' nine seeds would be about 1.8 hours on both cores, still above 90 minutes. A GPU, where one
# wide product is cheaper than K narrow ones, is where stacking should pay; it has not been measured.
#
# ## 8.8 Can a search find what popularity hides?
#
# On the synthetic data of Chapter 2 the true widths fall with popularity, so the frequency rule MDE
# recovers them by construction, and a test on that data cannot tell a search from a heuristic. The
# `planted-100k` data (and `planted-1m`, at ML-1M's size) plants the widths in *groups* instead: every
# item draws one of the widths 2, 4, 8, 16 and 32 at random, whatever its popularity, and every user
# likewise, while popularity keeps its long tail. Here MDE is blind by construction; a method whose widths
# correlate with the planted ones has read them from the data.

# %%
from recsize.search import run_magprune, train_dense
from recsize.search.baselines import run_baseline
from recsize.search.compare import width_correlations
from recsize.train import default_config

planted = prepare("planted-100k", seed=seed)
meta = planted.data.meta
counts = np.bincount(planted.data.item, minlength=planted.data.n_items)
rho = width_correlations({"item": counts}, planted)["truth"]["item"]
print(planted.data)
print(f"Spearman(popularity, planted item width) = {rho:+.3f}")
name, c = topk_backbones[0], sparsities[1]
cfg = default_config(name, epochs=epochs, patience=patience, seed=seed, progress=False)
found = {}
for method in ("es", "mde"):
    found[method] = run_baseline(name, planted, method, 1 - c, d_max, cfg, seed=seed)
dense_planted = train_dense(name, planted, d_max, cfg)
found["magprune"] = run_magprune(
    name, planted, 1 - c, d_max, cfg, dense=dense_planted
)
print(f"\n{name}, c = {100 * c:g} %: Spearman of the widths with the planted truth")
print(f"{'method':10s}{'users':>8s}{'items':>8s}{'Recall@20':>11s}")
for method, run in found.items():
    r = width_correlations(run.sizes, planted)["truth"]
    test = run.test_compact or run.result.test
    print(
        f"{method:10s}{r.get('user', np.nan):>8.3f}{r.get('item', np.nan):>8.3f}"
        f"{test['recall@20']:>11.4f}"
    )
    for side in ("user", "item"):
        glue(f"truth_{method}_{side}", float(r.get(side, np.nan)), display=False)
glue("planted_epochs", epochs, display=False)

# %% [markdown]
# ES's widths are equal (up to rounding) and MDE's follow popularity, so both sit near 0 here
# (users {glue:text}`truth_es_user:+.3f` and {glue:text}`truth_mde_user:+.3f`, items
# {glue:text}`truth_es_item:+.3f` and {glue:text}`truth_mde_item:+.3f` in the run on this page).
# MagPrune's, read from the trained magnitudes, correlate with the planted ones by
# {glue:text}`truth_magprune_user:+.3f` over users and {glue:text}`truth_magprune_item:+.3f` over
# items, after trainings capped at
# {glue:text}`planted_epochs:d` epochs (at CI parameters a few, where the magnitudes mean little):
# one seed, one budget. The full runs (experiment `prune_planted_lightgcn` on `planted-100k`,
# `evidence/prune_planted_lightgcn.jsonl`; LightGCN, every training to convergence) are read back
# below: per budget and method, the mean Spearman correlation of the widths (kept entries per row) with
# the planted widths, for users and items, and the test Recall@20.

# %%
planted_grid = load_grids("prune_planted_lightgcn", stored)
if not planted_grid:
    print("no stored planted-truth run: recsize experiment run prune_planted_lightgcn")
else:
    p_runs = planted_grid["prune_planted_lightgcn"].runs
    head = f"{'c':>4s} {'method':10s}{'seeds':>6s}{'users':>8s}{'items':>8s}"
    print(head + f"{'Recall@20':>11s}")
    for key in sorted({(r["sparsity"], r["method"]) for r in p_runs}):
        mine = [r for r in p_runs if (r["sparsity"], r["method"]) == key]
        # nanmean: widths equal on every row of a table correlate with nothing (NaN)
        users = np.nanmean([r["spearman"]["truth"]["user"] for r in mine])
        items = np.nanmean([r["spearman"]["truth"]["item"] for r in mine])
        recall = np.mean([r["recall@20"] for r in mine])
        print(
            f"{100 * key[0]:3.0f}% {key[1]:10s}{len(mine):>6d}{users:>8.3f}"
            f"{items:>8.3f}{recall:>11.4f}"
        )

# %% [markdown]
# What the stored planted-truth run shows (LightGCN, three seeds, equal bytes, patience 10): the
# element-wise methods read the planted widths where the free baselines cannot (mean Spearman with the
# truth over users about +0.4 to +0.7, against about 0 for ES, MDE and MR), and the reading pays only
# where memory is tightest: at $c$ = 95 % DNIS in place leads ES by +0.054 Recall@20 [+0.017, +0.092]
# and MagPrune by +0.043 [+0.038, +0.048], while from 50 to 80 % ES has the best mean and they trail
# it (by 0.02 at 80 %, intervals below 0). CIESS, at the reduced schedule of Chapter 6.8, does not read
# them (mean Spearman with the truth -0.08 over users and +0.00 over items) and is level with ES at
# every budget (AUKC 0.996 [0.970, 1.023]; at 90 % its mean 0.381 is the best of the cell, +0.007
# [-0.018, +0.033]): as good as equal widths, without finding what makes the data uneven. So the
# element-wise implementations can find what popularity hides; on ml-100k, where nothing is hidden that
# way, finding it does not pay. At ML-1M's size (`planted-1m`, one seed, $c$ = 90 %, a probe:
# `benchmarks/README.md`), MagPrune's widths still follow the planted ones (Spearman +0.74 over users,
# +0.22 over items) and it scores 0.3185 against ES's 0.3175 and MDE's 0.3104 Recall@20; a full grid at
# that size is a GPU job.

# %% [markdown]
# ## 8.9 Beyond widths: quantised and hashed tables
#
# Every method so far saves memory by storing *fewer numbers*: narrower rows, or fewer entries.
# Two other families keep the numbers and store them *more cheaply*, or share them:
#
# * **Row-wise quantisation** stores each row as small integers plus a scale and a bias, the
#   layout FBGEMM serves (`recsize.quantize`): a $d$-wide row takes $d + 4$ bytes in int8
#   and $\lceil d/2 \rceil + 4$ in int4 (the scale and bias are two fp16 numbers), against
#   $4d$ in float32. Post-training quantisation (`int8`, `int4`) rounds a trained model's
#   tables; quantisation-aware training (`qat-int4`) trains through the rounding with a
#   straight-through gradient; `es-int8` and `mde-int8` narrow *and* quantise.
# * **Hashing** stores fewer rows than there are ids: plain hashing (`hash`) sends ids to
#   $m$ shared rows, colliding at random; the quotient-remainder trick (`qr`, Shi et al.,
#   KDD 2020) gives id $i$ the product of row $\lfloor i/m \rfloor$ of one table and row
#   $i \bmod m$ of another, so no two ids share both, in $\lceil N/m \rceil + m$ rows.
#
# A family has a floor: full-width int8 cannot go below about a quarter of the float32 bytes
# (int4 about a seventh), so at tighter budgets only its combination with narrow widths
# serves; hashing reaches any budget, but by sharing. The bytes of ml-100k's two tables at
# $d_{max}$ in each form, and what hashing keeps at $c$ = 80 %:

# %%
from recsize.hashing import (
    hash_bytes,
    hash_rows_for_bytes,
    qr_buckets_for_bytes,
    qr_bytes,
)
from recsize.quantize import quantize_model, quantized_bytes

split = prepare("ml-100k", seed=seed)
rows = {"user": split.n_users, "item": split.n_items}
dense_total = sum(budget.dense_bytes(n, d_max) for n in rows.values())
forms = {"float32": lambda n: budget.dense_bytes(n, d_max)}
forms |= {f"int{b}": (lambda n, b=b: quantized_bytes(n, d_max, b)) for b in (8, 4, 2)}
keep = 0.2  # c = 80 %
forms["QR, c = 80 %"] = lambda n: qr_bytes(
    n, d_max, qr_buckets_for_bytes(n, d_max, keep * budget.dense_bytes(n, d_max))
)
forms["hash, c = 80 %"] = lambda n: hash_bytes(
    hash_rows_for_bytes(n, d_max, keep * budget.dense_bytes(n, d_max)), d_max
)
print(f"{'form':16s}{'users':>10s}{'items':>10s}{'KiB':>9s}{'of float32':>12s}")
share = {}
for form, size in forms.items():
    b = {role: size(n) for role, n in rows.items()}
    share[form.split(",")[0].lower()] = total = sum(b.values()) / dense_total
    print(
        f"{form:16s}{b['user']:>10,}{b['item']:>10,}{total * dense_total / 1024:>9.1f}"
        f"{total:>12.3f}"
    )
for key, value in share.items():  # share_int8, share_qr, ...
    glue(f"share_{key}", value, display=False)

# %% [markdown]
# The run on this page puts them side by side on one seed of ml-100k: the full-width model
# of 8.8's backbone, quantised after training, and QR and hashing trained at $c$ = 80 %
# against ES at the same bytes. Test Recall@20 of each served model:

# %%
from recsize.evaluate import evaluate_topk
from recsize.hashing import hash_factory, qr_factory
from recsize.search.prune import prefix_density_for_bytes, table_shapes
from recsize.train import fit


def tables_bytes(model):
    return sum(t.num_bytes() for t in model.embedding_tables().values())


name = topk_backbones[0]
cfg = default_config(name, epochs=epochs, patience=patience, seed=seed, progress=False)
full = fit(name, split, d_max, cfg).model
served = {"float32": full}
served |= {f"int{bits}": quantize_model(full, bits)[0] for bits in (8, 4)}
for form, factory in (("QR", qr_factory(keep)), ("hash", hash_factory(keep))):
    served[f"{form}, c = 80 %"] = fit(name, split, d_max, cfg, embedding=factory).model
fitted = prefix_density_for_bytes(table_shapes(name, split, d_max), keep)
es = run_baseline(name, split, "es", fitted, d_max, cfg, seed=seed)
served["ES, equal bytes"] = es.model
print(f"{'form':16s}{'KiB':>9s}{'of float32':>12s}{'Recall@20':>11s}")
recall = {}
for form, model in served.items():
    nbytes, r = tables_bytes(model), evaluate_topk(model, split, "test")["recall@20"]
    recall[form.split(",")[0].lower()] = r
    print(f"{form:16s}{nbytes / 1024:>9.1f}{nbytes / dense_total:>12.3f}{r:>11.4f}")
for key, value in recall.items():  # recall_float32, recall_int8, ..., recall_es
    glue(f"recall_{key}", value, display=False)

# %% [markdown]
# The stored cells of these families in the grids of 8.6, where they exist (three seeds,
# every training converged, paired with ES at equal bytes on the same seeds and splits):
# per budget, the mean, the paired difference to ES with its 95 % interval, and the bytes
# the served tables take (a family below its budget serves with fewer):

# %%
from IPython.display import Markdown

verdict = []
for g in grids.values():
    rows = paired_summary(g.runs, "es-bytes", g.metric, ("es-bytes", *FAMILIES))
    fam = [r for r in rows if r["method"] != "es-bytes" and r["delta"] is not None]
    if not fam:
        continue
    print(f"\n{g.backbone}, test {g.metric}: vs ES at equal bytes")
    for row in fam:
        d, cells = row["delta"], row["cells"].values()
        ci = "one seed" if d["low"] is None else f"[{d['low']:+.3f}, {d['high']:+.3f}]"
        kib = np.mean([r["bytes"] for r in cells]) / 1024
        print(
            f"c = {row['sparsity']:.0%} {NAMES[row['method']]:9s}{row['mean']:.4f} "
            f"{d['mean']:+.4f} {ci:16s} n={d['n']} {kib:6.0f} KiB"
        )
        if d["low"] is not None and (d["low"] > 0 or d["high"] < 0):
            side = "ahead of" if d["low"] > 0 else "behind"
            verdict.append(
                f"{NAMES[row['method']]} {side} ES on {g.backbone} at "
                f"c = {row['sparsity']:.0%} ({d['mean']:+.3f})"
            )
if not verdict:
    verdict = ["no family cell differs from ES beyond the noise, or none is stored yet"]
glue("families_verdict", Markdown("; ".join(verdict)), display=False)

# %% [markdown]
# In this run the float32 model keeps {glue:text}`recall_float32:.3f` Recall@20; rounded to
# int8 it keeps {glue:text}`recall_int8:.3f` in {glue:text}`share_int8:.1%` of the bytes,
# and to int4 {glue:text}`recall_int4:.3f` in {glue:text}`share_int4:.1%`. At
# $c$ = 80 %, QR keeps {glue:text}`recall_qr:.3f`, hashing {glue:text}`recall_hash:.3f`
# and ES at equal bytes {glue:text}`recall_es:.3f`. One seed. In the stored three-seed
# cells above, beyond the noise: {glue:md}`families_verdict`. The same cells are in the plots of 8.6
# and the verdicts of 8.7, beside every width method; `recsize experiment list` says which
# are stored, and `recsize experiment run prune_deepfm --methods int8 int4 qat-int4` computes
# the missing ones.

# %% [markdown]
# ## Summary
#
# * A fair comparison fixes the backbone, the split, the budgets and the retraining, and measures quality
#   with the compact tables and memory in real bytes; `head_to_head` does that for every method that
#   applies to a backbone.
# * The Pareto front of quality against bytes shows which method is worth its memory at each limit;
#   parameter counts alone hide the offsets and the router that iHAS pays in bytes.
# * Search cost differs by orders of magnitude: ES / MR / MDE are free, one DNIS or CIESS search serves
#   every budget (count it once), iHAS searches per budget.
# * Measured on ml-100k at equal bytes, converged, over three seeds (8.7): no search beats the best of
#   ES and MDE beyond the noise at any budget; element-wise pruning (MagPrune, PEP, DNIS in place) ties
#   them where no dot product of pruned rows is taken and collapses where one is. A search has to earn
#   its cost on your own validation data.
# * Widths are not the only lever (8.9): row-wise int8 keeps every number of a full-width table in
#   about a quarter of its bytes, int4 in about a seventh, and hashing reaches any budget by sharing
#   rows. Whether a family beats ES at a budget is read off 8.9's stored cells, paired like every
#   other method.
#
# ## Exercises
#
# 1. Run the chapter with `n_seeds = 3`. Which differences in the summary table are larger than the
#    standard deviation over seeds?
# 2. Re-run `benchmarks/head_to_head.py --backbones lightgcn --episodes 30 --iterations 10` (the paper's
#    CIESS schedule, hours on a 2-core CPU). Does CIESS reach the front?
# 3. Plot NDCG@20 instead of Recall@20 (`pareto_plot(records, metric="ndcg@20")`) and log loss instead of
#    AUC. Does the front change?
# 4. Add iHAS with K = 1 to the CTR comparison (`head_to_head(..., ihas={"clusters": 1})`): how much of
#    iHAS's byte overhead is the router, and how much the K tables of offsets?
# 5. Extend `HeadToHeadConfig` with a total time budget and compare methods at equal *search + retrain*
#    time instead of equal epochs.
