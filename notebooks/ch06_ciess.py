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
# # Chapter 6. CIESS: searching embedding sizes with reinforcement learning
#
# **What you will learn.** How CIESS (Qu et al., SIGIR 2023) turns embedding-size search into a Markov
# decision process with one width per user and per item; how TD3 learns a continuous width policy; why a
# random walk over integer widths explores better than noise alone; how one search serves three memory
# budgets through selection and retraining; and how the searched widths compare with the equal, random and
# frequency-based sizes of Chapter 4 at exactly the same budget.
#
# **What you need.** Chapter 4 (masked and compact tables, budgets as densities, the ES / MR / MDE
# baselines). MovieLens-100K in the cache. About a minute at the default (CI) parameters with MF; the full
# run (LightGCN, the reduced schedule of 6 episodes x 5 iterations, retraining to convergence) takes
# longer: the note under the title gives the published run's wall time; `benchmarks/ciess.py` repeats
# it against the baselines.

# %% tags=["parameters"]
# Parameters (papermill): CI defaults; the full run is noted on each line.
dataset = "ml-100k"  # full run: "ml-100k"
protocol = "random-811"  # full run: "random-811" (or the paper's "ciess-50-25-25")
backbone = "mf"  # full run: "lightgcn"
d_max = 32  # full run: 64 (the paper: 128)
sparsities = [
    0.8,
    0.9,
    0.95,
]  # full run: [0.8, 0.9, 0.95] (the papers' c; densities 0.2 / 0.1 / 0.05)
reward_form = "code"  # full run: "code" (the authors' code; "paper": the paper's text)
lam = 0.01  # full run: 0.01 with reward "code" (the code's main); 0.4 with "paper"
episodes = 4  # full run: 6 (the paper: 30)
iterations = 3  # full run: 5 (the paper: 10)
epochs_per_iteration = 1  # full run: 3 (the authors: 2,000 batches, see 6.7)
hidden = 32  # full run: 256 (actor 3-256-256-1, critics 4-256-256-1)
full_epochs = 5  # full run: 100 (the full-width reference, early stopping)
retrain_epochs = (
    5  # full run: 100 (selective retraining and the baselines, early stopping)
)
top_l = 1  # full run: 1 (the paper's l is not given; ours: 3 in the "paper" schedule)
patience = 5  # full run: 10 (early stopping: reference, retraining, baselines)
seed = 0
out_dir = "results/ch06"

# %%
# A bad value stops the chapter here, in one line, before any work (see the Preface).
from recsize.params import check_parameters

check_parameters(
    globals(),
    dataset="dataset",
    protocol="protocol",
    backbone="top-k backbone",
    d_max="positive int",
    sparsities=["sparsity"],
    reward_form="reward form",
    lam="non-negative number",
    episodes="positive int",
    iterations="positive int",
    epochs_per_iteration="positive int",
    hidden="positive int",
    full_epochs="positive int",
    retrain_epochs="positive int",
    top_l="positive int",
    patience="non-negative int",
    seed="non-negative int",
    out_dir="path",
)

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from myst_nb import glue  # numbers of this run quoted in the text

from recsize.data import prepare
from recsize.plots import log_axis
from recsize.search import run_baseline
from recsize.search.ciess import (
    CIESS,
    CIESSConfig,
    make_state,
    normalised_frequency,
    reward,
)
from recsize.search.td3 import TD3, pace_settings, random_walk, walk_probabilities
from recsize.train import default_config

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
densities = [round(1 - c, 6) for c in sparsities]

