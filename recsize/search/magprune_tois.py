"""MagPrune as the TOIS 2025 benchmark runs it (``magprune-tois``), and budgets in parameters. Chapter 4.

The benchmark of lightweight embeddings (Tran et al., "A Thorough Performance Benchmarking on Lightweight
Embedding-based Recommender Systems", TOIS 2025, arXiv 2406.17335; code ``chenxing1999/recsys-benchmark``,
``src/utils.py`` ``prune``, ``scripts/lightgcn/run_mag_prune.py``, ``scripts/cf_train/run_mag_prune.py``,
``scripts/deepfm/run_l2_benchmark.py``) prunes a trained full-width model like this:

* **every table on its own** (LightGCN: users, items; NeuMF: its four tables; DeepFM: the feature table),
  each to the same sparsity p: ``int(p * entries of the table)`` entries are pruned, the rest kept;
* **a floor per row**: in every row the ``min_item`` entries of largest |E| are protected (their score is
  set to +inf), then the table's smallest |E| are pruned. The floor never exceeds the kept count, because
  ``min_item <= int(d_max * (1 - p))``;
* ``min_item`` is chosen by a **binary search on validation NDCG** (``bin_search``): over the values
  0 .. int(d_max * (1 - p)), it starts in the middle, moves towards a rising neighbour, returns where
  neither neighbour is strictly on one side (a local maximum or a plateau), and goes left whenever
  ``min_item = 0`` scores higher than the midpoint; if it runs out of interval it returns 0. The code's
  other mode (``run_all``) tries every value;
* **no fine-tuning**: the pruned model is evaluated as it is.

recsize's ``magprune`` (:func:`~recsize.search.prune.run_magprune`: one global threshold, no floor,
fine-tuning) is recsize's own recipe, not the benchmark's. :func:`run_magprune_tois` follows the code
above, with these departures (Chapter 4 lists them):

* the budget: with ``accounting="bytes"`` (the default, as every method of the grids) each table keeps
  the entries whose CSR form (values, one-byte column indices, int64 row offsets) fits in ``density`` of
  its dense bytes (:func:`~recsize.search.prune.element_budget`, ``"per-table"``), and the floor's upper
  bound is the kept entries per row, ``min over tables of kept // rows``; with ``accounting="params"``
  (the benchmark's) each table keeps ``entries - int((1 - density) * entries)`` entries
  (:func:`params_budget`) and the bound is ``int(d_max * density)``, as in the code;
* the validation metric is the trainer's early-stopping metric: NDCG@20 for top-k models, AUC for CTR
  models (the benchmark sets DeepFM's ``min_item`` by hand);
* ties are broken deterministically (the row's earlier column for the floor, then the table's earlier
  row and column, :func:`~recsize.search.prune.top_entries`); the code's ``topk`` / ``argsort`` do not say;
* the bound is ``d_max`` of the model (the NeuMF script hard-codes 32 whatever the width).
"""
from __future__ import annotations

import time
from dataclasses import asdict

import torch

from ..budget import check_budget, dense_bytes
from .prune import (_check_backbone, _check_shapes, _config, _cpu_state, element_budget, finish_element_run,
                    masked_model, table_shapes, top_entries, train_dense)

ACCOUNTINGS = ("bytes", "params")
MIN_ITEM_SEARCHES = ("binary", "all")


def params_budget(shapes: dict, density: float, split: str = "per-table") -> dict:
    """A budget in parameters, as the benchmark and most papers count it: sparsity p = 1 - ``density``
    prunes ``int(p * entries)`` entries and keeps the rest, per table (``split="per-table"``, the
    benchmark's ``prune``) or of all tables together (``"global"``). The index the kept entries need is not
    counted: their CSR bytes exceed ``density`` of the dense bytes. Same layout as
    :func:`~recsize.search.prune.element_budget` (plus ``"accounting": "params"``). Explained in Chapter 4."""
    density, shapes = check_budget(density), _check_shapes(shapes)
    if split not in ("per-table", "global"):
        raise ValueError(f"unknown budget split {split!r}: use per-table or global")
    sparsity = 1 - density

    def kept(n: int) -> int:
        return n - int(n * sparsity)
    per_table = {r: kept(n * d) for r, (n, d) in shapes.items()} if split == "per-table" else None
    total = sum(n * d for n, d in shapes.values())
    entries = sum(per_table.values()) if per_table else kept(total)
    total_dense = sum(dense_bytes(n, d) for n, d in shapes.values())
    return {"density": density, "split": split, "shapes": {r: list(s) for r, s in shapes.items()},
            "dense_bytes": total_dense, "budget_bytes": density * total_dense, "entries": int(entries),
            "per_table": per_table, "accounting": "params"}


