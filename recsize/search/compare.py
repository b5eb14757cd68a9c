"""Head to head: every search method on the same backbone, split, budgets and retraining settings.
Explained in Chapter 8.

Chapters 4 to 7 each compared one method with the baselines. This module runs them all in one loop so
that nothing differs but the method:

* the same backbone, the same data split (seed s prepares the split of a named dataset; a given split is
  used for every seed), the same budgets (sparsity c = 80 / 90 / 95 % pruned, i.e. densities 0.2 / 0.1 /
  0.05 of the d_max-wide tables);
* the same retraining: every final model trains from scratch with the backbone's default trainer
  settings (plus ``train_overrides``), at most ``epochs`` epochs with early stopping after ``patience``
  epochs without improvement on validation (NDCG@20 for top-k, AUC for CTR); CIESS's full-width
  reference model uses the same cap;
* the same measurement: test metrics evaluated with the *compact* tables (what a server would hold), the
  parameters kept and the real bytes of the compact storage (values + offsets + padding, measured on
  the modules; for iHAS the K cluster tables plus the router).

Methods (every one is the package's own function, nothing is re-implemented here): ES, MR and MDE
(:func:`~recsize.search.baselines.run_baseline`, Chapter 4), DNIS (:func:`~recsize.search.dnis.search`
once, then :func:`~recsize.search.dnis.run_dnis` per budget, Chapter 5), CIESS
(:func:`~recsize.search.ciess.run_ciess`, one search for all budgets, top-k backbones only, Chapter 6)
and iHAS (:func:`~recsize.search.ihas.run_ihas` per budget, CTR backbones only, Chapter 7).

Search cost: ES / MR / MDE search nothing (0 s). One DNIS search and one CIESS search (its full-width
reference model included) serve every budget: their cost is recorded **once**, on the record of the
first budget given (``note`` says so), and 0 on the others, so that summing ``search_seconds`` gives the
true cost. iHAS searches once per budget (its gates aim at the budget), so every iHAS record carries its
own search.

Inapplicable methods: with ``methods=None`` (the default) every method that applies to the backbone
runs (CIESS for top-k, iHAS for CTR); naming one that does not apply (iHAS on LightGCN, CIESS on DeepFM)
is a ``ValueError``, never a silent skip.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from ..budget import dense_bytes, target_parameters
# the statistics live in recsize.stats; the chapters, benchmarks/ and the tests read them from here too
from ..stats import (LOWER_IS_BETTER, aukc, paired_difference, paired_summary, pareto_front,  # noqa: F401
                     pareto_points, within_noise)

METHODS = ("es", "mr", "mde", "dnis", "ciess", "ihas")
# the cells of benchmarks/prune.py's converged grids (equal bytes; grid_records): their own names
GRID_METHODS = ("es-bytes", "mde-bytes", "mr-bytes", "magprune", "magprune-table", "pep", "dnis-alpha",
                "dnis-prefix", "dnis-table", "dnis-joint")
NAMES = {"es": "ES", "mr": "MR", "mde": "MDE", "dnis": "DNIS", "ciess": "CIESS", "ihas": "iHAS",
         "es-bytes": "ES", "mde-bytes": "MDE", "mr-bytes": "MR", "magprune": "MagPrune",
         "magprune-table": "MagPrune/table", "pep": "PEP", "dnis-alpha": "DNIS |aE|",
         "dnis-prefix": "DNIS prefix", "dnis-table": "DNIS/table", "dnis-joint": "DNIS/joint"}
MARKERS = {"es": "o", "mr": "s", "mde": "^", "dnis": "D", "ciess": "P", "ihas": "*", "es-bytes": "o",
           "mde-bytes": "^", "mr-bytes": "s", "magprune": "v", "magprune-table": "<", "pep": "X",
           "dnis-alpha": "d", "dnis-prefix": ">", "dnis-table": "h", "dnis-joint": "H"}
# every method in the order of tables and legends, and one colour per name (ES is ES in either accounting)
_ALL_METHODS = ("es", "es-bytes", "mde", "mde-bytes", "mr", "mr-bytes", "magprune", "magprune-table", "pep",
                "dnis", "dnis-alpha", "dnis-prefix", "dnis-table", "dnis-joint", "ciess", "ihas")
COLORS = {"es": "C0", "es-bytes": "C0", "mde": "C1", "mde-bytes": "C1", "mr": "C2", "mr-bytes": "C2",
          "magprune": "C3", "magprune-table": "C3", "pep": "C5", "dnis": "C4", "dnis-alpha": "C6",
          "dnis-prefix": "C7", "dnis-table": "C4", "dnis-joint": "C4", "ciess": "C9",
          "ihas": "C8"}   # a variant: its parent's colour
TOPK_ONLY, CTR_ONLY = ("ciess",), ("ihas",)
METRICS = {"topk": ("recall@20", "ndcg@20"), "ctr": ("auc", "logloss")}
LABELS = {"recall@20": "Recall@20", "ndcg@20": "NDCG@20", "auc": "AUC", "logloss": "log loss"}
SEARCHES = {"dnis": "one search for all budgets", "ciess": "one search for all budgets",
            "ihas": "one search per budget", "magprune": "one dense model for all",
            "magprune-table": "one dense model for all", "pep": "one search for all budgets",
            "dnis-alpha": "one search for all budgets", "dnis-prefix": "one search for all budgets",
            "dnis-table": "one search for all budgets", "dnis-joint": "one search for all budgets"}
# the quantised and hashed families (issue 31, recsize.experiments.families; Chapter 8.9): their names,
# markers (a letter: they sit among the width methods), colours and what one seed shares across budgets
FAMILIES = {"int8": ("INT8", "$8$", "black", "one dense model for all"),
            "int4": ("INT4", "$4$", "dimgray", "one dense model for all"),
            "qat-int4": ("QAT INT4", "$Q$", "olive", "one QAT model for all"),
            "es-int8": ("ES+INT8", "$E$", "teal", ""), "mde-int8": ("MDE+INT8", "$M$", "navy", ""),
            "qr": ("QR", "$R$", "maroon", ""), "hash": ("Hash", "$H$", "goldenrod", "")}
NAMES |= {m: v[0] for m, v in FAMILIES.items()}
MARKERS |= {m: v[1] for m, v in FAMILIES.items()}
COLORS |= {m: v[2] for m, v in FAMILIES.items()}
SEARCHES |= {m: v[3] for m, v in FAMILIES.items() if v[3]}
_ALL_METHODS += tuple(FAMILIES)
# settings that head_to_head sets for every method alike; the per-method dicts may not override them
SHARED = ("d_max", "seed", "device", "progress", "train_overrides", "retrain_epochs", "patience", "budgets",
          "full_epochs")


def _task(backbone: str) -> str:
    from ..backbones import BACKBONES, CTR_BACKBONES
    name = str(backbone).lower()
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    return "ctr" if name in CTR_BACKBONES else "topk"


def applicable_methods(backbone: str) -> tuple[str, ...]:
    """The methods that apply to ``backbone``: ES, MR, MDE and DNIS everywhere, CIESS for top-k backbones
    (it searches user and item widths), iHAS for CTR backbones (it gates field embeddings). Chapter 8."""
    skip = CTR_ONLY if _task(backbone) == "topk" else TOPK_ONLY
    return tuple(m for m in METHODS if m not in skip)


def check_methods(backbone: str, methods=None) -> tuple[str, ...]:
    """``methods`` lower-cased and validated for ``backbone`` (None: every applicable method, in the
    order of :data:`METHODS`). Unknown, repeated or inapplicable methods raise ``ValueError``. Chapter 8."""
    allowed = applicable_methods(backbone)
    if methods is None:
        return allowed
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(str(m).lower() for m in methods)
    if not methods:
        raise ValueError(f"methods is empty: give at least one of {', '.join(allowed)} (or None for all)")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods repeat a name: {list(methods)}")
    wrong = [m for m in methods if m not in allowed]
    if wrong:
        why = ("CIESS searches user and item widths of a top-k model" if "ciess" in wrong
               else "iHAS gates the field embeddings of a CTR model (fm, deepfm)")
        raise ValueError(f"{', '.join(NAMES[m] for m in wrong)} does not apply to backbone {backbone!r}: {why}; "
                         f"methods for {backbone}: {', '.join(allowed)} (methods=None runs exactly those)")
    return methods


def check_sparsities(sparsities, d_max: int) -> tuple[float, ...]:
    """The sparsities c (pruned fractions) as floats, validated: at least one, each in (0, 1), no repeats,
    and each keeping at least one dimension per row on average (c <= 1 - 1 / d_max). Chapter 8."""
    if isinstance(sparsities, (int, float)):
        sparsities = (sparsities,)
    try:
        values = tuple(float(c) for c in sparsities)
    except (TypeError, ValueError):
        raise ValueError(f"sparsities must be numbers (pruned fractions c in (0, 1)), got {sparsities!r}") from None
    if not values:
        raise ValueError("sparsities is empty: give at least one sparsity c, e.g. (0.8, 0.9, 0.95)")
    for c in values:
        if not 0 < c < 1:
            hint = f"; for {c:g} %, pass {c / 100:g}" if 1 <= c <= 100 else ""
            raise ValueError(f"a sparsity c is the pruned fraction, strictly between 0 and 1, got {c:g}{hint}")
        if (1 - c) * d_max < 1:
            raise ValueError(f"sparsity c = {c:g} keeps less than one dimension per row at d_max = {d_max}: "
                             f"use c <= {1 - 1 / d_max:.4g} or a larger d_max")
    if len(set(values)) != len(values):
        raise ValueError(f"sparsities repeat a value: {list(values)}")
    return values


def density_of(sparsity: float) -> float:
    """The kept fraction 1 - c, rounded to 12 digits (so 1 - 0.8 is 0.2, as CIESS stores it). Chapter 8."""
    return round(1.0 - float(sparsity), 12)


def _check_overrides(name: str, cls, overrides: dict, shared=SHARED) -> dict:
    overrides = dict(overrides or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{name} settings {unknown} are not fields of {cls.__name__}")
    clash = sorted(set(overrides) & set(shared))
    if clash:
        raise ValueError(f"{name} settings {clash} are shared by every method: set them on HeadToHeadConfig "
                         "(d_max, seeds, epochs, patience, train_overrides, device)")
    return overrides


@dataclass
class HeadToHeadConfig:
    """Settings of a head-to-head run; the per-method dicts override that method's own config. Chapter 8.

    Defaults are the reduced schedule of ``benchmarks/head_to_head.py``: DNIS at most 20 warm-start + 20
    search epochs, widths derived as prefixes and retrained (``derive="prefix-retrain"``: this comparison
    budgets parameters), CIESS's ``"reduced"`` schedule (6 episodes
    x 5 iterations x 3 epochs, l = 1), iHAS with :class:`~recsize.search.ihas.IHASConfig` defaults (K = 4,
    10 search epochs, the trainer's lr and batch size), and every retraining at most 30 epochs with
    patience 10.
    """

    sparsities: tuple = (0.8, 0.9, 0.95)   # c, pruned fractions (densities 0.2 / 0.1 / 0.05)
    methods: tuple | None = None           # None: every method that applies to the backbone
    seeds: tuple = (0,)
    d_max: int = 64
    epochs: int = 30                       # retraining cap, every method (and CIESS's reference model)
    patience: int = 10                     # early stopping, every method
    train_overrides: dict = field(default_factory=dict)  # lr, batch_size, weight_decay for every method
    protocol: str = "random-811"           # split protocol when a dataset is given by name (top-k)
    mde_alpha: float = 0.3                 # MDE temperature
    dnis: dict = field(default_factory=dict)   # DNISConfig overrides (warm_epochs, search_epochs, blocks, ...)
    ciess_schedule: str = "reduced"        # CIESS schedule (recsize.search.ciess.SCHEDULES)
    ciess: dict = field(default_factory=dict)  # CIESSConfig overrides (episodes, iterations, lam, ...)
    ihas: dict = field(default_factory=dict)   # IHASConfig overrides (clusters, search_epochs, ...)
    device: str = "cpu"
    progress: bool | None = None           # one progress bar over all runs (default: only on a terminal)

    def __post_init__(self):
        from .ciess import SCHEDULES, CIESSConfig
        from .dnis import DNISConfig
        from .ihas import IHASConfig
        if int(self.d_max) != self.d_max or self.d_max < 1:
            raise ValueError(f"d_max must be an integer >= 1, got {self.d_max}")
        self.sparsities = check_sparsities(self.sparsities, self.d_max)
        if self.methods is not None:
            self.methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        seeds = (self.seeds,) if isinstance(self.seeds, (int, np.integer)) else tuple(self.seeds)
        if not seeds:
            raise ValueError("seeds is empty: give at least one seed, e.g. (0,)")
        if any(int(s) != s for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct integers, got {list(seeds)}")
        self.seeds = tuple(int(s) for s in seeds)
        for name in ("epochs", "patience"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < (1 if name == "epochs" else 0):
                raise ValueError(f"{name} must be an integer >= {1 if name == 'epochs' else 0}, got {getattr(self, name)}")
        unknown = set(self.train_overrides) - {"lr", "batch_size", "weight_decay"}
        if unknown:
            raise ValueError(f"train_overrides accepts lr, batch_size and weight_decay, got {sorted(unknown)}")
        if not 0 <= self.mde_alpha <= 1:
            raise ValueError(f"mde_alpha (the MDE temperature) must lie in [0, 1], got {self.mde_alpha}")
        if self.ciess_schedule not in SCHEDULES:
            raise ValueError(f"unknown CIESS schedule {self.ciess_schedule!r}: choose one of {', '.join(SCHEDULES)}")
        self.dnis = _check_overrides("dnis", DNISConfig, self.dnis)
        self.ciess = _check_overrides("ciess", CIESSConfig, self.ciess)
        self.ihas = _check_overrides("ihas", IHASConfig, self.ihas, shared=())

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


# ---------------------------------------------------------------------------------------------------
# One record per (seed, method, budget)
# ---------------------------------------------------------------------------------------------------

def _budget_parameters(rows_by_table: dict, density: float, d_max: int) -> int:
    """What the baselines keep: every table exactly target_parameters(density, rows, d_max)."""
    return int(sum(target_parameters(density, rows, d_max) for rows in rows_by_table.values()))


def _record(backbone, dataset, seed, sparsity, method, task, test, parameters, budget_parameters, compact,
            dense, search_seconds, retrain_seconds, best_epoch=None, note="") -> dict:
    return {"backbone": backbone, "dataset": dataset, "seed": int(seed), "sparsity": float(sparsity),
            "density": density_of(sparsity), "method": method,
            **{m: float(test[m]) for m in METRICS[task]},
            "parameters": int(parameters), "budget_parameters": int(budget_parameters),
            "compact_bytes": int(compact), "dense_bytes": int(dense),
            "search_seconds": float(search_seconds), "retrain_seconds": float(retrain_seconds),
            "best_epoch": None if best_epoch is None else int(best_epoch), "note": note}


def _from_run(run, common: dict, sparsity: float, method: str, search_seconds: float, retrain_seconds: float,
              note: str = "") -> dict:
    """A record from a :class:`~recsize.search.baselines.BaselineRun` (the baselines, DNIS prefix-retrain) or
    a :class:`~recsize.search.prune.PruneRun` (DNIS in place: its stored bytes are the CSR tables')."""
    memory, tables = run.memory, [r for r in run.memory if r != "total"]
    test = run.test_compact or run.result.test
    compact = run.stored_bytes
    budget = _budget_parameters({r: memory[r]["rows"] for r in tables}, run.density, run.d_max)
    return _record(sparsity=sparsity, method=method, test=test, parameters=memory["total"]["parameters"],
                   budget_parameters=budget, compact=compact, dense=memory["total"]["dense"],
                   search_seconds=search_seconds, retrain_seconds=retrain_seconds,
                   best_epoch=run.result.best_epoch, note=note, **common)


def _shared_note(method: str, sparsities) -> str:
    return (f"{NAMES[method]}: one search serves every budget; its cost is recorded once, on the "
            f"c = {100 * sparsities[0]:g} % record")


def _run_baseline(method, backbone, split, config, seed, common, bar) -> list[dict]:
    from ..train import default_config
    from .baselines import run_baseline
    train_config = default_config(backbone, **config.train_overrides, epochs=config.epochs,
                                  patience=config.patience, seed=seed, device=config.device, progress=False)
    records = []
    for c in config.sparsities:
        start = time.perf_counter()
        run = run_baseline(backbone, split, method, density_of(c), config.d_max, train_config, seed=seed,
                           alpha=config.mde_alpha)
        records.append(_from_run(run, common, c, method, 0.0, time.perf_counter() - start))
        bar.update(1)
    return records


def _run_dnis(backbone, split, config, seed, common, bar) -> list[dict]:
    from . import dnis
    # this head-to-head budgets parameters (issue 14 moves it to bytes): DNIS derives prefix widths and
    # retrains, unless config.dnis says otherwise
    dnis_config = dnis.DNISConfig(**{"derive": "prefix-retrain", "warm_epochs": 20, "search_epochs": 20,
                                     **config.dnis, "d_max": config.d_max, "retrain_epochs": config.epochs,
                                     "patience": config.patience, "seed": seed, "device": config.device,
                                     "progress": False, "train_overrides": dict(config.train_overrides)})
    searched = dnis.search(backbone, split, dnis_config)
    records, note = [], _shared_note("dnis", config.sparsities)
    for i, c in enumerate(config.sparsities):
        run = dnis.run_dnis(backbone, split, density_of(c), dnis_config, searched=searched)
        records.append(_from_run(run.run, common, c, "dnis", searched.seconds["total"] if i == 0 else 0.0,
                                 run.seconds["retrain"], note))
        bar.update(1)
    return records


def _run_ciess(backbone, split, config, seed, common, bar) -> list[dict]:
    from .baselines import role_counts
    from .ciess import SCHEDULES, CIESSConfig, run_ciess
    densities = tuple(density_of(c) for c in config.sparsities)
    ciess_config = CIESSConfig(**{**SCHEDULES[config.ciess_schedule], **config.ciess, "budgets": densities,
                                  "d_max": config.d_max, "full_epochs": config.epochs,
                                  "retrain_epochs": config.epochs, "patience": config.patience, "seed": seed,
                                  "device": config.device, "progress": False,
                                  "train_overrides": dict(config.train_overrides)})
    result = run_ciess(backbone, split, ciess_config)
    search_seconds = result.seconds["reference"] + result.seconds["search"]
    rows = {r: len(c) for r, c in role_counts(split).items()}
    records, shared = [], _shared_note("ciess", config.sparsities)
    for i, (c, d) in enumerate(zip(config.sparsities, densities)):
        found = result.budgets[str(d)]
        best = found["best"]
        tables = [r for r in best["memory"] if r != "total"]
        note = shared + ("; projected: no searched mask met this budget, the thinnest one was scaled down to it"
                         if best["projected"] else "")
        records.append(_record(sparsity=c, method="ciess", test=best["test_compact"],
                               parameters=best["parameters"],
                               budget_parameters=_budget_parameters({r: rows[r] for r in tables}, d, config.d_max),
                               compact=sum(best["memory"][r]["compact_measured"] for r in tables),
                               dense=best["dense_bytes"], search_seconds=search_seconds if i == 0 else 0.0,
                               retrain_seconds=sum(r["seconds"] for r in found["candidates"]),
                               best_epoch=best["best_epoch"], note=note, **common))
        bar.update(1)
    return records


def _run_ihas(backbone, split, config, seed, common, bar) -> list[dict]:
    from ..train import default_config
    from .ihas import IHASConfig, run_ihas
    train_config = default_config(backbone, **config.train_overrides, epochs=config.epochs,
                                  patience=config.patience, seed=seed, device=config.device, progress=False)
    ihas_config = IHASConfig(**{"lr": train_config.lr, "batch_size": train_config.batch_size, **config.ihas})
    records = []
    for c in config.sparsities:
        run = run_ihas(backbone, split, density_of(c), config.d_max, ihas_config, train_config, seed=seed,
                       progress=False)
        b = run.budget
        compact = b["total_bytes"]  # cluster tables, router and the extra first-order tables, as stored
        note = (f"iHAS: K = {len(run.models)} cluster models + router (routing "
                f"{b['routing_parameters']['total']:,} parameters); one search per budget")
        records.append(_record(sparsity=c, method="ihas", test=run.test, parameters=b["total_parameters"],
                               budget_parameters=b["target_parameters"], compact=compact,
                               dense=dense_bytes(split.data.n_features, config.d_max),
                               search_seconds=run.seconds["search"], retrain_seconds=run.seconds["retrain"],
                               note=note, **common))
        bar.update(1)
    return records


RUNNERS = {"es": _run_baseline, "mr": _run_baseline, "mde": _run_baseline, "dnis": _run_dnis,
           "ciess": _run_ciess, "ihas": _run_ihas}


def _dataset_name(data) -> str:
    return data if isinstance(data, str) else getattr(getattr(data, "data", None), "name", type(data).__name__)


def _check_split(backbone: str, split) -> None:
    is_ctr = hasattr(split, "feature_counts")
    if not is_ctr and not hasattr(split, "user_activity"):
        raise ValueError(f"data must be a dataset name or a split (recsize.data.prepare), got {type(split).__name__}")
    if (_task(backbone) == "ctr") != is_ctr:
        raise ValueError(f"backbone {backbone!r} is a {'CTR' if _task(backbone) == 'ctr' else 'top-k'} model but "
                         f"the data is a {'CTR' if is_ctr else 'top-k'} split: use ml-100k for mf / neumf / ngcf / "
                         "lightgcn and ml-100k-ctr for fm / deepfm")


def head_to_head(backbone: str, data, config: HeadToHeadConfig | None = None, **overrides) -> list[dict]:
    """Run every method on ``backbone`` at every budget and return flat records. Explained in Chapter 8.

    ``data`` is a dataset name (``"ml-100k"``, ``"ml-100k-ctr"``: seed s prepares its split with
    ``config.protocol``) or a ready split (used for every seed; the seed then changes only the
    initialisation and the searches). ``overrides`` replace fields of ``config``
    (``head_to_head("mf", split, sparsities=(0.9,), epochs=5)``).

    One record per (seed, method, budget), in that order: ``backbone, dataset, seed, sparsity, density,
    method``; the test metrics with compact tables (``recall@20, ndcg@20`` for top-k, ``auc, logloss``
    for CTR); ``parameters`` kept (iHAS: clusters + router) and ``budget_parameters`` (what the budget
    allows: the baselines keep exactly this, CIESS at most about this); ``compact_bytes`` measured on the
    compact modules (iHAS: every cluster table plus the router) and ``dense_bytes`` of the full-width
    tables; ``search_seconds`` (0 for ES / MR / MDE; a shared search on the first budget only, see the
    module docstring) and ``retrain_seconds``; ``best_epoch`` of the retraining and a ``note``.
    """
    config = replace(config or HeadToHeadConfig(), **overrides) if overrides else (config or HeadToHeadConfig())
    backbone = str(backbone).lower()
    methods = check_methods(backbone, config.methods)
    dataset = _dataset_name(data)
    if not isinstance(data, str):
        _check_split(backbone, data)
    from tqdm import tqdm

    from ..train import show_progress
    total = len(config.seeds) * len(methods) * len(config.sparsities)
    bar = tqdm(total=total, desc=f"head to head {backbone}", unit="run", disable=not show_progress(config.progress))
    records = []
    try:
        for seed in config.seeds:
            if isinstance(data, str):
                from ..data import prepare
                split = prepare(data, config.protocol, seed=seed)
                _check_split(backbone, split)
            else:
                split = data
            common = {"backbone": backbone, "dataset": dataset, "seed": seed, "task": _task(backbone)}
            for method in methods:
                bar.set_postfix(seed=seed, method=NAMES[method])
                runner = RUNNERS[method]
                args = (backbone, split, config, seed, common, bar)
                records += runner(method, *args) if runner is _run_baseline else runner(*args)
    finally:
        bar.close()
    return records


# ---------------------------------------------------------------------------------------------------
# Reading the records: summary, search cost, Pareto front and plot
# ---------------------------------------------------------------------------------------------------

def metrics_of(records: list[dict]) -> tuple[str, ...]:
    """The quality metrics the records carry: Recall@20 / NDCG@20 (top-k) or AUC / log loss (CTR). Chapter 8."""
    found = [m for task in ("topk", "ctr") for m in METRICS[task] if records and m in records[0]]
    if not found:
        raise ValueError("no records, or records without quality metrics (run head_to_head first)")
    return tuple(found)


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std())


def _order(records: list[dict]):
    backbones = list(dict.fromkeys(r["backbone"] for r in records))
    return lambda k: (backbones.index(k[0]), k[2],
                      _ALL_METHODS.index(k[3]) if k[3] in _ALL_METHODS else len(_ALL_METHODS))


def summary_table(records: list[dict]) -> list[dict]:
    """Mean ± standard deviation over seeds per (backbone, dataset, sparsity, method): every quality
    metric, parameters, compact bytes and retraining seconds as (mean, std); ``n`` seeds. Chapter 8."""
    if not records:
        raise ValueError("no records to summarise (run head_to_head first)")
    groups: dict = {}
    for r in records:
        groups.setdefault((r["backbone"], r["dataset"], r["sparsity"], r["method"]), []).append(r)
    rows = []
    for key in sorted(groups, key=_order(records)):
        mine = groups[key]
        row = dict(zip(("backbone", "dataset", "sparsity", "method"), key), n=len(mine))
        for m in metrics_of(mine):
            row[m] = _mean_std([r[m] for r in mine])
        for k in ("parameters", "compact_bytes", "retrain_seconds"):
            row[k] = _mean_std([r[k] for r in mine])
        row["projected"] = sum("projected" in r.get("note", "") for r in mine)  # CIESS: no mask met the budget
        rows.append(row)
    return rows


def search_costs(records: list[dict]) -> list[dict]:
    """Wall time per (backbone, method), mean ± std over seeds of the per-seed totals: search (0 for ES /
    MR / MDE; a DNIS or CIESS search counted once however many budgets it serves), retraining (summed over
    the budgets) and both together, with how often the method searches. Chapter 8."""
    if not records:
        raise ValueError("no records (run head_to_head first)")
    per_seed: dict = {}
    for r in records:
        cell = per_seed.setdefault((r["backbone"], r["method"]), {}).setdefault(r["seed"], [0.0, 0.0, 0])
        cell[0] += r["search_seconds"]
        cell[1] += r["retrain_seconds"]
        cell[2] += 1
    backbones = list(dict.fromkeys(r["backbone"] for r in records))
    rows = []
    for (backbone, method) in sorted(per_seed, key=lambda k: (backbones.index(k[0]), _ALL_METHODS.index(k[1]))):
        seeds = per_seed[(backbone, method)]
        search = [v[0] for v in seeds.values()]
        retrain = [v[1] for v in seeds.values()]
        rows.append({"backbone": backbone, "method": method, "n": len(seeds),
                     "budgets": next(iter(seeds.values()))[2], "searches": SEARCHES.get(method, "no search"),
                     "search_seconds": _mean_std(search), "retrain_seconds": _mean_std(retrain),
                     "total_seconds": _mean_std(np.add(search, retrain))})
    return rows


def width_correlations(sizes: dict, split) -> dict:
    """Spearman rank correlations of a method's widths (``sizes``: role -> width of every row) with the
    planted true widths of synthetic data (``truth``; absent for real data) and with training frequency
    (``popularity``), per role (``user``, ``item``; NeuMF's MLP tables as ``user_mlp`` / ``item_mlp``).
    On ``planted-*`` data the true widths are independent of popularity, so only a method that reads the
    data can score on ``truth`` there. Explained in Chapter 8."""
    from scipy.stats import spearmanr

    from .baselines import role_counts
    meta = getattr(getattr(split, "data", None), "meta", None) or {}
    counts = role_counts(split)
    out = {"truth": {}, "popularity": {}}
    for role, widths in sizes.items():
        widths = np.asarray(widths)
        base = role.removesuffix("_mlp")
        for key, other in (("truth", meta.get(f"true_{base}_dims")), ("popularity", counts.get(role))):
            if other is None or len(other) != len(widths):
                continue
            rho = spearmanr(widths, other)[0] if widths.std() > 0 and np.std(other) > 0 else float("nan")
            out[key][role] = float(rho)
    return out


# a grid cell's wall times (benchmarks/prune.py): the stages its one search per seed spends, counted once
# per seed (DNIS's "warm" is inside its "search"; iHAS searches per budget), and the per-cell retraining
_SHARED_STAGES = ("dense", "reference", "search")
_CELL_STAGES = ("train", "finetune", "retrain")


def grid_records(runs: list[dict], settings: list[dict]) -> list[dict]:
    """The cells of a stored grid (the ``runs`` and ``settings`` of a
    :class:`recsize.experiments.grids.Grid`: ``benchmarks/prune.py`` cells) as :func:`head_to_head`
    records, so that :func:`summary_table`, :func:`search_costs`, :func:`pareto_plot` and
    :func:`format_costs` read the converged runs: the stored bytes as ``compact_bytes`` (CSR for the
    element-wise methods, compact prefix tables for the others), the kept entries as ``parameters``, and
    a search that serves every budget (MagPrune's dense model, PEP, DNIS, CIESS) counted once per seed,
    on its smallest sparsity. Explained in Chapter 8."""
    if not runs:
        raise ValueError("no grid cells (run benchmarks/prune.py first)")
    first = settings[0]
    task = _grid_task(settings)
    lowest = {}
    for r in runs:
        key = (r["method"], r["seed"])
        lowest[key] = min(lowest.get(key, r["sparsity"]), r["sparsity"])
    records = []
    for r in runs:
        seconds = r.get("seconds") or {}
        shared = r["method"] != "ihas"
        search = sum(float(seconds.get(k, 0.0)) for k in _SHARED_STAGES)
        if shared and r["sparsity"] != lowest[(r["method"], r["seed"])]:
            search = 0.0
        retrain = sum(float(seconds.get(k, 0.0)) for k in _CELL_STAGES)
        note = "projected" if r.get("projected") else ""
        records.append(_record(first["backbone"], first["dataset"], r["seed"], r["sparsity"], r["method"], task,
                               r, r["kept"], r["kept"], r["bytes"], r["dense_bytes"], search, retrain,
                               r.get("best_epoch"), note))
    return records


def _grid_task(settings: list[dict]) -> str:
    return "ctr" if settings[0]["dataset"].endswith("-ctr") else "topk"


def grid_metric(settings: list[dict]) -> str:
    """The headline metric of a stored grid (``settings`` as :class:`recsize.experiments.grids.Grid`
    holds them): AUC on CTR data, Recall@20 on top-k data. Explained in Chapter 5."""
    return METRICS[_grid_task(settings)][0]


def pareto_plot(records: list[dict], metric: str | None = None, backbone: str | None = None, ax=None,
                title: str | None = None, annotate: bool = True):
    """Quality against compact bytes (log x) for one backbone: one marker per method, one point per
    budget (mean over seeds), the Pareto front as a dashed step line. Returns the matplotlib axes.
    Explained in Chapter 8."""
    import matplotlib.pyplot as plt

    from ..plots import log_axis
    backbones = list(dict.fromkeys(r["backbone"] for r in records))
    if not backbones:
        raise ValueError("no records to plot (run head_to_head first)")
    if backbone is None:
        if len(backbones) > 1:
            raise ValueError(f"the records hold several backbones {backbones}: pass backbone=")
        backbone = backbones[0]
    mine = [r for r in records if r["backbone"] == backbone]
    if not mine:
        raise ValueError(f"no records for backbone {backbone!r}; the records hold {backbones}")
    metric = metric or metrics_of(mine)[0]
    if metric not in mine[0]:
        raise ValueError(f"the records have no metric {metric!r}; they have {', '.join(metrics_of(mine))}")
    points = pareto_points(mine, metric)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for method in [m for m in _ALL_METHODS if any(p["method"] == m for p in points)]:
        ps = sorted((p for p in points if p["method"] == method), key=lambda p: p["compact_bytes"])
        ax.plot([p["compact_bytes"] for p in ps], [p[metric] for p in ps], marker=MARKERS[method], ls=":",
                lw=0.8, ms=8 if method != "ihas" else 11, label=NAMES[method], alpha=0.85, color=COLORS[method])
    front = sorted((p for p in points if p["on_front"]), key=lambda p: (p["compact_bytes"], p[metric]))
    ax.step([p["compact_bytes"] for p in front], [p[metric] for p in front], where="post", color="k", ls="--",
            lw=1, zorder=0)
    ax.scatter([p["compact_bytes"] for p in front], [p[metric] for p in front], s=260, facecolors="none",
               edgecolors="k", lw=1, label="Pareto front", zorder=0)
    if annotate:   # a row of budget labels above the axes, clear of the points (recsize.plots checks)
        for c in sorted({p["sparsity"] for p in points}):
            xs = [p["compact_bytes"] for p in points if p["sparsity"] == c]
            ax.annotate(f"c = {100 * c:g} %", (float(np.median(xs)), 1), xycoords=("data", "axes fraction"),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                        color="grey")
    ax.margins(x=0.1)
    log_axis(ax.xaxis)   # labels at 1 / 2 / 5 x 10^k (matplotlib's minor labels collide over one decade)
    ax.set_xlabel("compact bytes of the embedding tables (log scale)")
    ax.set_ylabel(f"test {LABELS.get(metric, metric)}" + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
    ax.set_title(title or f"{backbone} on {mine[0]['dataset']}", pad=14 if annotate else None)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: clear of the points
    return ax


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """:func:`summary_table` rows as text (or a markdown table), best first metric per budget marked.
    Chapter 8."""
    lines = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        mine = [r for r in rows if r["backbone"] == backbone]
        m1, m2 = metrics_of(mine)
        best = {c: max(r[m1][0] for r in mine if r["sparsity"] == c) for c in {r["sparsity"] for r in mine}}
        head = ["c", "method", LABELS[m1], LABELS[m2], "parameters", "compact KiB", "retrain s"]
        if markdown:
            over = f"mean ± std over {mine[0]['n']} seeds" if mine[0]["n"] > 1 else "one seed"
            lines += [f"{backbone} on {mine[0]['dataset']} (test, {over}):", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        else:
            lines += [f"{backbone} on {mine[0]['dataset']}",
                      f"{'c':>5s} {'method':19s}{LABELS[m1]:>17s}{LABELS[m2]:>17s}{'params':>9s}{'KiB':>9s}"
                      f"{'retrain s':>10s}"]   # 87 columns: the book's code column
        for r in mine:
            first, second = (f"{r[m][0]:.4f}" + (f" ± {r[m][1]:.4f}" if r["n"] > 1 else "") for m in (m1, m2))
            mark = r[m1][0] == best[r["sparsity"]]
            name = NAMES.get(r["method"], r["method"])
            if r.get("projected"):   # CIESS found no mask meeting this budget in some seed
                name += " (projected)" if r["projected"] == r["n"] else f" (projected in {r['projected']}/{r['n']})"
            cells = [f"{100 * r['sparsity']:g} %", name,
                     (f"**{first}**" if mark else first) if markdown else first + ("*" if mark else " "),
                     second, f"{r['parameters'][0]:,.0f}",
                     f"{r['compact_bytes'][0] / 1024:,.1f}", f"{r['retrain_seconds'][0]:.1f}"]
            if markdown:
                lines.append("| " + " | ".join(cells) + " |")
            else:
                lines.append(f"{cells[0]:>5s} {cells[1]:19s}{cells[2]:>17s}{cells[3]:>17s}{cells[4]:>9s}"
                             f"{cells[5]:>9s}{cells[6]:>10s}")
        lines.append("")
    return "\n".join(lines).rstrip()


def format_costs(rows: list[dict], markdown: bool = False) -> str:
    """:func:`search_costs` rows as text (or a markdown table). Chapter 8."""
    head = ["backbone", "method", "searches", "search s", "retraining s (all budgets)", "total s"]
    lines = (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] if markdown else
             [f"{'backbone':10s}{'method':15s}{'searches':27s}{'search s':>10s}{'retrain s':>11s}{'total s':>10s}"])
    for r in rows:
        cells = [r["backbone"], NAMES.get(r["method"], r["method"]), r["searches"],
                 f"{r['search_seconds'][0]:.1f}", f"{r['retrain_seconds'][0]:.1f}", f"{r['total_seconds'][0]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |" if markdown else
                     f"{cells[0]:10s}{cells[1]:15s}{cells[2]:27s}{cells[3]:>10s}{cells[4]:>11s}{cells[5]:>10s}")
    return "\n".join(lines)