# %% [markdown]
# ## 6.1 The decision process
#
# Every user and every item is an *entity* $n$ with a width $d_n \in [1, d_{max}]$: its embedding row keeps
# its first $d_n$ dimensions (the prefix mask of Chapter 4). CIESS describes each entity by a state of three
# numbers: its training frequency $f_n$, its current width $d_n$ and its *quality ratio*
# $q_n = \min\big(\mathrm{eval}(n \mid \text{masked}) / \mathrm{eval}(n \mid \text{full}), 1\big)$.
# $\mathrm{eval}(u)$ is the mean of Recall@k and NDCG@k at $k \in \{5, 10, 20\}$ on validation (six
# numbers); $\mathrm{eval}(i)$ is the mean over the item's training users. The denominator comes once from
# a full-width model trained to convergence. The authors' code feeds the network all three in $[-1, 1]$:
#
# $$s_n = \Big(2\,\frac{f_n - f_{min}}{f_{max} - f_{min}} - 1,\;
#   2\,\frac{d_n - 1}{d_{max} - 1} - 1,\; 2 q_n - 1\Big).$$
#
# The *action* is the next width; the *reward* trades quality for width. Here the paper and the code
# disagree. The paper writes $r_n = q_n - \lambda (d_n / d_{max})^2$ with $\lambda = 0.4$ on ML-1M; the
# code the authors ran pays the *raw* quality,
#
# $$r_n = \mathrm{eval}(n) - \lambda \,\big((d_n - 1) / d_{max}\big)^2, \qquad \lambda = 0.01,$$
#
# and uses $q_n$ only in the state. recsize offers both (`reward="code"` or `"paper"`) and defaults to
# the code's, since it produced the authors' masks. All of it is vectorised over entities. Three users by
# hand ($d_{max} = 64$; raw evals 0.30, 0.27, 0.18 against a full-model 0.30):

# %%
# NBVAL_CHECK_OUTPUT
counts, widths = np.array([200, 50, 2]), np.array([64, 16, 4])
raw = np.array([0.30, 0.27, 0.18])
q = np.minimum(raw / 0.30, 1)
freq = normalised_frequency(counts)
print("states (f, d, q) in [-1, 1]:\n", make_state(freq, widths, q, d_max=64))
code_r = reward(raw, widths, 64, 0.01, "code")
paper_r = reward(q, widths, 64, 0.4, "paper")
print("code's rewards (lambda 0.01): ", np.round(code_r, 4))
print("paper's rewards (lambda 0.4):", np.round(paper_r, 4))

# %% [markdown]
# Under the paper's reward the full-width user earns $1 - 0.4 = 0.6$ and the user at width 16, with 10 %
# of its quality lost, earns more ($0.9 - 0.4/16 = 0.875$). Under the code's reward the penalty is at
# most $0.01$, small against differences in raw quality, and a user's reward also depends on how easy
# the user is to rank. Where the penalty stops paying depends on how fast quality falls with width, which
# is what the agent must learn, separately for users and items.
#
# ## 6.2 TD3 in brief
#
# Widths are (nearly) continuous, so CIESS uses an actor-critic for continuous actions: TD3 (Fujimoto et
# al., 2018). A deterministic *actor* $\mu(s)$ maps a state to a width (a tanh scaled to $[1, d_{max}]$); two
# *critics* $Q_1, Q_2$ estimate the discounted return of a (state, width) pair. TD3 adds three fixes to
# DDPG: the critic target uses the smaller of two target critics,
# $y = r + \gamma \min_j Q'_j(s', \mu'(s') + \epsilon)$; the target action gets clipped noise $\epsilon$
# (smoothing); and the actor and the target networks move only every second critic step, the targets by
# Polyak averaging with $\tau = 0.005$. CIESS has one actor and one pair of critics per side. The
# authors' `Buffer.py` sets the pace: after every search iteration *one* TD3 step per side on a batch of
# 4,096 transitions, critic learning rate $3 \cdot 10^{-3}$, gradient norms clipped to 0.01, one target
# noise scalar $N(0, 2)$ clipped to $\pm 5$ widths per batch, and the actor's output layer initialised in
# $\pm 3 \cdot 10^{-3}$, so the first widths sit mid-range. recsize's `pace="official"` is that;
# `pace="recsize"` keeps the earlier 32 steps of 256.

# %%
# NBVAL_CHECK_OUTPUT
settings = pace_settings("official", d_max=128)
print({k: settings[k] for k in ("batch_size", "updates", "critic_lr", "grad_clip")})
settings = {
    k: v
    for k, v in settings.items()
    if k not in ("batch_size", "updates", "wait_for_batch")
}
agent = TD3(d_max=128, hidden=256, **settings)
print(agent.actor)
print(
    "critic parameters:",
    sum(p.numel() for p in agent.critic.parameters()),
    "| actor parameters:",
    sum(p.numel() for p in agent.actor.parameters()),
)

