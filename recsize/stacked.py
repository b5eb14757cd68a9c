"""Stacked training: K width-masked LightGCN models sharing a split and one seed's batches, trained in one pass.

Explained in Chapter 8 (the cost of a head-to-head comparison). A comparison at equal bytes trains many small
models one after another that differ only in their per-row width masks (ES, MDE and MR at several budgets, one
seed): the same split, the same BPR batches and negatives (:class:`~recsize.data.BPRSampler` seeded by
``config.seed``), the same initial weights. LightGCN's propagation is linear, so the K models' ego tables,
side by side along the width axis (``N x K*d``), propagate as one wide matrix: one sparse product per layer
instead of K. Everything else stays per model and is exactly what :func:`recsize.train.train` does for it:

* the loss of model k is its own BPR loss plus its own L2 term on its own masked lookups, computed past the
  propagation on tensors of the one-by-one shape; the K losses are summed, and since they share no
  parameter each model's gradient is exactly its own;
* one Adam optimizer (and, with ``lr_decay < 1``, one plateau scheduler) per model, so learning rates decay
  per model;
* a masked model propagates only its live columns (:func:`live_columns`: up to its widest row; ES at
  density 0.1 and d = 64, 7 columns): the columns beyond are zero in every row of its ego table, so they are
  zero after propagation too, and are padded back as zeros instead of being computed (``trim=False``
  propagates all K * d columns);
* validation NDCG@20 (the early-stopping metric) per model every ``eval_every`` epochs, its own best epoch,
  patience and best-weight copy; a model whose patience (or learning rate) runs out stops: its best weights
  are restored, its test split evaluated, and it leaves the wide matrix. The pass ends when every model has
  stopped or the epoch cap is reached.

The result of model k equals, on the CPU bit for bit, what ``seed_everything(seed_k)``, building the same
masked LightGCN and ``train(model, split, config)`` give (``tests/test_stacked.py``): the sparse product
accumulates every output column over the row's nonzeros in the same order whatever the width, and every
reduction (BPR mean, L2 sums, scores for ranking) runs per model on tensors of the one-by-one shape and
layout. The only bits that may differ are signs of zeros (a trimmed column is padded with +0 where the full
propagation can give -0: a masked entry times a negative weight); adding either zero changes no nonzero
value, so no weight, loss or metric sees them. On CUDA the sparse library may pick another algorithm for a
wider matrix, so the two would agree to floating-point rounding there (an early-stopping tie could then
fall the other way).

What it saves (``benchmarks/stacked.py``, ml-100k, one CPU thread): the sparse products cost the same per
column whether K models are stacked or not (and more past ~256 columns, hence :data:`CPU_BLOCK_COLUMNS`),
and every other operation is per model anyway, so stacking alone saves only per-operation overhead on a
CPU; propagating only the live columns saves the dead columns' share of the sparse work, and
:meth:`recsize.backbones.LightGCN.propagate` now does that for a single model too, so on a CPU the pass adds
about a tenth over training the same models one by one. A GPU, where a small model's step is bound by
kernel launches, is where the wide matrix itself should pay.

What differs from K calls of :func:`~recsize.train.train`: ``seconds`` (in the result and its history) is the
wall time of the shared pass until that model stopped; a non-finite loss in any model stops the whole pass
(``FloatingPointError`` naming the model); ``checkpoint`` files are not written (``ValueError``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import backbones
from .backbones import live_columns  # noqa: F401  (part of this module's API)
from .budget import check_sizes
from .data import BPRSampler
from .embedding import masked_factory
from .evaluate import evaluate_topk
from .train import (TrainConfig, TrainResult, default_config, lr_spent, plateau_scheduler, resolve_device,
                    progress_bar, seed_everything)

ROLES = ("user", "item")
SUPPORTED = ("lightgcn",)
# On a CPU the sparse product costs about the same per column up to ~256 columns and ~25 % more at 512 (the
# dense operand leaves the cache), so wider stacks propagate in blocks of at most this many columns.
CPU_BLOCK_COLUMNS = 256


class _Propagated(nn.Module):
    """One model's propagated users and items, with the ``scorer`` that :func:`~recsize.evaluate.evaluate_topk`
    calls: ``all_u[users] @ all_i.T``, as :meth:`recsize.backbones.GraphModel.scorer` does."""

    task = "topk"

    def __init__(self, all_u: torch.Tensor, all_i: torch.Tensor):
        super().__init__()
        self.all_u, self.all_i = all_u, all_i

    def scorer(self):
        return lambda users: self.all_u[users] @ self.all_i.T


def _wide_final(models: list, adj: torch.Tensor, live: list[int], block: int | None) -> list[torch.Tensor]:
    """LightGCN's final embeddings of every model, ``(users + items, d)`` each, from one wide propagation: the
    first ``live[k]`` columns of model k's masked ego table, all models side by side along the width axis, one
    sparse product per layer, the mean over layers 0..L; then split per model and zero-padded back to d.

    Every kept column is the full-width product's column bit for bit (the sparse product accumulates each
    output column over the row's nonzeros in the same order whatever the width, tests/test_stacked.py), and
    the padding is what a full-width propagation gives there, zeros (at most the sign of a zero differs).
    With ``block``, models are stacked up to ``block`` columns at a time (:data:`CPU_BLOCK_COLUMNS`)."""
    d = models[0].dim
    if block is not None and len(models) > 1 and sum(live) > block:   # too wide for the cache: in blocks
        cut = max(1, int(np.searchsorted(np.cumsum(live), block, side="right")))
        return _wide_final(models[:cut], adj, live[:cut], block) + _wide_final(models[cut:], adj, live[cut:], block)

    def side(role):
        tables = [getattr(m, role).table() for m in models]
        return torch.cat([t[:, :w] if w < d else t for t, w in zip(tables, live)], 1)
    e = total = torch.cat([side("user"), side("item")])
    for _ in range(models[0].n_layers):
        e = backbones.propagate_once(adj, e)
        total = total + e
    final = total / (models[0].n_layers + 1)
    return [x if w == d else F.pad(x, (0, d - w)) for x, w in zip(torch.split(final, live, 1), live)]


def _stacked_losses(models: list, adj: torch.Tensor, live: list[int], block: int | None,
                    users, pos, neg) -> list[torch.Tensor]:
    """Each model's loss on one batch, :meth:`recsize.backbones.GraphModel.loss_from` on its share of one wide
    propagation: BPR on the propagated embeddings plus ``reg`` times the L2 of its own masked lookups.
    Past the propagation every operation runs per model on tensors of the one-by-one shape (their reductions
    add in the one-by-one order, and each model's working set stays as small as when it trains alone)."""
    n_users = models[0].n_users
    return [m.loss_from(final[:n_users], final[n_users:], users, pos, neg)
            for m, final in zip(models, _wide_final(models, adj, live, block))]


@torch.no_grad()
def _propagated(models: list, adj: torch.Tensor, live: list[int], block: int | None) -> list[_Propagated]:
    """Every model's propagated embeddings from one wide propagation, each copied out to the contiguous
    ``(users + items, d)`` layout of a single model (so its ranking products are the one-by-one products)."""
    n_users = models[0].n_users
    out = []
    for final in _wide_final(models, adj, live, block):
        own = final.contiguous()
        out.append(_Propagated(own[:n_users], own[n_users:]))
    return out


def _check_config(config) -> TrainConfig:
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a recsize.train.TrainConfig, got {type(config).__name__}: build one with "
                         "recsize.train.default_config('lightgcn', ...)")
    if config.checkpoint:
        raise ValueError("stacked training writes no checkpoint (config.checkpoint is set): leave checkpoint None, "
                         "or train the models one at a time with recsize.train.train")
    return config


