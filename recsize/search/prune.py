"""Element-wise pruning under a memory budget: magnitude pruning (MagPrune) here, PEP in :mod:`recsize.search.pep`.
Explained in Chapter 4.

Both methods keep an arbitrary *set* of entries of every embedding row, not a prefix, so they train with a
fixed element mask (:class:`~recsize.embedding.ElementMaskedEmbedding`) and are stored as compressed sparse
rows (:class:`~recsize.embedding.CSREmbedding`), whose column indices cost memory too.

**Budgets in bytes.** A budget (``--budget``, a density in (0, 1], or the papers' sparsity c = 1 - density)
is a fraction of the dense tables' bytes: the kept entries are the most that fit, index included, in CSR
form (:func:`recsize.budget.entries_for_bytes`). So ``--budget 0.1`` keeps fewer than a tenth of the
entries: at d_max = 64 with one-byte column indices and int64 row offsets, 5.5 % (each row's 8-byte offset
takes 3.1 % of its 256 dense bytes, each kept entry costs 5 bytes instead of 4). The prefix methods (ES, MR,
MDE, DNIS, CIESS) read the same ``--budget`` as a fraction of the *parameters*; their compact tables add
their own offsets and padding, so they hold somewhat more than that fraction of the dense bytes (ES at
c = 90 % on ml-100k, d_max = 64: 13.2 % of the dense bytes). Every row may keep 0 entries; the one floor is
that the budget must hold the row offsets (:func:`index_floor`). :func:`element_budget` splits a budget over
the tables (users and items for top-k; NeuMF's four tables; the feature table for FM and DeepFM):

* ``"global"`` (the default): one budget for all tables together, ``density * sum of their dense bytes``;
* ``"per-table"``: every table gets ``density`` of its own dense bytes.

**MagPrune** (:func:`run_magprune`): train the full-width model to convergence (the backbone's trainer
settings, early stopping on validation), keep the largest |E| entries under ONE threshold over all tables
together (``"global"``) or per table (``"per-table"``), exactly the budget's count (ties: the earlier
table, row and column first, :func:`top_entries`), then fine-tune with the mask fixed, starting from the
trained weights (pruned entries set to 0, where they stay: their gradient is exactly 0), convert to CSR and
report quality and exact bytes. This is recsize's own recipe (the classic one: global threshold, then
fine-tuning), NOT the procedure of the TOIS 2025 benchmark of lightweight embeddings (Tran et al., arXiv
2406.17335), which prunes every table on its own, protects each row's top ``min_item`` entries (searched
on validation) and does not fine-tune: that one is ``magprune-tois``
(:func:`recsize.search.magprune_tois.run_magprune_tois`). The benchmark found MagPrune rivals the complex
methods when every method keeps the same number of *parameters*; at equal bytes the CSR index costs
element-wise methods entries (Chapters 4 and 8 show both accountings).

PEP (Liu et al., ICLR 2021), the other element-wise method, is :mod:`recsize.search.pep`; it reuses this
module's budgets, masks, masked models and :class:`PruneRun`.

Where PEP and MagPrune follow their authors' code and where recsize departs (initialisation, weight
decay, training length, the features, the TOIS'25 benchmark's tuned thresholds, fine-tuning), with the
file each point was read in, is the one list :data:`recsize.search.departures.PEP` (and ``MAGPRUNE``),
rendered as Chapter 4.8's table.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..budget import (FLOAT_BYTES, INDEX_BYTES, check_budget, csr_bytes, csr_int32_bytes, dense_bytes,
                      element_masked_bytes, entries_for_bytes)
from ..embedding import ElementMaskedEmbedding, EmbeddingFactory

PRUNE_SPLITS = ("global", "per-table")
PRUNE_METHODS = ("magprune", "pep", "magprune-tois")   # magprune-tois: recsize.search.magprune_tois


# ---------------------------------------------------------------------------------------------------
# Budgets in bytes
# ---------------------------------------------------------------------------------------------------

def table_shapes(backbone: str, split, d_max: int) -> dict[str, tuple[int, int]]:
    """(rows, d_max) of every embedding table ``backbone`` builds for ``split``, by role, without building
    it: users and items (MF, LightGCN, NGCF), plus ``user_mlp`` and ``item_mlp`` (NeuMF), or the one
    ``feature`` table (FM, DeepFM). Explained in Chapter 4."""
    from ..backbones import BACKBONES, CTR_BACKBONES
    name = str(backbone).lower()
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    is_ctr_split = hasattr(split, "data") and hasattr(split.data, "n_features")
    if name in CTR_BACKBONES:
        if not is_ctr_split:
            raise ValueError(f"{name} is a CTR backbone: it needs a CTR split (dataset ml-100k-ctr), not a top-k split")
        return {"feature": (int(split.data.n_features), d_max)}
    if is_ctr_split:
        raise ValueError(f"{name} is a top-k backbone: give it a top-k split, not the CTR view")
    shapes = {"user": (int(split.n_users), d_max), "item": (int(split.n_items), d_max)}
    if name == "neumf":
        shapes.update(user_mlp=shapes["user"], item_mlp=shapes["item"])
    return shapes


def _csr_costs(num_rows: int, d_max: int) -> tuple[int, int]:
    """(bytes per kept entry, bytes of the index without a single entry) of a CSR table."""
    fixed = csr_bytes(np.zeros(num_rows, dtype=np.int64), d_max)
    return csr_bytes(np.ones(1, dtype=np.int64), d_max) - csr_bytes(np.zeros(1, dtype=np.int64), d_max), fixed


def _check_shapes(shapes: dict) -> dict[str, tuple[int, int]]:
    if not shapes:
        raise ValueError("no embedding tables to prune")
    out = {}
    for role, (rows, d_max) in shapes.items():
        if int(rows) < 1 or int(d_max) < 1:
            raise ValueError(f"table {role!r} must have rows >= 1 and d_max >= 1, got {rows} x {d_max}")
        out[role] = (int(rows), int(d_max))
    return out


def _check_split(split: str) -> str:
    if split not in PRUNE_SPLITS:
        raise ValueError(f"unknown budget split {split!r}: use one of {', '.join(PRUNE_SPLITS)}")
    return split


def index_floor(d_max: int, shapes: dict | None = None, split: str = "global") -> float:
    """The smallest density whose bytes hold the CSR index (the int64 row offsets) of the tables: below
    it not even 0 entries per row fit. With ``shapes`` (``{role: (rows, d_max)}``) the exact value for those
    tables; without, the limit for many rows, INDEX_BYTES / (FLOAT_BYTES * d_max) = 2 / d_max, which every
    budget must exceed whatever the data (the command line checks it before the data loads).
    Explained in Chapter 4."""
    if shapes is None:
        return INDEX_BYTES / (FLOAT_BYTES * int(d_max))
    shapes = _check_shapes(shapes)
    fixed = {r: _csr_costs(n, d)[1] for r, (n, d) in shapes.items()}
    dense = {r: dense_bytes(n, d) for r, (n, d) in shapes.items()}
    if _check_split(split) == "per-table":
        return max(fixed[r] / dense[r] for r in shapes)
    return sum(fixed.values()) / sum(dense.values())


def element_budget(shapes: dict, density: float, split: str = "global") -> dict:
    """How many entries the tables ``shapes`` (``{role: (rows, d_max)}``) keep when their CSR form may take
    ``density`` of their dense bytes. Explained in Chapter 4.

    ``split="global"``: one budget over all tables, ``budget_bytes = density * sum of dense bytes``; the
    entries are ``(budget_bytes - sum of the tables' CSR index bytes) // bytes per entry`` (``per_table`` is
    None: the threshold decides where they go). ``split="per-table"``: every table keeps
    ``entries_for_bytes(density * its dense bytes, rows, d_max, "csr")`` (``per_table``), the same fraction
    of every table's memory. Never more than every entry. Raises ``ValueError`` when the budget cannot
    hold the index (see :func:`index_floor`)."""
    density, split, shapes = check_budget(density), _check_split(split), _check_shapes(shapes)
    dense = {r: dense_bytes(n, d) for r, (n, d) in shapes.items()}
    total_dense = sum(dense.values())
    per_table = None
    floor = index_floor(0, shapes, split)
    try:
        if split == "per-table":
            per_table = {r: entries_for_bytes(density * dense[r], n, d, "csr") for r, (n, d) in shapes.items()}
            entries = sum(per_table.values())
        else:
            costs = {r: _csr_costs(n, d) for r, (n, d) in shapes.items()}
            per_entry = {c[0] for c in costs.values()}
            if len(per_entry) != 1:
                raise ValueError("a global budget needs one d_max for all tables (one cost per entry); "
                                 "use split='per-table'")
            fixed = sum(c[1] for c in costs.values())
            budget = density * total_dense
            if not budget >= fixed:
                raise ValueError(f"{budget:g} B cannot hold even the csr index of the tables ({fixed} B)")
            entries = min(int((budget - fixed) // per_entry.pop()), sum(n * d for n, d in shapes.values()))
    except ValueError as e:
        if "index" not in str(e):
            raise
        raise ValueError(f"density {density:g} of the dense bytes ({density * total_dense:,.0f} of {total_dense:,} B) "
                         f"cannot hold the CSR index (one int64 row offset per row, kept entries or not): use a "
                         f"density of at least {floor:.4g}") from None
    return {"density": density, "split": split, "shapes": {r: list(s) for r, s in shapes.items()},
            "dense_bytes": total_dense, "budget_bytes": density * total_dense, "entries": int(entries),
            "per_table": per_table}


def prefix_density_for_bytes(shapes: dict, density: float) -> float | None:
    """The prefix density (a fraction of the parameters, as ES reads ``--budget``) whose compact tables,
    offsets and padding included, fit in ``density`` of every table's dense bytes: ES at the same bytes as
    an element-wise method. None when that leaves less than one dimension per row. Explained in Chapter 4."""
    best = None
    for rows, d in _check_shapes(shapes).values():
        try:
            kept = entries_for_bytes(check_budget(density) * dense_bytes(rows, d), rows, d, "compact")
        except ValueError:
            return None
        if kept < rows:
            return None
        # (kept - 0.5) / (rows * d): rounding the total (halves up) gives at most ``kept`` in every table
        best = min(best if best is not None else 1.0, (kept - 0.5) / (rows * d))
    return best


# ---------------------------------------------------------------------------------------------------
# Keeping the largest entries
# ---------------------------------------------------------------------------------------------------

def top_entries(scores: dict[str, torch.Tensor], keep: int) -> tuple[dict[str, torch.Tensor], float]:
    """Boolean masks (on the CPU) keeping exactly the ``keep`` highest ``scores`` over all tables together,
    and the threshold: the lowest kept score (``inf`` when nothing is kept). One global ranking; ties go to
    the earlier table (in ``scores``' order), then the lower row, then the lower column (a stable sort), so
    the result is deterministic. Explained in Chapter 4."""
    flat = [s.detach().reshape(-1).to("cpu", torch.float64) for s in scores.values()]
    total = sum(len(f) for f in flat)
    if not 0 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} entries")
    allv = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64)
    if torch.isnan(allv).any():
        raise ValueError("the scores contain NaN: the model diverged")
    order = torch.sort(allv, descending=True, stable=True).indices[:keep]
    kept = torch.zeros(total, dtype=torch.bool)
    kept[order] = True
    masks, start = {}, 0
    for (role, s), f in zip(scores.items(), flat):
        masks[role] = kept[start:start + len(f)].view(tuple(s.shape))
        start += len(f)
    threshold = float(allv[order[-1]]) if keep else float("inf")
    return masks, threshold


def magnitude_masks(tables: dict[str, torch.Tensor], budget: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """MagPrune's masks: the largest |E| entries of ``tables`` (``{role: (rows, d_max) weights}``) under the
    budget of :func:`element_budget`: one threshold over all tables (global split) or one per table
    (per-table split), exactly the budget's count either way. Returns the masks and the thresholds
    (``{"global": t}`` or ``{role: t}``). Explained in Chapter 4."""
    scores = {r: t.detach().abs() for r, t in tables.items()}
    if budget["per_table"] is None:
        masks, t = top_entries(scores, budget["entries"])
        return masks, {"global": t}
    masks, thresholds = {}, {}
    for role, s in scores.items():
        m, thresholds[role] = top_entries({role: s}, budget["per_table"][role])
        masks[role] = m[role]
    return masks, thresholds


# ---------------------------------------------------------------------------------------------------
# Fixed masks: from any weights to a masked model, then to CSR
# ---------------------------------------------------------------------------------------------------

def shared_dimensions(user_mask: torch.Tensor, item_mask: torch.Tensor, users, items) -> float:
    """The mean number of dimensions a user's row and an item's row both keep, over the pairs
    ``(users[k], items[k])``: the terms of a dot product <e_u, e_i> on the stored rows that an
    element-wise mask leaves alive (prefix widths keep min(d_u, d_i) of them). Masks are (rows, d_max)
    booleans. Explained in Chapter 5 (why MagPrune breaks MF and NeuMF but not LightGCN)."""
    users, items = torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)
    if user_mask.dim() != 2 or item_mask.dim() != 2 or user_mask.shape[1] != item_mask.shape[1]:
        raise ValueError("masks must be (rows, d_max) with the same d_max, got "
                         f"{tuple(user_mask.shape)} and {tuple(item_mask.shape)}")
    if users.shape != items.shape or users.numel() == 0:
        raise ValueError(f"users and items must be equally long and not empty, got {users.numel()} and "
                         f"{items.numel()}")
    both = user_mask[users].bool() & item_mask[items].bool()
    return float(both.sum(1).double().mean())


def element_factory(masks: dict[str, torch.Tensor], init: str = "xavier") -> EmbeddingFactory:
    """An embedding factory of :class:`~recsize.embedding.ElementMaskedEmbedding` tables with the fixed
    masks ``masks`` (by role). Explained in Chapter 4."""
    def factory(role: str, num_rows: int, dim: int) -> nn.Module:
        if role not in masks:
            raise ValueError(f"no mask for embedding role {role!r}; masks were given for {', '.join(masks)}")
        return ElementMaskedEmbedding(num_rows, dim, masks[role], init=init)
    return factory


def load_masked_weights(model: nn.Module, state: dict, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Copy the weights ``state`` (a state dict of the same backbone, with plain, PEP or masked tables) into
    ``model`` (built with :func:`element_factory`), with every pruned embedding entry set to 0; entries
    ``model`` does not have (PEP's thresholds) are ignored. Every weight of ``model`` must be in ``state``.
    Explained in Chapter 4."""
    own = model.state_dict()
    masks_of = {f"{role}.{name}" for role in masks for name in ("keep", "sizes")}
    missing = [k for k in own if k not in state and k not in masks_of]
    if missing:
        raise ValueError(f"the weights lack {', '.join(missing[:4])}: they are not from this backbone")
    for key, value in state.items():
        if key in own and key not in masks_of:
            if own[key].shape != value.shape:
                raise ValueError(f"{key}: the weights are {tuple(value.shape)}, the model {tuple(own[key].shape)}")
            own[key] = value
    for role, keep in masks.items():
        weight = state[f"{role}.weight"]
        own[f"{role}.weight"] = torch.where(keep.to(weight.device), weight, torch.zeros_like(weight))
    model.load_state_dict(own)
    return model


def masked_model(backbone: str, split, d_max: int, masks: dict[str, torch.Tensor], state: dict, seed: int = 0,
                 init: str | None = None, **model_kwargs) -> nn.Module:
    """``backbone`` for ``split`` with :class:`~recsize.embedding.ElementMaskedEmbedding` tables holding
    ``masks``, its weights taken from ``state`` (pruned entries 0): the model MagPrune fine-tunes and PEP
    retrains. Model settings not given fall back to the backbone's defaults. Explained in Chapter 4."""
    from ..backbones import DEFAULTS, build_backbone, defaults_for
    from ..train import seed_everything
    seed_everything(seed)
    init = init or DEFAULTS[backbone].get("init", "xavier")
    model = build_backbone(backbone, split, d_max, embedding=element_factory(masks, init),
                           **{**defaults_for(backbone)[0], **model_kwargs})
    return load_masked_weights(model, state, masks)


def element_memory_report(sizes_by_role: dict, d_max: int, budget: dict | None = None) -> dict:
    """Per table and in total: rows, kept entries (``parameters``), density of entries, and the bytes of
    the dense, element-masked (training), CSR (recsize: :func:`~recsize.budget.csr_bytes`) and VLDB'24
    int32 CSR (:func:`~recsize.budget.csr_int32_bytes`) forms; with ``budget`` also the budget's bytes.
    Explained in Chapter 4."""
    report = {}
    for role, sizes in sizes_by_role.items():
        sizes = np.asarray(sizes, dtype=np.int64)
        n = len(sizes)
        report[role] = {"rows": n, "parameters": int(sizes.sum()), "density": float(sizes.sum()) / (n * d_max),
                        "dense": dense_bytes(n, d_max), "masked": element_masked_bytes(n, d_max),
                        "csr": csr_bytes(sizes, d_max), "csr_int32": csr_int32_bytes(sizes, d_max)}
        if budget is not None:
            report[role]["budget_bytes"] = budget["density"] * report[role]["dense"]
    total = {k: sum(r[k] for r in report.values()) for k in ("rows", "parameters", "dense", "masked", "csr",
                                                            "csr_int32")}
    total["density"] = total["parameters"] / (total["rows"] * d_max) if total["rows"] else 0.0
    if budget is not None:
        total["budget_bytes"] = budget["budget_bytes"]
    report["total"] = total
    return report


@dataclass
class PruneRun:
    """What :func:`run_magprune` or :func:`~recsize.search.pep.run_pep` produced at one budget: the masks (kept
    entries per row as ``sizes``), the budget, the training result of the masked model (fine-tuning or
    retraining), the test metrics with the CSR tables, the memory of every form (arithmetic and measured), what
    the pruning step found (``info``) and the wall times. ``model`` holds CSR tables. Explained in Chapter 4."""

    method: str
    density: float
    d_max: int
    sizes: dict
    masks: dict = field(repr=False)
    budget: dict = field(repr=False)
    result: object = field(repr=False)
    test_compact: dict | None = None
    memory: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    init: str = "xavier"
    model: object = field(default=None, repr=False)

    @property
    def stored_bytes(self) -> int:
        """The measured bytes of the CSR tables, every table together. Explained in Chapter 4."""
        return self.memory["total"]["csr_measured"]

    def to_dict(self) -> dict:
        """The JSON layout of ``recsize search``: that of the other methods (sizes per table, metrics, memory,
        best epoch, history) plus the budget and the pruning step. Explained in Chapter 4."""
        return {"method": self.method, "density": self.density, "sparsity": 1 - self.density, "d_max": self.d_max,
                "init": self.init, "sizes": {r: np.asarray(s).tolist() for r, s in self.sizes.items()},
                "budget": self.budget, "memory": self.memory, "test_compact": self.test_compact,
                **self.result.to_dict(), "prune": self.info, "seconds": self.seconds}


def finish_element_run(method: str, split, density: float, d_max: int, masks: dict, budget: dict, result,
                       info: dict, seconds: dict, init: str) -> PruneRun:
    """The last step of every element-wise method (MagPrune, PEP, DNIS in place): measure the trained masked
    model, convert its tables to CSR, evaluate the test split again with them. Explained in Chapter 4."""
    from ..embedding import compact_tables
    from ..evaluate import evaluate_ctr, evaluate_topk
    model = result.model
    roles = list(model.embedding_tables())
    sizes = {r: masks[r].sum(1).numpy().astype(np.int64) for r in roles}
    measured = {r: model.embedding_tables()[r].num_bytes() for r in roles}
    compact_tables(model)
    memory = element_memory_report(sizes, d_max, budget)
    for r in roles:
        memory[r]["masked_measured"] = measured[r]
        memory[r]["csr_measured"] = model.embedding_tables()[r].num_bytes()
    memory["total"]["csr_measured"] = sum(memory[r]["csr_measured"] for r in roles)
    test_compact = None
    if result.test is not None:
        test_compact = (evaluate_topk if model.task == "topk" else evaluate_ctr)(model, split, "test")
    seconds = {**seconds, "total": sum(seconds.values())}
    return PruneRun(method, density, d_max, sizes, masks, budget, result, test_compact, memory, info, seconds,
                    init, model)


def _check_backbone(backbone: str) -> str:
    from ..backbones import BACKBONES
    name = str(backbone).lower()
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    return name


def _config(backbone: str, config):
    from ..train import default_config
    return config or default_config(backbone)


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------
# MagPrune
# ---------------------------------------------------------------------------------------------------

def train_dense(backbone: str, split, d_max: int = 64, config=None, **model_kwargs):
    """MagPrune's first step: train the full-width backbone to convergence (its trainer settings, early
    stopping on validation; :func:`recsize.train.fit`). One dense model serves every budget
    (``run_magprune(..., dense=...)``). Explained in Chapter 4."""
    from ..train import fit
    return fit(_check_backbone(backbone), split, d_max, _config(backbone, config), **model_kwargs)


def run_magprune(backbone: str, split, density: float, d_max: int = 64, config=None, prune_split: str = "global",
                 dense=None, init: str | None = None, budget: dict | None = None, **model_kwargs) -> PruneRun:
    """MagPrune end to end at one budget (``density`` of the dense tables' bytes): train the full-width
    model (or reuse ``dense``, a :func:`train_dense` result), keep the largest |E| entries that fit
    (:func:`magnitude_masks`, ``prune_split`` ``"global"`` or ``"per-table"``), fine-tune from the trained
    weights with the mask fixed (``config``: the backbone's trainer settings by default), convert to CSR.
    ``budget`` replaces :func:`element_budget`'s (e.g. one in parameters,
    :func:`recsize.search.magprune_tois.params_budget`). Explained in Chapter 4."""
    from ..backbones import DEFAULTS
    from ..train import train
    backbone, density, prune_split = _check_backbone(backbone), check_budget(density), _check_split(prune_split)
    config = _config(backbone, config)
    init = init or DEFAULTS[backbone].get("init", "xavier")
    if budget is None:   # before any training
        budget = element_budget(table_shapes(backbone, split, d_max), density, prune_split)
    dense = dense if dense is not None else train_dense(backbone, split, d_max, config, **model_kwargs)
    tables = {r: t.table().detach() for r, t in dense.model.embedding_tables().items()}
    if {r: tuple(t.shape) for r, t in tables.items()} != {r: tuple(s) for r, s in budget["shapes"].items()}:
        raise ValueError("the dense model's tables do not match the backbone's for this split and d_max")
    masks, thresholds = magnitude_masks(tables, budget)
    start = time.perf_counter()
    model = masked_model(backbone, split, d_max, masks, _cpu_state(dense.model), config.seed, init, **model_kwargs)
    result = train(model, split, config)
    info = {"split": prune_split, "thresholds": thresholds,
            "dense": {"best_epoch": dense.best_epoch, "epochs": len(dense.history), "valid": dense.valid,
                      "test": dense.test, "seconds": dense.seconds}}
    return finish_element_run("magprune", split, density, d_max, masks, budget, result, info,
                   {"dense": dense.seconds, "finetune": time.perf_counter() - start}, init)