# %% [markdown]
# ## 6.3 Why a random walk
#
# A deterministic actor explores only through the noise added to its output, and a critic that has never
# seen widths far away cannot value them. CIESS adds a *random walk* over the integer widths: from the
# actor's width, take five steps, each to a neighbour at distance at most $t = 5$, chosen with probability
# proportional to $1 / |d - d'|$, and let the critic pick the best width it visited. Then, in the
# authors' code, *one* Gaussian scalar ($\sigma = 6$) drawn per iteration is added to every user's and
# every item's pick, so the whole table moves wider or thinner together. The paper's text reads as noise
# on the actor's output before the walk; recsize's earlier version drew it per entity, which scatters
# the widths nearly as much as random sizes (`exploration="per-entity"` keeps that). $\sigma$ and $t$
# are stated for $d_{max} = 128$; recsize scales them by $d_{max} / 128$. The step probabilities from
# width 10:

# %%
# NBVAL_CHECK_OUTPUT
nbrs, p = walk_probabilities(10, d_max=64, t=5)
print(" ".join(f"{n:>5d}" for n in nbrs))
print(" ".join(f"{x:5.3f}" for x in p))
walks = random_walk(
    np.array([10.0, 1.0, 63.4]), 64, np.random.default_rng(0), t=5, length=5
)
print("visited widths (one walk per row, the start first):\n", walks)

# %% [markdown]
# Near the bounds the neighbourhood is cut (from width 1 only 2..6 remain) and the probabilities are
# renormalised. The ablation (`random_walk=False`) plays the actor's width plus the noise directly.
#
# ## 6.4 The search
#
# The loop runs $M$ episodes of $T$ iterations (the paper: $30 \times 10$). Every iteration trains a freshly
# initialised recommender with the chosen widths, measures every entity's $q_n$, stores the transitions
# in the replay buffers and takes TD3 steps. The authors train it for a fixed number of batches (LightGCN:
# 2,000 batches of 10,000 users, learning rate 0.03 decayed by 0.9 every 200 batches down to $10^{-3}$),
# `training="official"`; this chapter, at CI and full-run parameters alike, uses `training="epochs"`,
# `epochs_per_iteration` epochs of recsize's trainer (1 at CI parameters, 3 in the full run), which is
# far cheaper and far less trained (6.8 runs the official training). A long search checkpoints after every
# iteration (`checkpoint_dir`, `run(resume=True)`; `recsize search --method ciess --checkpoint-dir ...
# --resume`) and resumes with the same result. The checkpoint holds only tensors and numbers
# (`recsize.files.save_plain`), so it is read back with `torch.load(weights_only=True)` and a file
# from elsewhere cannot run code; a truncated one is reported, not loaded; and the folder is locked
# while a search uses it, so a second search on it is refused instead of overwriting the first.

# %%
split = prepare(dataset, protocol, seed=seed, verbose=True)
config = CIESSConfig(
    budgets=tuple(densities),
    reward=reward_form,
    lam=lam,
    training="epochs",
    d_max=d_max,
    episodes=episodes,
    iterations=iterations,
    epochs_per_iteration=epochs_per_iteration,
    hidden=hidden,
    full_epochs=full_epochs,
    retrain_epochs=retrain_epochs,
    patience=patience,
    top_l=top_l,
    seed=seed,
    progress=False,
)
result = CIESS(backbone, split, config).run()
print(
    f"reference (full width, {result.reference['best_epoch']} epochs): valid NDCG@20 "
    f"{result.reference['valid']['ndcg@20']:.4f}"
)
print(
    f"seconds: reference {result.seconds['reference']:.1f}, search "
    f"{result.seconds['search']:.1f}, "
    f"retraining {result.seconds['retrain']:.1f}"
)
glue("search_minutes", result.seconds["search"] / 60, display=False)

# %%
hist = result.history
episode = np.array([h["episode"] for h in hist])
per_episode = {
    k: [np.mean([h[k] for h in hist if h["episode"] == e]) for e in range(episodes)]
    for k in ("reward", "density", "mean_q")
}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for ax, key, label in zip(
    axes, ("reward", "density", "mean_q"), ("mean reward", "density kept", "mean q")
):
    ax.plot(range(len(hist)), [h[key] for h in hist], ".", alpha=0.5, label="iteration")
    ax.plot(
        (np.arange(episodes) + 0.5) * iterations - 0.5,
        per_episode[key],
        "o-",
        label="episode mean",
    )
    ax.set_xlabel("iteration")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
for d in densities:
    axes[1].axhline(d, color="grey", lw=0.8, ls="--")