def tois_budget(shapes: dict, density: float, accounting: str = "bytes") -> dict:
    """The per-table budget :func:`run_magprune_tois` prunes to: ``density`` of every table's dense bytes,
    CSR index included (``"bytes"``), or of its entries (``"params"``, :func:`params_budget`), with the
    floor's upper bound ``max_min_item`` (see the module's text). Explained in Chapter 4."""
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"unknown accounting {accounting!r}: use one of {', '.join(ACCOUNTINGS)}")
    if accounting == "params":
        budget = params_budget(shapes, density)
        bound = int(next(iter(budget["shapes"].values()))[1] * budget["density"])
    else:
        budget = {**element_budget(shapes, density, "per-table"), "accounting": "bytes"}
        bound = min(budget["per_table"][r] // n for r, (n, _) in budget["shapes"].items())
    budget["max_min_item"] = int(min(bound, *(d for _, d in budget["shapes"].values())))
    return budget


def floor_masks(tables: dict[str, torch.Tensor], per_table: dict[str, int], min_item: int) -> dict:
    """The benchmark's pruning (``src/utils.py``, ``prune``): in every table (``{role: (rows, d_max)}``
    weights) each row's ``min_item`` largest |E| entries are protected, then the table keeps its
    ``per_table[role]`` largest |E| entries, protected ones first. Ties: the earlier column within a row,
    then :func:`~recsize.search.prune.top_entries`'s order. Returns ``{role: boolean mask}``; raises
    ``ValueError`` when the floor needs more entries than a table keeps. Explained in Chapter 4."""
    if int(min_item) < 0:
        raise ValueError(f"min_item must be >= 0, got {min_item}")
    masks = {}
    for role, weight in tables.items():
        rows, d = weight.shape
        if min_item > d or rows * min_item > per_table[role]:
            raise ValueError(f"a floor of {min_item} entries per row needs {rows * min_item} entries of table "
                             f"{role!r}, which keeps {per_table[role]} (of {rows} x {d})")
        score = weight.detach().abs().to("cpu", torch.float64)
        if min_item:
            top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :min_item]
            score.scatter_(1, top, float("inf"))
        masks[role] = top_entries({role: score}, per_table[role])[0][role]
    return masks


def search_min_item(value, max_min_item: int, mode: str = "binary") -> int:
    """The floor ``min_item`` in 0 .. ``max_min_item`` that the benchmark picks, ``value(min_item)`` being
    the validation metric of the pruned model (higher is better; each value is computed once).
    ``mode="binary"``: the code's ``bin_search`` (see the module's text; it can stop at a local maximum,
    or at 0 when 0 beats the middle); ``"all"``: every value, the first best (the code's ``run_all``).
    Explained in Chapter 4."""
    if mode not in MIN_ITEM_SEARCHES:
        raise ValueError(f"unknown min_item search {mode!r}: use one of {', '.join(MIN_ITEM_SEARCHES)}")
    if int(max_min_item) < 0:
        raise ValueError(f"max_min_item must be >= 0, got {max_min_item}")
    top = int(max_min_item)
    if mode == "all":
        values = [value(m) for m in range(top + 1)]
        return values.index(max(values))
    seen = {0: float("-inf"), top + 2: float("-inf")}   # v[k] holds min_item = k - 1, as in the code

    def v(k: int) -> float:
        if k not in seen:
            seen[k] = float(value(k - 1))
        return seen[k]
    left, right = 1, top + 1
    v(1)
    while left <= right:
        mid = (left + right) // 2
        if v(1) > v(mid):
            right = mid - 1
            continue
        lo, here, hi = v(mid - 1), v(mid), v(mid + 1)
        if lo < here < hi:
            left = mid + 1
        elif lo > here > hi:
            right = mid - 1
        else:
            return mid - 1
    return 0