def _check_models(models, split) -> list:
    """The models as a list, checked: non-empty, plain LightGCN, one per object, all built for ``split`` with
    the same layers and width (so they propagate over one adjacency as one wide matrix)."""
    if isinstance(models, nn.Module) or not isinstance(models, (list, tuple)):
        raise ValueError(f"models must be a list of LightGCN models, got {type(models).__name__}: pass [model] "
                         "for one")
    models = list(models)
    if not models:
        raise ValueError("models is empty: give at least one LightGCN model to train")
    if hasattr(split, "data") and hasattr(split.data, "n_features"):
        raise ValueError("stacked training needs a top-k split (LightGCN), not the CTR view")
    for j, m in enumerate(models):
        if type(m) is not backbones.LightGCN:
            raise ValueError(f"models[{j}] is a {type(m).__name__}: stacked training supports LightGCN only (its "
                             "propagation is linear, so the tables of K models propagate as one wide matrix); "
                             "train other backbones one at a time with recsize.train.train")
        if (m.n_users, m.n_items) != (split.n_users, split.n_items):
            raise ValueError(f"models[{j}] has {m.n_users} users and {m.n_items} items but the split has "
                             f"{split.n_users} and {split.n_items}: build every model for this split")
        if (m.n_layers, m.dim) != (models[0].n_layers, models[0].dim):
            raise ValueError(f"models[{j}] has {m.n_layers} layers at width {m.dim} but models[0] has "
                             f"{models[0].n_layers} at {models[0].dim}: stack only models of one shape")
    if len({id(m) for m in models}) != len(models) or \
            len({id(p) for m in models for p in m.parameters()}) != sum(1 for m in models for _ in m.parameters()):
        raise ValueError("the same model (or parameter) appears twice in models: give K independent models")
    a = models[0].adj
    for j, m in enumerate(models[1:], 1):
        b = m.adj
        if b.shape != a.shape or b._nnz() != a._nnz() or not (torch.equal(b.crow_indices(), a.crow_indices())
                                                            and torch.equal(b.col_indices(), a.col_indices())
                                                            and torch.equal(b.values(), a.values())):
            raise ValueError(f"models[{j}] was built on another training graph than models[0]: build every model "
                             "from the same split")
    return models