axes[0].legend()
fig.tight_layout()
fig.savefig(out / "search_curve.png", dpi=120)
plt.show()
visited = [h["density"] for h in hist]
glue("density_first", float(per_episode["density"][0]), display=False)
glue("density_last", float(per_episode["density"][-1]), display=False)
glue("density_min", float(min(visited)), display=False)
glue("density_max", float(max(visited)), display=False)
projected = [result.budgets[str(d)]["best"]["projected"] for d in densities]
glue("n_projected", int(sum(projected)), display=False)
glue("n_reached", len(densities) - int(sum(projected)), display=False)

# %% [markdown]
# The dashed lines are the budgets. The budget is not part of the reward. The authors' selection
# (`find_bests`) gives each budget its own density *band*, from the next smaller budget up to (not
# including) the budget itself, and keeps there the top-$l$ masks by mean raw user quality; recsize
# records every iteration's validation NDCG@20 too (`selection="ndcg"` ranks by it) and keeps its earlier
# rule, the top-$l$ by mean $q$ anywhere under the budget, as `selection="recsize"`. A budget that no
# searched mask reached (frequent at CI parameters, where the agent has few steps to learn to shrink) is
# served, in recsize, by the thinnest mask scaled down to the budget, and flagged `projected`.
#
# In the run on this page the episode means of the density went from {glue:text}`density_first:.3f`
# to {glue:text}`density_last:.3f`, every iteration between {glue:text}`density_min:.3f` and
# {glue:text}`density_max:.3f`, and {glue:text}`n_projected:d` of the 3 budgets were served by a
# projected mask.
#
# ## 6.5 Widths against popularity

# %%
loosest = result.budgets[str(densities[0])]["best"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for ax, side, counts in (
    (axes[0], "user", split.user_activity()),
    (axes[1], "item", split.item_popularity()),
):
    sizes = np.asarray(loosest[f"{side}_sizes"])
    ax.scatter(counts + 1, sizes, s=5, alpha=0.4)
    log_axis(ax.xaxis)  # log scale, labels that do not crowd (Chapter 1)
    ax.set_xlabel(f"training interactions of the {side} + 1")
    ax.set_ylabel("searched width")
    ax.set_title(
        f"{side}s, c = {100 * sparsities[0]:.0f} %"
        f"{' (projected)' if loosest['projected'] else ''}"
    )
    ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out / "widths_vs_popularity.png", dpi=120)
plt.show()
for side, counts in (
    ("user", split.user_activity()),
    ("item", split.item_popularity()),
):
    sizes = np.asarray(loosest[f"{side}_sizes"])
    rank_c, rank_s = np.argsort(np.argsort(counts)), np.argsort(np.argsort(sizes))
    rho = float(np.corrcoef(rank_c, rank_s)[0, 1])
    print(f"{side}s: Spearman correlation of width and frequency {rho:+.2f}")
    glue(f"spearman_{side}", rho, display=False)

# %% [markdown]
# MDE (Chapter 4) *imposes* wider rows for popular entities. CIESS has the frequency in its state but is
# free to use it or not; whether the searched widths grow with popularity is an empirical question, and
# at CI parameters (few iterations) the answer is mostly noise. In the run on this page the Spearman
# correlation of the loosest budget's widths with frequency is {glue:text}`spearman_user:+.2f` for
# users and {glue:text}`spearman_item:+.2f` for items.
#
# ## 6.6 At the same budget as the baselines
#
# The baselines of Chapter 4 train with the same early-stopping settings as CIESS's retraining. CIESS's
# kept parameters are at most the budget (over users and items together); the baselines hit it exactly.

# %%
train_config = default_config(
    backbone, epochs=retrain_epochs, patience=patience, seed=seed, progress=False
)
table = []
for d in densities:
    best = result.budgets[str(d)]["best"]
    table.append(
        {
            "c": 1 - d,
            "method": "ciess" + (" (projected)" if best["projected"] else ""),
            "recall@20": best["test"]["recall@20"],
            "ndcg@20": best["test"]["ndcg@20"],
            "parameters": best["parameters"],
            "compact_bytes": best["compact_bytes"],
        }
    )
    for method in ("es", "mr", "mde"):
        run = run_baseline(backbone, split, method, d, d_max, train_config, seed=seed)
        table.append(
            {
                "c": 1 - d,
                "method": method,
                "recall@20": run.result.test["recall@20"],
                "ndcg@20": run.result.test["ndcg@20"],
                "parameters": run.memory["total"]["parameters"],
                "compact_bytes": run.memory["total"]["compact"],
            }
        )
