"""DNIS: differentiable neural input search (Cheng, Shen, Huang, arXiv 2006.04466). Explained in Chapter 5.

A width per embedding row is a discrete choice; DNIS relaxes it into a continuous one and learns it by
gradient descent on the validation loss.

1. **Frequency blocks.** The rows of every table are ranked by training frequency (most frequent first)
   and cut into K blocks, 10 blocks of 10 % by default (or any fractions, e.g. (0.1, 0.2, 0.2, 0.2, 0.3)).
   The paper re-indexes the ids so that the blocks are contiguous; recsize keeps the ids and stores each
   row's block (``row_block``), which is the same thing.
2. **Soft selection layer.** alpha, one weight per (block, dimension), a K x d_max matrix initialised to
   1 and kept in [0, 1]. A lookup of row n returns E[n] * alpha[block(n)]: alpha says how much each
   dimension of each block is worth. It is applied through the soft-weight hook of
   :class:`~recsize.embedding.MaskedEmbedding` (``set_soft_weights(alpha, row_block)``). By default
   every table is ranked on its own and gets its own blocks and alpha (users and items; NeuMF's four
   tables; the one ``feature`` table of FM and DeepFM); ``block_ranking="joint"`` ranks the rows of all
   tables together and shares ONE alpha, as the authors' one table of users and items.
3. **Bi-level optimisation.** min_alpha L_val(Theta*(alpha), alpha) + lambda * sum|alpha| subject to
   Theta*(alpha) = argmin_Theta L_train(Theta, alpha). After a warm start that trains every weight with
   alpha fixed at 1, the two levels alternate batch by batch:

   * (i) embedding step: one Adam step on the embedding tables (and CTR first-order weights) on a
     training batch; every other weight (MLPs, the global bias) stays frozen;
   * (ii) alpha step (on a validation batch): the gradient of the validation loss plus the L1 term lambda * sum|alpha|
     (lambda = 1e-5) with respect to alpha, normalised per block by its mean absolute value (so that
     the blocks of frequent rows, which see most of the gradient, do not dominate), one SGD step
     (lr 0.01), then alpha is clamped to [0, 1].

   First-order by default: the gradient is taken at the current weights. ``second_order=True`` adds the
   DARTS-style unrolled term: with w' = w - xi * grad_w L_train(w, alpha) (one virtual SGD step),
   grad_alpha L_val(w', alpha) - xi * grad^2_{alpha, w} L_train(w, alpha) . grad_{w'} L_val(w', alpha),
   the mixed second derivative computed exactly by double back-propagation.
4. **Deriving the model under a budget** (``derive``). One search serves every budget.

   * ``"in-place"`` (the default, the authors' pruning): the *trained* tables are pruned. Every entry is
     scored by ``prune_by``: |E[n, j]| (``"weight"``, the default: the authors' pruning notebook
     thresholds |E| and evaluates the pruned model without further training; the alpha product is
     commented out there) or
     |alpha[block(n), j] * E[n, j]| (``"alpha-weight"``: the VLDB'24 benchmark's re-implementation, Hetu's
     ``methods/scheduler/autosrh.py``). The budget is a fraction of the dense tables' *bytes*, the kept
     entries stored as CSR with their column indices and row offsets counted
     (:func:`~recsize.search.prune.element_budget`); one threshold over all tables (``budget_split=
     "global"``, the authors' one joint table) or one per table (``"per-table"``) keeps exactly the count
     that fits. Alpha is folded into the weights (same predictions), the pruned entries are set to 0 and
     the model is fine-tuned with the masks fixed (ours, as MagPrune), then stored as CSR
     (:func:`fine_tune_in_place`).
   * ``"prefix-retrain"`` (recsize's earlier derivation): only the *count* of kept entries per row
     survives, as a prefix width; a threshold t is binary-searched until the kept fraction is within
     1e-3 of the target density, then the entries nearest t are added or removed (ties: the more
     frequent row first) so that exactly ``target_parameters(density, rows, d_max)`` entries are kept,
     over all tables (``"global"``) or in every table (``"per-table"``); every row keeps at least
     ``min_size`` dimensions; ``granularity="block"`` averages the scores per (block, dimension) for one
     width per block. A fresh model is trained from scratch with those widths and stored compact
     (:func:`train_with_sizes`). The budget is a fraction of the *parameters*.
5. **Convergence.** The warm start, the search and every fine-tuning or retraining run to an epoch cap
   (300) with early stopping (patience 10) and decay the learning rate on a validation plateau
   (``ReduceLROnPlateau``, factor 0.1), stopping once it reaches 1e-6 (warm start, retraining) or 1e-5
   (search). The authors stop both at 1e-6 (``main_nas.py``; its message says 1e-5) and cap the warm
   start at 20 and the search at 50 epochs.

Which of these design points follow the paper and the authors' code (``SJTU-DMTai/AutoSrh``) and which
are recsize's own, with the file each was read in and why, is the one list
:data:`recsize.search.departures.DNIS` (rendered as Chapter 5.8's table).

The batch streams and the embedding step of the search (section 3) and the retraining with derived widths
(section 6, :func:`~recsize.search.dnis_train.train_with_sizes`) are :mod:`recsize.search.dnis_train`; every name
Chapter 5 reads as ``dnis.xxx`` is defined here.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..budget import check_budget, target_parameters
from ..files import save_npz
from .baselines import role_counts
from .dnis_train import (_batches, _data_term_only, _finite, _mixed_second_derivative, embedding_parameters,
                         embedding_step, n_train_batches, n_valid_batches, train_with_sizes)

GRAD_EPS = 1e-8  # keeps the per-block normalisation finite when a block got no gradient
GRANULARITIES = ("row", "block")
DERIVATIONS = ("in-place", "prefix-retrain")
PRUNE_BY = ("weight", "alpha-weight")
BUDGET_SPLITS = ("global", "per-table")
ALTERNATIONS = ("zip", "every-batch")
BLOCK_RANKINGS = ("per-table", "joint")


@dataclass
class DNISConfig:
    """Every setting of a DNIS search. Defaults follow the paper and its official run scripts where they
    give a value. Explained in Chapter 5."""

    d_max: int = 64                       # full width of every table
    blocks: int | tuple = 10              # K equal frequency blocks, or the fraction of rows in each block
    block_ranking: str = "per-table"      # rank each table on its own; "joint": users and items together,
                                          # one alpha shared by all tables (the authors' data/dataset.py)
    warm_epochs: int = 300                # cap of the warm start with alpha fixed at 1 (early stopping)
    search_epochs: int = 300              # cap of the alternating epochs (early stopping)
    alternation: str = "zip"              # "zip": (train, valid) batch pairs, as the authors; "every-batch"
    alpha_lr: float = 0.01                # SGD learning rate of alpha
    l1: float = 1e-5                      # lambda of the L1 term lambda * sum|alpha|
    grad_norm: bool = True                # normalise alpha's gradient per block by its mean |.|
    second_order: bool = False            # DARTS-style unrolled hypergradient
    unroll_lr: float | None = None        # xi of the virtual step (default: the embedding learning rate)
    granularity: str = "row"              # "row": magnitude per entry; "block": one width per block
    min_size: int = 1                     # every row keeps at least this many dimensions
    tolerance: float = 1e-3               # binary search stops within this kept fraction of the target
    derive: str = "in-place"              # "in-place": prune the trained table, fine-tune (the authors);
                                          # "prefix-retrain": widths only, retrain from scratch
    prune_by: str = "weight"              # "weight": |E| (authors' notebook); "alpha-weight": |alpha x E| (Hetu)
    budget_split: str = "global"          # one threshold over all tables (the authors) or "per-table"
    retrain_epochs: int = 300             # cap of the fine-tuning / retraining (early stopping)
    patience: int = 10
    lr_decay: float = 0.1                 # ReduceLROnPlateau factor (the authors' code; 1: constant lr)
    lr_patience: int = 5                  # ... its patience in the warm start and retraining (authors: 0)
    search_lr_patience: int = 5           # ... and in the search (authors: 1)
    min_lr: float = 1e-6                  # warm start and retraining stop at this lr (authors: 1e-6)
    search_min_lr: float = 1e-5           # the search stops at this lr (ours: authors 1e-6, main_nas.py)
    seed: int = 0
    device: str = "cpu"
    progress: bool | None = None
    train_overrides: dict = field(default_factory=dict)  # trainer settings (lr, batch_size, weight_decay)

    def __post_init__(self):
        self.blocks = self.blocks if isinstance(self.blocks, (int, np.integer)) else tuple(self.blocks)
        block_fractions(self.blocks)  # raises for a bad value
        for name in ("d_max", "retrain_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warm_epochs", "search_epochs", "patience", "min_size"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_size > self.d_max:
            raise ValueError(f"min_size ({self.min_size}) cannot exceed d_max ({self.d_max})")
        if not self.alpha_lr > 0:
            raise ValueError(f"alpha_lr must be > 0, got {self.alpha_lr}")
        if not self.l1 >= 0:
            raise ValueError(f"l1 (lambda, the weight of sum|alpha|) must be >= 0, got {self.l1}")
        if self.unroll_lr is not None and not self.unroll_lr > 0:
            raise ValueError(f"unroll_lr (xi) must be > 0, got {self.unroll_lr}")
        for name, allowed in (("granularity", GRANULARITIES), ("derive", DERIVATIONS), ("prune_by", PRUNE_BY),
                              ("budget_split", BUDGET_SPLITS), ("alternation", ALTERNATIONS),
                              ("block_ranking", BLOCK_RANKINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must lie in (0, 1] (1: constant learning rate), got {self.lr_decay}")
        for name in ("lr_patience", "search_lr_patience"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_lr", "search_min_lr"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must lie in (0, 1), got {self.tolerance}")
        unknown = set(self.train_overrides) - {"lr", "batch_size", "weight_decay"}
        if unknown:
            raise ValueError(f"train_overrides accepts lr, batch_size and weight_decay, got {sorted(unknown)}")


# ---------------------------------------------------------------------------------------------------
# 1. Frequency blocks
# ---------------------------------------------------------------------------------------------------

def block_fractions(blocks) -> np.ndarray:
    """The fraction of rows in each frequency block: K equal blocks for an integer K >= 1, or the given
    fractions (positive, summing to 1). Explained in Chapter 5."""
    if isinstance(blocks, (bool, np.bool_)):
        raise ValueError(f"blocks must be a number of blocks or a list of fractions, got {blocks!r}")
    if isinstance(blocks, (int, np.integer)):
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1 (the number of frequency blocks), got {blocks}")
        return np.full(int(blocks), 1.0 / int(blocks))
    fractions = np.asarray(blocks, dtype=np.float64)
    if fractions.ndim != 1 or len(fractions) < 1 or not np.isfinite(fractions).all() or (fractions <= 0).any() \
            or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(f"block fractions must be positive and sum to 1, e.g. (0.1, 0.2, 0.2, 0.2, 0.3), "
                         f"got {tuple(blocks)}")
    return fractions


def frequency_blocks(counts, blocks=10) -> np.ndarray:
    """The frequency block of every row: rows ranked by descending training frequency (ties: lower id
    first) and cut into consecutive blocks; block 0 holds the most frequent rows. Explained in Chapter 5."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 1:
        raise ValueError(f"counts must be one training frequency per row, got shape {counts.shape}")
    fractions = block_fractions(blocks)
    n = len(counts)
    bounds = np.round(np.cumsum(fractions) * n).astype(np.int64)
    bounds[-1] = n
    if (np.diff(np.concatenate([[0], bounds])) < 1).any():
        raise ValueError(f"a table of {n} rows cannot be cut into {len(fractions)} non-empty frequency blocks "
                         f"with fractions {np.round(fractions, 4).tolist()}: use fewer blocks (--blocks)")
    order = np.lexsort((np.arange(n), -counts))  # most frequent first
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return np.searchsorted(bounds, rank, side="right").astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# 2. The soft selection layer
# ---------------------------------------------------------------------------------------------------