def train_models_stacked(models, split, config: TrainConfig | None = None, trim: bool = True) -> list[TrainResult]:
    """Train the LightGCN ``models`` (built for ``split``; any embedding tables with ``table()`` and lookups:
    plain, masked, element-masked) in one stacked pass, each with its own Adam, plateau scheduler, early
    stopping and best weights, and return one :class:`~recsize.train.TrainResult` per model, in order: what
    ``train(model, split, config)`` returns for each (bit for bit on the CPU; see the module docstring for what
    differs). ``config`` defaults to LightGCN's trainer settings. With ``trim`` (the default) each model
    propagates only its :func:`live_columns` (its masks are read once: they must not change while training),
    which changes no value; ``trim=False`` propagates all K * d columns. Explained in Chapter 8.
    """
    config = _check_config(config if config is not None else default_config("lightgcn"))
    models = _check_models(models, split)
    device = resolve_device(config.device)
    for m in models:
        m.to(device)
    adj = models[0].adj
    widths = [live_columns(m) if trim else m.dim for m in models]
    block = CPU_BLOCK_COLUMNS if device.type == "cpu" else None
    metric = config.metric or "ndcg@20"
    k_all = len(models)
    torch.manual_seed(config.seed)
    sampler = BPRSampler(split.train, seed=config.seed)
    n_batches = sampler.n_batches(config.batch_size)

    def evaluate(model, stage):
        return evaluate_topk(model, split, stage, ks=config.ks, device=device)
    if metric not in evaluate(models[0], "valid"):
        raise ValueError(f"unknown early-stopping metric {metric!r} for a topk model")
    optimizers = [torch.optim.Adam(m.parameters(), lr=config.lr, weight_decay=config.weight_decay) for m in models]
    schedulers = [plateau_scheduler(o, config.lr_decay, config.lr_patience) for o in optimizers]
    state = [{"best": -np.inf, "best_epoch": 0, "best_state": None, "best_valid": None, "bad_rounds": 0,
              "history": []} for _ in models]
    results: list[TrainResult | None] = [None] * k_all
    active = list(range(k_all))
    settings = {**asdict(config), "metric": metric, "model": "LightGCN", "stacked": k_all}
    start = time.perf_counter()
    bar = progress_bar(range(1, config.epochs + 1), config.progress,
                       desc=f"train {k_all} LightGCN stacked", unit="epoch", leave=False)
    for epoch in bar:
        group = [models[j] for j in active]
        live = [widths[j] for j in active]
        for m in group:
            m.train()
        totals = torch.zeros(len(active), device=device)
        for b, (users, pos, neg) in enumerate(sampler.epoch(config.batch_size, device)):
            losses = torch.stack(_stacked_losses(group, adj, live, block, users, pos, neg))
            finite = torch.isfinite(losses)
            if not finite.all():
                j = active[int((~finite).nonzero()[0])]
                raise FloatingPointError(
                    f"loss of models[{j}] became {losses[active.index(j)].item()} at epoch {epoch}, batch "
                    f"{b + 1}/{n_batches} of the stacked LightGCN pass: lower the learning rate (now {config.lr}) "
                    "or the initial weights' scale, and check the input data for NaN")
            for j in active:
                optimizers[j].zero_grad(set_to_none=True)
            losses.sum().backward()
            for j in active:
                optimizers[j].step()
            totals += losses.detach()
        evaluated = epoch % config.eval_every == 0 or epoch == config.epochs
        propagated = _propagated(group, adj, live, block) if evaluated else None
        still = []
        for i, j in enumerate(active):
            s, model, optimizer = state[j], models[j], optimizers[j]
            row = {"epoch": epoch, "loss": float(totals[i]) / n_batches}
            if evaluated:
                valid = evaluate(propagated[i], "valid")
                row[metric] = valid[metric]
                if valid[metric] > s["best"]:
                    s.update(best=valid[metric], best_epoch=epoch, bad_rounds=0, best_valid=valid,
                             best_state=copy.deepcopy(model.state_dict()))
                else:
                    s["bad_rounds"] += 1
                if schedulers[j] is not None:
                    schedulers[j].step(valid[metric])
                    row["lr"] = optimizer.param_groups[0]["lr"]
            row["seconds"] = time.perf_counter() - start
            s["history"].append(row)
            if s["bad_rounds"] > config.patience or lr_spent(optimizer, config.min_lr) or epoch == config.epochs:
                results[j] = _finish(model, s, evaluate, config, settings, start)
            else:
                still.append(j)
        active = still
        bar.set_postfix(training=len(active))
        if not active:
            break
    bar.close()
    return results