print(
    f"{'c':>5s} {'method':18s}{'Recall@20':>10s}{'NDCG@20':>10s}{'parameters':>12s}"
    f"{'compact KiB':>13s}"
)
for r in table:
    print(
        f"{100 * r['c']:4.0f}% "
        f"{r['method']:18s}{r['recall@20']:>10.4f}{r['ndcg@20']:>10.4f}"
        f"{r['parameters']:>12,}{r['compact_bytes'] / 1024:>13.1f}"
    )
for r in table:  # recall_ciess_80, recall_es_80, ...: c in %, the method's first word
    key = f"recall_{r['method'].split()[0]}_{100 * r['c']:.0f}"
    glue(key, float(r["recall@20"]), display=False)
_ = (out / "ciess.json").write_text(
    json.dumps({"result": result.to_dict(), "table": table}, indent=1)
)

# %% [markdown]
# In the run on this page CIESS keeps {glue:text}`recall_ciess_80:.3f` /
# {glue:text}`recall_ciess_90:.3f` / {glue:text}`recall_ciess_95:.3f` Recall@20 at $c$ = 80 / 90 /
# 95 % against ES's {glue:text}`recall_es_80:.3f` / {glue:text}`recall_es_90:.3f` /
# {glue:text}`recall_es_95:.3f`, with MDE at {glue:text}`recall_mde_80:.3f` /
# {glue:text}`recall_mde_90:.3f` / {glue:text}`recall_mde_95:.3f` and MR at
# {glue:text}`recall_mr_80:.3f` / {glue:text}`recall_mr_90:.3f` / {glue:text}`recall_mr_95:.3f`.
# One seed, a short search (6 x 5 iterations of 3 epochs in the full run, a handful of epochs
# at CI parameters) whose masks were projected onto {glue:text}`n_projected:d` of the 3
# budgets, and final trainings that stop after 10 epochs without improvement: where CIESS or MR
# lead ES here (in the published run, at 95 %, where ES's narrow rows stop early), these
# numbers say little on their own. `benchmarks/ciess.py`
# runs the reduced schedule on LightGCN and NeuMF over three seeds; the README's CIESS section has its
# tables. The paper's claim to test: on LightGCN, CIESS beats ES and MR at every budget (on ML-1M by
# +8 %, +7 % and +15 % Recall@20 over ES at c = 80 / 90 / 95 %).
#
# **What was measured so far, and with which CIESS.** The benchmark numbers below were measured with
# recsize's *earlier* CIESS: exploration noise drawn per entity before the walk, the paper's reward with
# $\lambda = 0.4$, 32 TD3 steps of 256 per iteration, state features $(f/f_{max}, d/d_{max}, q)$,
# selection by mean $q$ under each budget, and 3 epochs per iteration. They are not evidence about the
# method as its authors ran it; the first bullet is, and the defaults of `CIESSConfig` are the official
# ones since.
#
# * **At the authors' settings** (every default of 6.7; the code's per-iteration training cut to 200
#   batches of 10,000; the reduced 6 x 5 iterations; LightGCN, three seeds; `benchmarks/ciess.py
#   --training official --iteration-batches 200`) CIESS keeps 0.354 / 0.336 / 0.280 Recall@20 at
#   c = 80 / 90 / 95 % against ES's 0.362 / 0.344 / 0.276: level with equal widths (paired differences
#   -0.008, -0.008 and +0.004, every 95 % interval spanning 0), where the earlier CIESS below lost by
#   14-19 %. Its search, though, stays above the budgets: only one seed visited a mask inside the 80 %
#   band and none entered the 90 or 95 % bands, so 8 of the 9 cells are served by the thinnest visited
#   mask scaled down to the budget. It matches ES on ml-100k; it does not beat it, as the paper reports
#   on ML-1M. On NeuMF the same configuration keeps 0.309 / 0.287 / 0.273 against ES's
#   0.335 / 0.316 / 0.287 (paired -0.026, -0.029 and -0.014, intervals spanning 0), far above the
#   earlier CIESS.
# * With those earlier settings CIESS lost to ES, MR and the frequency rule at every budget, on both
#   backbones. On LightGCN (patience 10) its Recall@20 was 0.311 / 0.277 / 0.257 against ES's 0.362 /
#   0.344 / 0.276; on NeuMF 0.24 / 0.25 / 0.24 against 0.34 / 0.32 / 0.29.
# * The masks it kept were thinner than the budgets allow (20k of 33.6k parameters at 80 % on
#   LightGCN), and worse per parameter than equal widths: ES at 16.8k parameters scored 0.344.
# * Two single-seed probes (issue 16; LightGCN, seed 0, $d_{max} = 64$, $\lambda = 0.4$) changed only the
#   exploration to the official one scalar after the critic's pick. With 3 epochs per iteration the
#   search collapsed to densities 0.02-0.12 and scored worse (0.263 / 0.263 / 0.246); with 15 epochs per
#   iteration it stayed at densities 0.33-0.50, never entered the budgets, and its projected masks scored
#   0.311 / 0.296 / 0.283 against ES's 0.360 / 0.346 / 0.266. One seed each: an indication, not a verdict.
# * **Early stopping can decide a comparison.** With patience 5 the LightGCN baselines were bimodal over
#   seeds (ES at 95 %: 0.184, 0.182, 0.269), because validation recall plateaus early and patience 5
#   sometimes stops there; CIESS then "beat" ES at 90 % and 95 % in the means. With patience 10 every
#   baseline trains through and the wins vanish. Report per-seed values, and check that every run trained
#   past its plateau, before believing a mean. The `patience` parameter above is that setting here.
# * One whole run of the earlier CIESS (reference, search, retraining for three budgets) took 4-5
#   minutes per seed on a 2-core CPU. The official per-iteration training costs far more: 2,000 batches
#   of 10,000 users per iteration, 300 iterations.
#
# ## 6.7 Design points: the paper, the authors' code, and recsize
#
# The authors' code (`yorkequ98/CIESS`) does not run as checked out (its `main` imports a `retrain` that
# does not exist) and keeps a dense table times a 0/1 mask, so it never saves memory. Still, it is what
# produced the paper's masks, so recsize's defaults follow it wherever the paper is silent or agrees, and
# every remaining departure is a named setting of `CIESSConfig` (and a flag of `recsize search --method
# ciess`). The table is rendered from `recsize.search.departures`, the one list that `ciess.py` points
# to; the file in each row is the one in that repository the design point was read in.

