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
# # Preface and set-up
#
# **What you will learn.** What this book is about, how it is organised, how to install the companion
# package and the data, how to run a chapter with other parameters, and the budget language that every
# later chapter speaks.
#
# **What you need.** Python 3.10 or newer and a few minutes. A GPU is optional: every chapter runs on a
# laptop CPU at its default parameters.
#
# ## Why this book
#
# A recommender gives every user and every item an embedding row of the same width $d$, and those rows are
# most of its memory. Embedding-size search gives each row its own width under a memory budget. The
# methods exist in papers, but their official code keeps a full table and multiplies it by a 0/1 mask, so
# no memory is ever saved; some do not run as published; one (iHAS) has no public code at all. This book
# implements them in one small PyTorch package, `recsize`, on one variable-size embedding core whose bytes
# really shrink, and compares them at equal memory.
#
# ## How the book is organised
#
# | chapter | topic |
# |---|---|
# | 1 | why embedding size matters: memory arithmetic, quality against a uniform width |
# | 2 | data and evaluation protocol: sources, splits, full ranking, metrics |
# | 3 | backbones: MF, NeuMF, NGCF, LightGCN, FM, DeepFM |
# | 4 | variable-size embeddings: masks and memory, compact storage, budgets, baselines |
# | 5-7 | the search methods: DNIS, CIESS, iHAS |
# | 8 | head to head: every method at equal bytes, three seeds; what to use when |
# | appendix | serving compact tables |
#
# Each chapter opens with what you will learn, runs the package on real data, and closes with a summary
# and exercises. The code you see in a chapter calls the package; every public function of the package
# names, in its docstring, the chapter that explains it.
#
# ## Set-up
#
# ```bash
# pip install torch==2.13.0    # or the PyTorch build for your machine (CPU-only, CUDA)
# pip install -e ".[dev]"      # recsize, jupytext, papermill, nbval, jupyter-book
# recsize data fetch ml-100k   # MovieLens-100K into ~/.cache/recsize (or $RECSIZE_DATA)
# jupyter lab notebooks/
# ```

# %% tags=["parameters"]
# Parameters (papermill). This chapter is the same at CI and full-run settings.
d_max = 128  # full run: 128 (the papers' maximum width)
out_dir = "results/ch00"  # figures go here

# %%
# A bad value stops the chapter here, in one line, before any work (explained below).
from recsize.params import check_parameters

check_parameters(globals(), d_max="positive int", out_dir="path")

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import recsize
from recsize.budget import density_from_sparsity, format_bytes
from recsize.data import cache_dir

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
print(
    f"recsize {recsize.__version__}, torch {torch.__version__}, CUDA available: "
    f"{torch.cuda.is_available()}"
)
print(f"data cache: {cache_dir()}")

# %% [markdown]
# Every training function takes a `device` argument (`"cpu"`, `"cuda"`, or `"auto"` for CUDA when there is
# one); the chapters use the CPU so that their outputs are the same everywhere.
#
# ## The budget language
#
# The papers state a budget as a *sparsity* $c$: the fraction of the full $d_{\max}$-wide tables that is
# pruned. recsize speaks of the complementary *density*, the kept fraction $1 - c$. At $d_{\max} = 128$:

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"{'sparsity c':>10s} {'density':>8s} {'mean width':>11s} {'1M rows, float32':>17s}"
)
for c in (0.0, 0.5, 0.8, 0.9, 0.95):
    density = density_from_sparsity(c)
    mean_width = density * d_max
    print(
        f"{c:10.0%} {density:8.0%} {mean_width:11.1f} "
        f"{format_bytes(int(1_000_000 * mean_width * 4)):>17s}"
    )

# %% [markdown]
# A budget is always *exact* in this book: a method and its baselines keep the same number of parameters,
# never "about the same". Chapter 4 shows how.

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.4))
rows = np.logspace(3, 9, 50)
for c in (0.0, 0.8, 0.9, 0.95):
    ax.loglog(rows, rows * d_max * (1 - c) * 4 / 2**30, label=f"c = {c:.0%}")
ax.axhline(80, color="grey", ls="--", lw=1)
ax.text(1.5e3, 100, "one 80 GiB accelerator", fontsize=8, color="grey")
ax.set_xlabel("embedding rows")
ax.set_ylabel("GiB (float32)")
ax.set_title(f"Table memory at d_max = {d_max}")
ax.grid(alpha=0.3, which="both")
ax.legend()
fig.tight_layout()
fig.savefig(out / "budget_memory.png", dpi=120)
plt.show()

# %% [markdown]
# ## Running a chapter with other parameters
#
# Each chapter has a cell tagged `parameters` whose defaults are small, so the chapter runs in a minute;
# the value for a full run is written next to each parameter. papermill runs a chapter with other values,
# and `recsize book run --full` runs every chapter with its full-run values (`notebooks/full_run.json`):
#
# ```bash
# papermill notebooks/ch01_why_size.ipynb out.ipynb --cwd notebooks \
#     -p epochs 300
# papermill notebooks/ch01_why_size.ipynb out.ipynb --cwd notebooks \
#     -y 'dims: [1, 2, 4, 8]'
# recsize book run --full --out results/book-full
# ```
#
# The cell after the `parameters` cell checks every value before the chapter does any work
# (`recsize.params.check_parameters`, as in this chapter): a value of the wrong type or range stops the
# chapter there with one line that names the parameter, the value, what it expects and a valid way to
# pass it. `-p` passes text whenever a value is not a plain number, so a list such as `dims` needs `-y`.
#
# The whole book is also a web site. `recsize book build` executes nothing: a page shows its chapter's
# *published run*, the chapter executed with its full-run parameters
# (`recsize book run --full --publish --chapters NAME` stores it in `book/published/`), as long as the
# chapter's code has not changed since; otherwise it shows the small CI run stored in the chapter's
# `.ipynb` (the outputs the tests re-execute and check). A note under each title says which run the page
# shows, and for a published run its parameters, machine, date and wall time. The build writes
# `book/_build/html/index.html`, which any browser opens.
#
# In JupyterLab (`jupyter lab notebooks/`) a chapter's text form `chNN_*.py` opens as a notebook with a
# right click, *Open With → Notebook*, or with a double click once you have run
# `jupytext-config set-default-viewer python`; saving writes both halves of the pair.
#
# The figures are checked as well: `recsize.plots.overlapping_texts(fig)` lists the texts of a figure
# (tick labels, axis labels, titles, legends) that overlap or run into each other,
# `recsize.plots.covered_texts(fig)` the labels that its data hides (a text inside a plot under a marker
# or crossed by a line, a legend over a marker), and the tests run every chapter with a matplotlib figure
# hook, `recsize.plots.fail_on_overlapping_texts`, that stops the chapter at the `savefig` of such a
# figure.
#
# ## Reproducibility
#
# Every function that draws random numbers takes a seed; the same seed gives the same numbers on the same
# machine, and the tests assert it. Numbers differ slightly across machines and PyTorch builds, which is
# why the README names the machine next to every benchmark figure.
#
# ## Summary
#
# * `recsize` is a small package; the chapters tell the story and call it.
# * Budgets are stated as a sparsity $c$ (pruned fraction, the papers) or a density $1 - c$ (kept fraction).
# * Chapters run small by default; papermill or `recsize book run --full` runs them in full.
#
# ## Exercises
#
# 1. Run `recsize data info ml-100k` and `recsize data info ml-100k --protocol temporal-loo`. Which numbers
#    change?
# 2. At which number of rows does a $d_{\max} = 128$ table stop fitting on one 80 GiB accelerator at
#    $c = 0$, and at $c = 90\,\%$?