def _evaluate(model, split, stage: str, device) -> dict:
    from ..evaluate import evaluate_ctr, evaluate_topk
    return (evaluate_topk if model.task == "topk" else evaluate_ctr)(model, split, stage, device=device)


def run_magprune_tois(backbone: str, split, density: float, d_max: int = 64, config=None,
                      accounting: str = "bytes", search: str = "binary", dense=None, init: str | None = None,
                      **model_kwargs):
    """MagPrune as the TOIS 2025 benchmark runs it, at one budget: train the full-width model (or reuse
    ``dense``, a :func:`~recsize.search.prune.train_dense` result), prune every table on its own to
    ``density`` of its bytes (``accounting="bytes"``) or entries (``"params"``) with each row's
    ``min_item`` largest entries protected (:func:`floor_masks`), ``min_item`` chosen on validation
    (:func:`search_min_item`, ``search`` ``"binary"`` or ``"all"``), no fine-tuning; converted to CSR.
    Returns a :class:`~recsize.search.prune.PruneRun` (method ``"magprune-tois"``); ``info`` records the
    chosen ``min_item``, every value the search evaluated and the dense model. Explained in Chapter 4."""
    from ..backbones import DEFAULTS
    from ..train import TrainResult, resolve_device
    backbone, density = _check_backbone(backbone), check_budget(density)
    if search not in MIN_ITEM_SEARCHES:
        raise ValueError(f"unknown min_item search {search!r}: use one of {', '.join(MIN_ITEM_SEARCHES)}")
    config = _config(backbone, config)
    init = init or DEFAULTS[backbone].get("init", "xavier")
    budget = tois_budget(table_shapes(backbone, split, d_max), density, accounting)  # before any training
    dense = dense if dense is not None else train_dense(backbone, split, d_max, config, **model_kwargs)
    tables = {r: t.table().detach() for r, t in dense.model.embedding_tables().items()}
    if {r: tuple(t.shape) for r, t in tables.items()} != {r: tuple(s) for r, s in budget["shapes"].items()}:
        raise ValueError("the dense model's tables do not match the backbone's for this split and d_max")
    start = time.perf_counter()
    state, device = _cpu_state(dense.model), resolve_device(config.device)
    metric = config.metric or ("ndcg@20" if dense.model.task == "topk" else "auc")
    values = {}

    def pruned(min_item: int):
        masks = floor_masks(tables, budget["per_table"], min_item)
        model = masked_model(backbone, split, d_max, masks, state, config.seed, init, **model_kwargs)
        return model.to(device).eval(), masks

    def value(min_item: int) -> float:
        values[int(min_item)] = float(_evaluate(pruned(min_item)[0], split, "valid", device)[metric])
        return values[int(min_item)]
    min_item = search_min_item(value, budget["max_min_item"], search)
    model, masks = pruned(min_item)
    valid = _evaluate(model, split, "valid", device)
    test = _evaluate(model, split, "test", device) if config.test else None
    seconds = time.perf_counter() - start
    result = TrainResult(0, valid, test, [], seconds, {**asdict(config), "metric": metric}, model)
    info = {"split": "per-table", "accounting": accounting, "min_item": int(min_item), "search": search,
            "max_min_item": budget["max_min_item"], "metric": metric,
            "values": {str(k): values[k] for k in sorted(values)}, "evaluations": len(values),
            "dense": {"best_epoch": dense.best_epoch, "epochs": len(dense.history), "valid": dense.valid,
                      "test": dense.test, "seconds": dense.seconds}}
    return finish_element_run("magprune-tois", split, density, d_max, masks, budget, result, info,
                              {"dense": dense.seconds, "prune": seconds}, init)


def tois_stages(run) -> str:
    """One line on a :func:`run_magprune_tois` run: the dense model, the chosen ``min_item`` and the values
    the search tried (what ``recsize search --method magprune-tois`` prints). Explained in Chapter 4."""
    info = run.info
    tried = ", ".join(f"{k}: {v:.4f}" for k, v in info["values"].items())
    return (f"dense best epoch {info['dense']['best_epoch']} ({run.seconds['dense']:.1f} s), min_item "
            f"{info['min_item']} of 0..{info['max_min_item']} by the {info['search']} search on validation "
            f"{info['metric']} ({tried}; {run.seconds['prune']:.1f} s), no fine-tuning")