def attach_soft_selection(model: nn.Module, counts_by_role: dict, blocks=10,
                          ranking: str = "per-table") -> dict[str, nn.Parameter]:
    """Give every masked table of ``model`` its frequency blocks and a soft selection layer alpha
    (blocks x d_max, initialised to 1), applied to the looked-up rows through
    ``MaskedEmbedding.set_soft_weights``. ``ranking="per-table"``: every table is ranked and cut on its
    own and gets its own alpha; ``"joint"`` (the authors' ``data/dataset.py``, ``model/nas.py``): the rows
    of all tables are ranked together by frequency and cut into K blocks, and ONE alpha is shared by
    every table, so a block's weights serve its users and its items alike. Returns alpha by role (under
    ``"joint"`` the same parameter for every role). Explained in Chapter 5."""
    if ranking not in BLOCK_RANKINGS:
        raise ValueError(f"ranking must be one of {', '.join(BLOCK_RANKINGS)}, got {ranking!r}")
    tables = model.embedding_tables()
    for role, table in tables.items():
        if not hasattr(table, "set_soft_weights"):
            raise TypeError(f"table {role!r} is a {type(table).__name__}; DNIS needs MaskedEmbedding tables "
                            "(build the backbone with recsize.embedding.masked_factory())")
        if role not in counts_by_role:
            raise ValueError(f"no training frequencies for table {role!r}")
        if len(counts_by_role[role]) != table.num_rows:
            raise ValueError(f"table {role!r} has {table.num_rows} rows but {len(counts_by_role[role])} frequencies")
    if ranking == "per-table":
        row_blocks = {role: frequency_blocks(counts_by_role[role], blocks) for role in tables}
    else:
        if len({table.dim for table in tables.values()}) > 1:
            raise ValueError("joint frequency blocks need tables of one width (d_max)")
        joint = frequency_blocks(np.concatenate([np.asarray(counts_by_role[r], dtype=np.float64)
                                                 for r in tables]), blocks)
        bounds = np.cumsum([0] + [tables[r].num_rows for r in tables])
        row_blocks = {role: joint[bounds[i]:bounds[i + 1]] for i, role in enumerate(tables)}
        first = next(iter(tables.values()))
        shared = nn.Parameter(torch.ones(int(joint.max()) + 1, first.dim, device=first.weight.device))
    alphas = {}
    for role, table in tables.items():
        device = table.weight.device
        alpha = shared if ranking == "joint" else \
            nn.Parameter(torch.ones(int(row_blocks[role].max()) + 1, table.dim, device=device))
        table.set_soft_weights(alpha, torch.from_numpy(row_blocks[role]).to(device))
        alphas[role] = alpha
    return alphas