# %%
from IPython.display import Markdown

from recsize.search.departures import departures_table

Markdown(departures_table("ciess"))

# %% [markdown]
# Three rows concern the backbone rather than the search, and recsize keeps its own backbone there
# (ours, so that every method trains the same LightGCN and NeuMF of Chapter 3): the authors'
# LightGCN starts from $N(0, 0.01)$ with an L2 term of $10^{-4} \sum \lVert e\rVert^2 / B$ on the
# batch's rows, recsize's from $N(0, 0.1)$ with $10^{-3} \sum \lVert e\rVert^2 / 2B$ (five times
# stronger); the authors' NeuMF trains with BPR (`create_bpr_loss` in `base_models/NCF.py`, called by
# `RecSysEnv.train_one_batch`), recsize's with binary cross-entropy on one positive and one sampled
# negative. The authors' retraining merges the validation split into training
# (`ImplicitCF.switch_to_test_mode`); recsize retrains on the training split and picks the model on
# validation. None of these has been rerun at the authors' setting yet: each changes the backbone
# that every method of Chapter 8 shares, so it is a grid of its own, not one cell.
#
# What remains of recsize's own choices: the density is measured over all user and item rows together
# (as the code does, `CIESS.py` 159); the best retrained candidate is chosen on validation; and the
# reduced schedule (6 x 5 iterations of 3 epochs, $l = 1$) that the benchmark and this chapter run is a
# compromise for a 2-core CPU, not the authors' budget.
#
# ## 6.8 Settling the claim: where the search goes, and what its widths are worth
#
# The paper reports CIESS ahead of ES at every budget. Before a book says it is not, it has to run
# CIESS as its authors did, and ask why it lands where it lands. The experiments below (issue 16) run
# on LightGCN, ml-100k 8:1:1, $d_{max} = 64$, with every default of 6.7 and the code's per-iteration
# training cut to 200 batches of 10,000 over 6 x 5 iterations ($l = 1$); one setting changes at a time.
# `benchmarks/ciess.py` runs them; `benchmarks/README.md` (block `ciess_experiments`) has every number.
#
# * **Where the search settles depends on the seed more than on the penalty.** With the paper's reward,
#   seed 0's search ends (mean density of its last episode) at 0.176 / 0.168 / 0.161 / 0.123 for
#   $\lambda$ = 0.05 / 0.1 / 0.2 / 0.4, and its first four episodes pass through the same densities to
#   three decimals whatever the penalty (0.416 or 0.417, 0.410, 0.292, 0.196 or 0.197). Seed 1 ends at
#   0.301 / 0.241 for $\lambda$ = 0.2 / 0.4 and at 0.546 with the code's reward; seed 2 at 0.602 / 0.301
#   and 0.781. The official pace takes one TD3 step per iteration with gradients clipped to 0.01
#   (`Buffer.py`): 30 steps in this schedule, 300 in the paper's. Until the critic has learned, the one
#   noise scalar per iteration and the walk decide where the widths go, and the seed decides those.
# * **A penalty per budget cannot be found by bisection here.** Bisecting $\lambda$ (geometrically,
#   between 0.05 and 12.8, at most three searches) until seed 0's search settles in the 95 % band
#   [0, 0.05) tried $\lambda$ = 0.8, 3.2 and 6.4: the search settled at 0.114, 0.114 and 0.319, the same
#   density for a fourfold penalty and then a denser search for twice that. The 90 % band [0.05, 0.1)
#   took the same three searches. On seed 1 the penalty does move the search, but in a jump: it settled
#   at 0.228 with $\lambda$ = 0.8 and 1.6 and at 0.067 with 3.2, stepping over the 80 % band [0.1, 0.2).
#   A penalty that moves the search not at all, or in jumps, cannot be tuned to a budget.
# * **Per-entity noise changes little.** recsize's earlier exploration (an independent draw per entity,
#   before the walk) settles at 0.191 / 0.605 / 0.585 on seeds 0 / 1 / 2 (official: 0.316 / 0.546 /
#   0.781) and scores 0.355 / 0.337 / 0.313 Recall@20 at 80 / 90 / 95 % against the official
#   exploration's 0.354 / 0.336 / 0.280. Its one mask found inside a band (seed 0, 80 %) spreads the
#   item widths far more (coefficient of variation 0.76, against 0.22 for the masks the paper's reward
#   found there).
# * **Ten times the training per iteration changes neither the path nor the result.** With the authors'
#   2,000 batches per iteration (seed 0, the code's reward; 75.8 minutes against 8.4) the search passes
#   through 0.438 / 0.465 / 0.366 / 0.306 / 0.242 / 0.295 per episode, against 0.437 / 0.461 / 0.360 /
#   0.308 / 0.238 / 0.316 with 200 batches, and scores 0.344 / 0.327 / 0.320 Recall@20 at 80 / 90 /
#   95 % against 0.348 / 0.333 / 0.259.
# * **Nor do ten times the TD3 steps.** The paper's 30 x 10 iterations (300 steps, $l = 3$; seed 0, 200
#   batches per iteration, retraining capped at 300 epochs; 26.7 minutes) drop from 0.449 in the first
#   episode to between 0.21 and 0.35 and hover there for the other 29, ending at 0.286. The search met
#   the 80 % band only and scores 0.355 / 0.348 / 0.320 Recall@20 at 80 / 90 / 95 %, against ES's
#   0.360 / 0.346 / 0.266 (retraining stopped at 100 epochs).
# * **Too few parameters, or a bad allocation? Neither, consistently.** Each mask a search found inside
#   its band, retrained to convergence (cap 300, patience 20), against equal widths with exactly its
#   parameters: +0.008 (0.366 against 0.359; seed 0, 80 %), -0.016 (0.340 against 0.356; seed 0,
#   90 %), +0.026 (0.293 against 0.266; seed 0, 95 %) and -0.012 (0.362 against 0.374; seed 1, 80 %)
#   Recall@20; the +0.026 is ES stopping at epoch 24 on the plateau narrow tables sit on. Scaled up to
#   the budget, the masks score within 0.01 of themselves.
# * **At equal bytes, converged, over three seeds, CIESS is level with ES.** In the grid of Chapter 8
#   (every method in the same bytes, every training to convergence: cap 300, patience 20; CIESS at the
#   settings above), CIESS scores 0.384 / 0.367 / 0.340 / 0.226 Recall@20 at $c$ = 50 / 80 / 90 / 95 %
#   against ES's 0.384 / 0.370 / 0.329 / 0.252 (paired differences 0.000, -0.003, +0.011 and -0.026,
#   every 95 % interval spanning 0; AUKC 0.998 [0.977, 1.018]). Its search met 2 of the 12 budgets
#   inside their bands; the others were served by the thinnest mask it visited, scaled down. One
#   retraining (seed 0, 80 %) ran to the 300-epoch cap, its best at epoch 289; rerun with a cap of
#   1,000 it stops by patience at epoch 310 with the same best epoch and the same 0.3705
#   (`benchmarks/README.md`), so the cap cost it nothing.
# * **On NeuMF, at equal bytes, converged, three seeds** (the grid of Chapter 8, patience 10), CIESS
#   scores 0.336 / 0.298 / 0.281 / 0.247 Recall@20 at $c$ = 50 / 80 / 90 / 95 % against ES's 0.343 /
#   0.334 / 0.292 / 0.250 (paired differences -0.007, -0.037, -0.011 and -0.003, every interval
#   spanning 0; AUKC 0.936 [0.813, 1.059]): behind in every mean, most at 80 %, where two of the three
#   seeds lose 0.04 to 0.07.
# * **At the paper's protocol** ($d_{max} = 128$, the per-user 50/25/25 split; seed 0, the settings
#   above, each method with the same early stopping) CIESS scores 0.300 / 0.291 / 0.283 Recall@20 at 80 /
#   90 / 95 % against ES's 0.306 / 0.295 / 0.286, MDE's 0.300 / 0.292 / 0.280 and MR's 0.292 / 0.272 /
#   0.233: behind equal widths by 0.003 to 0.006, ahead of random widths, and every budget projected.
#
# **Verdict.** Run as its authors' code runs it (their exploration, reward, state, TD3 pace and
# selection; a tenth of their training per iteration, which the 2,000-batch run suggests does not
# matter here, and a tenth of their iterations), CIESS on ml-100k is level with equal widths: at equal
# bytes over three converged seeds its AUKC is 0.998 of ES's on LightGCN and 0.936 on NeuMF, no budget
# separates them, and at the paper's own protocol it is a little behind. The paper's +8 / +7 / +15 % over ES (ML-1M) is not
# reproduced on this data. What the experiments show instead is a search that does not reach its
# budgets: the seed decides where it settles, the penalty barely moves it, and most budgets are served
# by a scaled mask, so what decides its widths is mostly the path its exploration takes, not what its
# agents learn in 30 steps (or in 300). Not measured here: the paper's schedule with the authors' 2,000
# batches in each of its 300 iterations (a GPU job), more than one seed of it, and ML-1M itself.
#
# ## Summary
#
# * CIESS is a per-entity MDP: state (frequency, width, quality ratio), action (width), reward quality
#   minus a width penalty (the code's raw eval $- 0.01 ((d-1)/d_{max})^2$, the paper's
#   $q - \lambda (d / d_{max})^2$), with one TD3 actor and twin critics per side.
# * Exploration is a random walk over integer widths from the actor's, the critic choosing among the
#   visited widths, then one noise scalar per iteration for the whole table (the authors' code).
# * One search serves every budget: remember the best masks in each budget's band, retrain them, keep the
#   best on validation, and store its widths compactly.
# * Where the paper and the authors' code differ, recsize names both (6.7). At the official settings
#   CIESS is level with equal sizes on ml-100k at equal bytes, not ahead of them (6.8); where its search
#   settles depends on the seed more than on the penalty $\lambda$.
# * Search is expensive: every iteration trains a recommender. The paper's 300 iterations are hours on a
#   2-core CPU (benchmark); the reduced schedule is a documented compromise.
#
# ## Exercises
#
# 1. Run the chapter with `reward_form = "paper"` and `lam = 0.1`, `0.4` and `1.0`. How do the density
#    curve and the searched widths move? Which budgets are met without projection?
# 2. Turn the random walk off (`CIESSConfig(random_walk=False)`) and compare the spread of widths played
#    per iteration. Does the walk change which budgets are reached?
# 3. Compare `exploration="official"` with `exploration="per-entity"`: how dispersed are the played
#    widths (their coefficient of variation) at the same density? Then try `noise="uniform"` or `"ou"`.
# 4. Interrupt a search with a `checkpoint_dir` after a few iterations (`run(max_iterations=3)`), resume it
#    and check that the result equals an uninterrupted run.