def _finish(model, s: dict, evaluate, config: TrainConfig, settings: dict, start: float) -> TrainResult:
    """Restore a stopped model's best weights, evaluate its test split once: its :class:`TrainResult`."""
    model.load_state_dict(s["best_state"])
    test = evaluate(model, "test") if config.test else None
    return TrainResult(s["best_epoch"], s["best_valid"], test, s["history"], time.perf_counter() - start,
                       dict(settings), model)


def _checked_widths(widths_list, split, d_max: int) -> list[dict | None]:
    if isinstance(widths_list, dict) or not isinstance(widths_list, (list, tuple)):
        raise ValueError(f"widths_list must be a list with one widths dict per model, got "
                         f"{type(widths_list).__name__}: pass [{{'user': ..., 'item': ...}}] for one model")
    if not widths_list:
        raise ValueError("widths_list is empty: give one widths dict {'user': widths, 'item': widths} (or None for "
                         "full width) per model to train")
    rows = {"user": split.n_users, "item": split.n_items}
    checked = []
    for j, widths in enumerate(widths_list):
        if widths is None:
            checked.append(None)
            continue
        if not isinstance(widths, dict) or not set(ROLES) <= set(widths):
            got = f"the roles {sorted(widths)}" if isinstance(widths, dict) else f"a {type(widths).__name__}"
            raise ValueError(f"widths_list[{j}] must be a dict with the roles 'user' and 'item' (one width per "
                             f"row of each table), got {got}")
        own = {}
        for role in ROLES:
            try:
                own[role] = check_sizes(widths[role], rows[role], d_max)
            except ValueError as e:
                raise ValueError(f"widths_list[{j}][{role!r}] does not fit the split's {rows[role]} {role} rows "
                                 f"at d_max = {d_max}: {e}") from None
        checked.append(own)
    return checked


def train_stacked(backbone: str, split, widths_list, config: TrainConfig | None = None, d_max: int = 64,
                  seeds=None, init: str | None = None, trim: bool = True, **model_kwargs) -> list[TrainResult]:
    """Train one width-masked ``backbone`` (LightGCN only) per entry of ``widths_list`` on ``split``, all in one
    stacked pass (:func:`train_models_stacked`), and return their results in order.

    ``widths_list[k]`` is ``{"user": widths, "item": widths}`` (one integer width in [0, d_max] per row, as
    :func:`recsize.search.baselines.baseline_sizes` gives them; other roles are ignored, LightGCN has none) or None
    (full width). Model k is built as
    :func:`recsize.train.fit` builds it (``seed_everything(seeds[k])``, the backbone's settings from
    :data:`recsize.backbones.DEFAULTS` overridden by ``model_kwargs``, :func:`~recsize.embedding.masked_factory`
    tables initialised by ``init``, default the backbone's); ``seeds`` defaults to ``config.seed`` for every
    model, which is what ``fit`` and ``run_baseline`` do. Batches and negatives always follow ``config.seed``.
    Each result equals ``train(model_k, split, config)`` (bit for bit on the CPU); ``trim`` as in
    :func:`train_models_stacked`. Explained in Chapter 8.
    """
    name = backbone.lower() if isinstance(backbone, str) else backbone
    if name not in SUPPORTED:
        raise ValueError(f"stacked training supports backbone 'lightgcn' only (its propagation is linear, so the "
                         f"tables of K models propagate as one wide matrix), got {backbone!r}: train it one model "
                         "at a time with recsize.train.fit or recsize.search.run_baseline")
    config = _check_config(config if config is not None else default_config(name))
    if hasattr(split, "data") and hasattr(split.data, "n_features"):
        raise ValueError(f"{name} is a top-k backbone: give it a top-k split, not the CTR view")
    if not isinstance(d_max, (int, np.integer)) or d_max < 1:
        raise ValueError(f"d_max must be a positive integer, got {d_max!r}")
    widths = _checked_widths(widths_list, split, int(d_max))
    if seeds is None:
        seeds = [config.seed] * len(widths)
    elif not isinstance(seeds, (list, tuple)) or len(seeds) != len(widths) or \
            not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a list of {len(widths)} integer init seeds (one per model), got {seeds!r}")
    model_defaults, _ = backbones.defaults_for(name)
    init = init or backbones.DEFAULTS[name].get("init", "xavier")
    models = []
    for own, seed in zip(widths, seeds):
        seed_everything(int(seed))
        models.append(backbones.build_backbone(name, split, int(d_max), embedding=masked_factory(own, int(d_max), init),
                                               **{**model_defaults, **model_kwargs}))
    return train_models_stacked(models, split, config, trim=trim)