def unique_alphas(alphas: dict) -> list[nn.Parameter]:
    """The distinct alpha parameters of ``alphas`` (by role), each once: under the joint ranking every
    role holds the same one, which must take one step and pay its L1 term once. Explained in Chapter 5."""
    return list({id(a): a for a in alphas.values()}.values())


def clamp_alpha_(alphas) -> None:
    """Project every alpha back into [0, 1], in place (after every alpha step). Explained in Chapter 5."""
    with torch.no_grad():
        for alpha in alphas:
            alpha.clamp_(0.0, 1.0)


def normalise_per_block(grad: torch.Tensor) -> torch.Tensor:
    """alpha's gradient with every block (row of alpha) divided by its mean absolute value, so that all
    blocks move at the same pace whatever their frequency. Explained in Chapter 5."""
    return grad / (grad.abs().mean(dim=1, keepdim=True) + GRAD_EPS)


# ---------------------------------------------------------------------------------------------------
# 3. The alternating steps: the alpha step (the batches and the embedding step: recsize.search.dnis_train)
# ---------------------------------------------------------------------------------------------------

def alpha_step(model, val_batch, alphas: list[nn.Parameter], config: DNISConfig,
               params=None, unrolled=None) -> float:
    """(ii) One SGD step on alpha for a validation batch: the gradient of
    L_val + lambda * sum|alpha|, normalised per block, then alpha is clamped to [0, 1].
    Only alpha changes. With ``unrolled`` = (training batch, weights before the
    embedding step, xi), the second-order term is subtracted first (``params``: the
    embedding weights). Returns the validation loss. Explained in Chapter 5.
    (Printed in Chapter 5: kept within 88 columns.)"""
    with _data_term_only(model):
        val_loss = _finite(model.loss(*val_batch), "validation")
    objective = val_loss + config.l1 * sum(a.abs().sum() for a in alphas)
    if unrolled is None:
        grads = list(torch.autograd.grad(objective, alphas))
    else:
        train_batch, weights_before, xi = unrolled
        weights = list(params.values())
        both = torch.autograd.grad(objective, alphas + weights)
        grads, v = list(both[:len(alphas)]), list(both[len(alphas):])
        mixed = _mixed_second_derivative(model, train_batch, weights_before, alphas, v)
        grads = [g - xi * m for g, m in zip(grads, mixed)]
    with torch.no_grad():
        for alpha, g in zip(alphas, grads):
            step = normalise_per_block(g) if config.grad_norm else g
            alpha.sub_(config.alpha_lr * step)
    clamp_alpha_(alphas)
    return float(val_loss.detach())


# ---------------------------------------------------------------------------------------------------
# 4. The search: warm start, then alternating updates
# ---------------------------------------------------------------------------------------------------

@dataclass
class DNISSearch:
    """What :func:`search` produced: the model with its learned alpha (weights and alpha of the best
    validation epoch), alpha and the frequency blocks by role, the training frequencies, the history of
    the alternating epochs and the wall times. Explained in Chapter 5."""

    backbone: str
    config: DNISConfig
    alphas: dict[str, np.ndarray]
    row_blocks: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    history: list
    warm: dict | None
    best_epoch: int
    seconds: dict
    model: nn.Module | None = field(default=None, repr=False)

    def importance(self, granularity: str | None = None, prune_by: str | None = None) -> dict[str, np.ndarray]:
        """The importance of every entry of every table, (rows, d_max) by role: |E[n, j]| (``prune_by=
        "weight"``, the authors' pruning notebook) or |alpha[block(n), j] * E[n, j]| (``"alpha-weight"``,
        Hetu), per entry (``granularity="row"``) or averaged over the rows of block(n) (``"block"``: equal
        for all rows of a block). Defaults: the search's config. Explained in Chapter 5."""
        granularity = granularity or self.config.granularity
        prune_by = prune_by or self.config.prune_by
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
        if prune_by not in PRUNE_BY:
            raise ValueError(f"prune_by must be one of {', '.join(PRUNE_BY)}, got {prune_by!r}")
        scores = {}
        for role, table in self.model.embedding_tables().items():
            weights = table.table() if prune_by == "alpha-weight" else table.weight
            entry = weights.detach().abs().cpu().numpy().astype(np.float64)
            if granularity == "block":
                blocks = self.row_blocks[role]
                per_block = np.zeros((int(blocks.max()) + 1, entry.shape[1]))
                np.add.at(per_block, blocks, entry)
                per_block /= np.bincount(blocks)[:, None]
                entry = per_block[blocks]
            scores[role] = entry
        return scores

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "config": asdict(self.config), "best_epoch": self.best_epoch,
                "history": self.history, "warm": self.warm, "seconds": self.seconds,
                "alpha": {r: a.tolist() for r, a in self.alphas.items()}}


def _train_config(backbone: str, config: DNISConfig, epochs: int, test: bool):
    """The trainer settings of the warm start and the retraining: the backbone's, with DNIS's epoch cap,
    patience and learning-rate decay on plateau (stop at ``min_lr``)."""
    from ..train import default_config
    return default_config(backbone, **{**config.train_overrides, "epochs": max(int(epochs), 1),
                                       "patience": config.patience, "seed": config.seed,
                                       "device": config.device, "progress": config.progress, "test": test,
                                       "lr_decay": config.lr_decay, "lr_patience": config.lr_patience,
                                       "min_lr": config.min_lr})


def _check_backbone(backbone: str) -> str:
    from ..backbones import BACKBONES
    name = str(backbone).lower()
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    return name


def search(backbone: str, split, config: DNISConfig | None = None, **model_kwargs) -> DNISSearch:
    """Run the DNIS search for ``backbone`` on ``split`` (top-k :class:`~recsize.data.Split` or
    :class:`~recsize.data.CTRSplit`): warm start with alpha fixed at 1, then ``search_epochs`` epochs of
    alternating embedding and alpha steps. Model settings not given fall back to the backbone's
    defaults. Explained in Chapter 5."""
    from ..backbones import DEFAULTS, build_backbone, defaults_for
    from ..embedding import masked_factory
    from ..evaluate import evaluate_ctr, evaluate_topk
    from ..train import lr_spent, plateau_scheduler, progress_bar, resolve_device, seed_everything, train

    config = config or DNISConfig()
    backbone = _check_backbone(backbone)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    init = DEFAULTS[backbone].get("init", "xavier")
    model = build_backbone(backbone, split, config.d_max, embedding=masked_factory(None, config.d_max, init=init),
                           **{**defaults_for(backbone)[0], **model_kwargs}).to(device)
    counts = {role: c for role, c in role_counts(split).items() if role in model.embedding_tables()}
    alphas = attach_soft_selection(model, counts, config.blocks, config.block_ranking)
    alpha_list = unique_alphas(alphas)
    for a in alpha_list:
        a.requires_grad_(False)  # alpha is fixed during the warm start

    start = time.perf_counter()
    warm = None
    if config.warm_epochs > 0:
        result = train(model, split, _train_config(backbone, config, config.warm_epochs, test=False))
        warm = {"best_epoch": result.best_epoch, "valid": result.valid, "epochs": len(result.history),
                "seconds": result.seconds}
    warm_seconds = time.perf_counter() - start

    for a in alpha_list:
        a.requires_grad_(True)
    train_config = _train_config(backbone, config, 1, test=False)
    params = embedding_parameters(model)
    optimizer = torch.optim.Adam(params.values(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    xi = config.unroll_lr or train_config.lr
    train_stream = _batches(model, split, "train", train_config.batch_size, config.seed, device)
    valid_stream = _batches(model, split, "valid", train_config.batch_size, config.seed + 1, device)
    n_batches = n_train_batches(model, split, train_config.batch_size)
    if config.alternation == "zip":  # the authors zip the two loaders: an epoch stops at the shorter one
        n_batches = min(n_batches, n_valid_batches(model, split, train_config.batch_size))
    scheduler = plateau_scheduler(optimizer, config.lr_decay, config.search_lr_patience)
    evaluate = (lambda: evaluate_topk(model, split, "valid", device=device)) if model.task == "topk" \
        else (lambda: evaluate_ctr(model, split, "valid", device=device))
    metric = "ndcg@20" if model.task == "topk" else "auc"

    history, best, best_epoch, best_state, bad_rounds = [], -np.inf, 0, None, 0
    bar = progress_bar(range(1, config.search_epochs + 1), config.progress, desc=f"DNIS {backbone}",
                       unit="epoch", leave=False)
    for epoch in bar:
        model.train()
        train_loss = valid_loss = 0.0
        for _ in range(n_batches):
            batch = next(train_stream)
            before = {n: p.detach().clone() for n, p in params.items()} if config.second_order else None
            train_loss += embedding_step(model, batch, params, optimizer)
            unrolled = (batch, before, xi) if config.second_order else None
            valid_loss += alpha_step(model, next(valid_stream), alpha_list, config, params, unrolled)
        valid = evaluate()
        row = {"epoch": epoch, "train_loss": train_loss / n_batches, "valid_loss": valid_loss / n_batches,
               metric: valid[metric], "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start,
               "alpha_mean": {r: a.detach().mean(1).cpu().tolist() for r, a in alphas.items()}}
        history.append(row)
        bar.set_postfix(**{metric: f"{valid[metric]:.4f}"})
        if valid[metric] > best:
            best, best_epoch, best_state, bad_rounds = valid[metric], epoch, copy.deepcopy(model.state_dict()), 0
        else:
            bad_rounds += 1
        if scheduler is not None:
            scheduler.step(valid[metric])
        if bad_rounds > config.patience or lr_spent(optimizer, config.search_min_lr):
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    for a in alpha_list:
        a.requires_grad_(False)
    seconds = {"warm": warm_seconds, "alternating": time.perf_counter() - start - warm_seconds,
               "total": time.perf_counter() - start}
    tables = model.embedding_tables()
    return DNISSearch(backbone, config, {r: a.detach().cpu().numpy().copy() for r, a in alphas.items()},
                      {r: tables[r].row_block.cpu().numpy().copy() for r in alphas}, counts, history, warm,
                      best_epoch, seconds, model)


# ---------------------------------------------------------------------------------------------------
# 5. Deriving widths that meet a budget exactly
# ---------------------------------------------------------------------------------------------------

def _checked_scores(scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"importance scores must be a (rows, d_max) matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all() or (scores < 0).any():
        raise ValueError("importance scores must be finite and non-negative (magnitudes)")
    return scores


def kept_sizes(scores, threshold: float, min_size: int = 1) -> np.ndarray:
    """The width of every row when the entries above ``threshold`` are kept: max(min_size, #{j: s_nj > t}).
    Explained in Chapter 5."""
    return np.maximum((np.asarray(scores) > threshold).sum(1), min_size).astype(np.int64)


def threshold_for_density(scores, density: float, min_size: int = 1, tolerance: float = 1e-3,
                          max_iter: int = 200) -> tuple[float, float]:
    """Binary-search the threshold t whose kept fraction sum(d_n) / (rows * d_max) lies within
    ``tolerance`` of ``density``; returns (t, kept fraction). Ties can make the kept fraction jump past
    the target: then the closest one found is returned (:func:`derive_sizes` makes it exact anyway).
    Explained in Chapter 5."""
    scores = _checked_scores(scores)
    total = scores.size
    lo, hi = -1.0, float(scores.max())       # kept(lo) = 1 (all), kept(hi) = the min_size floor
    best_t, best_kept = lo, 1.0
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        kept = kept_sizes(scores, mid, min_size).sum() / total
        if abs(kept - density) < abs(best_kept - density):
            best_t, best_kept = mid, kept
        if abs(kept - density) <= tolerance or hi - lo <= 1e-12 * max(1.0, abs(hi)):
            break
        lo, hi = (mid, hi) if kept > density else (lo, mid)
    return float(best_t), float(best_kept)


def derive_sizes(scores, density: float, min_size: int = 1, tolerance: float = 1e-3, order=None
                 ) -> tuple[np.ndarray, dict]:
    """Integer widths (one per row) that keep exactly ``target_parameters(density, rows, d_max)``
    entries, the most important ones: binary-search the threshold (:func:`threshold_for_density`), then
    add the highest-scoring dropped entries or drop the lowest-scoring kept ones until the total is
    exact. Among equal scores the lower position (dimension rank within its row) goes first, then the row
    that comes first in ``order`` (default: row id), so tied rows grow evenly.
    Every row keeps at least ``min_size``. Returns the widths and what the search found.
    Explained in Chapter 5."""
    scores = _checked_scores(scores)
    n, d_max = scores.shape
    target = target_parameters(check_budget(density), n, d_max)
    if not 0 <= min_size <= d_max:
        raise ValueError(f"min_size must lie in [0, d_max = {d_max}], got {min_size}")
    if target < n * min_size:
        raise ValueError(f"density {density:g} keeps {target} parameters for {n} rows, fewer than min_size = "
                         f"{min_size} per row: use a density of at least {min_size / d_max:.4g} or lower min_size")
    threshold, kept = threshold_for_density(scores, density, min_size, tolerance)
    sizes = kept_sizes(scores, threshold, min_size)
    # every row keeps its highest entries: sort each row, then move the boundary of the rows nearest t
    ranked = -np.sort(-scores, axis=1)
    position = np.broadcast_to(np.arange(d_max), scores.shape)
    row_rank = np.empty(n, dtype=np.int64)
    row_rank[np.arange(n) if order is None else np.asarray(order)] = np.arange(n)
    rank = np.broadcast_to(row_rank[:, None], scores.shape)
    diff = target - int(sizes.sum())
    if diff > 0:    # add the best dropped entries (within a row they come in order, so widths grow)
        free = position >= sizes[:, None]
        pick = np.lexsort((rank[free], position[free], -ranked[free]))[:diff]
        np.add.at(sizes, np.nonzero(free)[0][pick], 1)
    elif diff < 0:  # drop the weakest kept entries above the floor (from the end of each row)
        extra = (position < sizes[:, None]) & (position >= min_size)
        pick = np.lexsort((-rank[extra], -position[extra], ranked[extra]))[:-diff]
        np.add.at(sizes, np.nonzero(extra)[0][pick], -1)
    return sizes, {"threshold": threshold, "kept_at_threshold": kept, "target": target,
                   "adjusted": abs(diff), "density": int(sizes.sum()) / (n * d_max)}


def budget_sizes(result: DNISSearch, density: float, granularity: str | None = None,
                 min_size: int | None = None, prune_by: str | None = None, budget_split: str | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Prefix widths per table at ``density`` (a fraction of the *parameters*) from a finished search, by
    the importance of :meth:`DNISSearch.importance` (``prune_by``, ``granularity``); ties go to the more
    frequent row. ``budget_split="global"`` ranks all tables together (one threshold, as the authors' one
    joint table; the tables must share d_max) and keeps exactly ``target_parameters(density, all rows,
    d_max)`` entries; ``"per-table"`` keeps exactly each table's share. Settings not given come from the
    search's config. Explained in Chapter 5."""
    cfg = result.config
    min_size = cfg.min_size if min_size is None else min_size
    budget_split = budget_split or cfg.budget_split
    if budget_split not in BUDGET_SPLITS:
        raise ValueError(f"budget_split must be one of {', '.join(BUDGET_SPLITS)}, got {budget_split!r}")
    scores = result.importance(granularity, prune_by)
    counts = {role: np.asarray(result.counts[role], dtype=np.float64) for role in scores}
    if budget_split == "per-table" or len(scores) == 1:
        sizes, info = {}, {}
        for role in scores:
            order = np.lexsort((np.arange(len(counts[role])), -counts[role]))
            sizes[role], info[role] = derive_sizes(scores[role], density, min_size, cfg.tolerance, order)
        return sizes, info
    roles = list(scores)
    joint = np.vstack([scores[r] for r in roles])       # one joint table, as the authors' (ids offset)
    joint_counts = np.concatenate([counts[r] for r in roles])
    order = np.lexsort((np.arange(len(joint_counts)), -joint_counts))
    joint_sizes, joint_info = derive_sizes(joint, density, min_size, cfg.tolerance, order)
    bounds = np.cumsum([0] + [len(scores[r]) for r in roles])
    sizes = {r: joint_sizes[bounds[i]:bounds[i + 1]] for i, r in enumerate(roles)}
    info = {r: {**joint_info, "split": "global",
                "table_density": int(sizes[r].sum()) / sizes[r].size / cfg.d_max} for r in roles}
    return sizes, info


def in_place_masks(result: DNISSearch, density: float, prune_by: str | None = None,
                   budget_split: str | None = None, granularity: str | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """The authors' derivation: element masks over the *trained* tables that keep the most important
    entries (:meth:`DNISSearch.importance`) fitting in ``density`` of the dense tables' bytes in CSR form,
    index included (:func:`~recsize.search.prune.element_budget`), under one threshold over all tables
    (``budget_split="global"``) or one per table. Returns the masks, the budget and the thresholds.
    Rows may keep 0 entries. Explained in Chapter 5."""
    from .prune import element_budget, magnitude_masks
    budget_split = budget_split or result.config.budget_split
    scores = result.importance(granularity, prune_by)
    shapes = {role: s.shape for role, s in scores.items()}
    budget = element_budget(shapes, density, budget_split)
    masks, thresholds = magnitude_masks({r: torch.from_numpy(s) for r, s in scores.items()}, budget)
    return masks, budget, thresholds


def folded_state(result: DNISSearch) -> dict[str, torch.Tensor]:
    """The searched model's weights (on the CPU) with alpha folded into every table: E[n] * alpha[block(n)].
    A model without soft selection computes the same forward pass with them; in-place pruning fine-tunes
    from them. Explained in Chapter 5."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in result.model.state_dict().items()}
    for role, table in result.model.embedding_tables().items():
        state[f"{role}.weight"] = table.table().detach().to("cpu", copy=True)
    return state


# ---------------------------------------------------------------------------------------------------
# 7. End to end (6. Retraining with the derived widths: recsize.search.dnis_train.train_with_sizes)
# ---------------------------------------------------------------------------------------------------

@dataclass
class DNISRun:
    """A search, what it gives at one density and the final model: with ``derive="in-place"`` the element
    masks of the trained tables (``sizes``: kept entries per row), fine-tuned and stored as CSR (``run``: a
    :class:`~recsize.search.prune.PruneRun`); with ``"prefix-retrain"`` the prefix widths, retrained from
    scratch and stored compact (``run``: a :class:`~recsize.search.baselines.BaselineRun`). Explained in
    Chapter 5."""

    search: DNISSearch
    density: float
    sizes: dict[str, np.ndarray]
    derivation: dict
    run: object
    seconds: dict

    def to_dict(self) -> dict:
        return {**self.run.to_dict(), "derivation": self.derivation, "search": self.search.to_dict(),
                "seconds": self.seconds}

    def save_arrays(self, path: str | os.PathLike) -> None:
        """Write alpha, the frequency blocks, the training frequencies and the final widths of every
        table to one ``.npz`` file, atomically (temporary file, then rename), with recsize's marker
        entry (:func:`recsize.files.save_npz`). Explained in Chapter 5."""
        arrays = {}
        for role in self.sizes:
            arrays[f"alpha_{role}"] = self.search.alphas[role]
            arrays[f"row_block_{role}"] = self.search.row_blocks[role]
            arrays[f"counts_{role}"] = np.asarray(self.search.counts[role])
            arrays[f"sizes_{role}"] = np.asarray(self.sizes[role])
            masks = getattr(self.run, "masks", None)
            if masks is not None:
                arrays[f"mask_{role}"] = masks[role].numpy()
        save_npz(path, **arrays)


def fine_tune_in_place(backbone: str, split, searched: DNISSearch, density: float,
                       config: DNISConfig | None = None, **model_kwargs):
    """``derive="in-place"`` at one budget (``density`` of the dense tables' bytes): masks over the trained
    tables (:func:`in_place_masks`), the searched weights with alpha folded in (:func:`folded_state`) and
    pruned entries set to 0, fine-tuned with the masks fixed (DNIS's trainer settings), stored as CSR.
    Returns a :class:`~recsize.search.prune.PruneRun`. Explained in Chapter 5."""
    from ..backbones import DEFAULTS
    from ..train import train
    from .prune import finish_element_run, masked_model
    config = config or searched.config
    masks, budget, thresholds = in_place_masks(searched, density, config.prune_by, config.budget_split,
                                               config.granularity)
    init = DEFAULTS[backbone].get("init", "xavier")
    start = time.perf_counter()
    model = masked_model(backbone, split, config.d_max, masks, folded_state(searched), config.seed, init,
                         **model_kwargs)
    result = train(model, split, _train_config(backbone, config, config.retrain_epochs, test=True))
    info = {"derive": "in-place", "prune_by": config.prune_by, "split": config.budget_split,
            "granularity": config.granularity, "thresholds": thresholds}
    return finish_element_run("dnis", split, density, config.d_max, masks, budget, result, info,
                              {"finetune": time.perf_counter() - start}, init)


def run_dnis(backbone: str, split, density: float, config: DNISConfig | None = None,
             searched: DNISSearch | None = None, **model_kwargs) -> DNISRun:
    """DNIS end to end at one budget: search (or reuse ``searched``: one search serves every budget and
    every derivation; ``config`` may change the derivation settings), then

    * ``derive="in-place"`` (default, the authors): prune the trained tables to ``density`` of their
      dense *bytes* (CSR, index included), fine-tune with the masks fixed, store as CSR;
    * ``derive="prefix-retrain"``: widths that keep exactly ``density`` of the *parameters*, retrained from
      scratch and stored compact.

    Explained in Chapter 5."""
    density = check_budget(density)
    config = config or (searched.config if searched is not None else DNISConfig())
    backbone = _check_backbone(backbone)
    if searched is None:
        searched = search(backbone, split, config, **model_kwargs)
    elif searched.backbone != backbone:
        raise ValueError(f"the search was run for {searched.backbone}, not {backbone}")
    start = time.perf_counter()
    if config.derive == "in-place":
        run = fine_tune_in_place(backbone, split, searched, density, config, **model_kwargs)
        sizes = run.sizes
        derivation = {**run.info, "entries": run.budget["entries"], "budget_bytes": run.budget["budget_bytes"]}
    else:
        sizes, derivation = budget_sizes(searched, density, config.granularity, config.min_size,
                                         config.prune_by, config.budget_split)
        run = train_with_sizes(backbone, split, sizes, config.d_max,
                               _train_config(backbone, config, config.retrain_epochs, test=True),
                               density=density, **model_kwargs)
        derivation = {"derive": "prefix-retrain", "prune_by": config.prune_by, "split": config.budget_split,
                      "tables": derivation}
    seconds = {"search": searched.seconds["total"], "retrain": time.perf_counter() - start}
    return DNISRun(searched, density, sizes, derivation, run, seconds)

