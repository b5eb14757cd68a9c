"""How an experiment's cells are computed, one seed at a time. Explained in Chapter 8.

A seed is the unit that shares work: one full-width model serves every MagPrune, int8 and int4 cell of the
seed, one quantisation-aware training every qat-int4 cell, one thresholded training every PEP budget, one DNIS
search every derivation (one more for the joint blocks), one CIESS search every budget. :func:`seed_cells`
computes the cells of one seed that are still missing and yields each as soon as it is done, as a
``benchmarks/prune.py`` cell (:func:`record`: test metrics with the stored tables, bytes, kept entries,
epochs, wall times, the widths' correlations and what only the method records). The budget of a cell at
sparsity c is 1 - c of the dense tables' bytes (CSR index included for the element-wise methods; the prefix
methods take the largest density whose compact tables fit it); see ``benchmarks/prune.py`` for every method's
procedure.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import numpy as np

from ..budget import dense_bytes
from ..data import prepare
from ..search import (PEPConfig, pep_search, run_baseline, run_baselines_stacked, run_magprune, run_magprune_tois,
                      run_pep, table_shapes, train_dense)
from ..search.ciess import CIESSConfig, run_ciess
from ..search.compare import METRICS, width_correlations
from ..search.dnis import DNISConfig, run_dnis
from ..search.dnis import search as dnis_search
from ..search.ihas import IHASConfig, run_ihas
from ..search.magprune_tois import params_budget
from ..search.prune import prefix_density_for_bytes
from ..train import default_config
from .declare import DNIS_METHODS, SPARSITIES, Experiment
from .families import FAMILIES, SHARED, train_qat, unreachable

# DNIS (Chapter 5): one search per seed, then each derivation at every budget
DNIS_VARIANTS = {
    "dnis": {"derive": "in-place", "prune_by": "weight", "budget_split": "global"},           # the authors
    "dnis-alpha": {"derive": "in-place", "prune_by": "alpha-weight", "budget_split": "global"},  # Hetu
    "dnis-table": {"derive": "in-place", "prune_by": "weight", "budget_split": "per-table"},
    "dnis-prefix": {"derive": "prefix-retrain", "prune_by": "weight", "budget_split": "global"},
    "dnis-prefix-old": {"derive": "prefix-retrain", "prune_by": "alpha-weight", "budget_split": "per-table"},
    # the authors' blocks: users and items ranked jointly, one alpha per block (its own search per seed)
    "dnis-joint": {"derive": "in-place", "prune_by": "weight", "budget_split": "global", "block_ranking": "joint"},
}
assert tuple(DNIS_VARIANTS) == DNIS_METHODS
PREFIX_METHODS = ("es", "es-bytes", "mde-bytes", "mr-bytes", "ciess")   # compact prefix storage
STACKABLE = ("es", "es-bytes", "mde-bytes", "mr-bytes")   # stacked=True: these cells of one seed in one pass
# the functions a caller may replace (tests: a tiny split instead of a download; benchmarks/prune.py)
HOOKS = ("prepare", "train_dense", "pep_search", "dnis_search", "run_ciess", "run_ihas")


def _steps(hooks: dict | None) -> dict:
    unknown = sorted(set(hooks or {}) - set(HOOKS))
    if unknown:
        raise ValueError(f"hooks {unknown} are not replaceable: choose from {', '.join(HOOKS)}")
    return {"prepare": prepare, "train_dense": train_dense, "pep_search": pep_search, "dnis_search": dnis_search,
            "run_ciess": run_ciess, "run_ihas": run_ihas, **(hooks or {})}


def record(method: str, sparsity: float, seed: int, run, seconds: dict, metrics=METRICS["topk"],
           split=None) -> dict:
    """One cell: the test metrics with the stored tables (``metrics``: Recall@20 and NDCG@20 for top-k, AUC
    and log loss for CTR), bytes, kept entries, epochs, wall times and the Spearman correlations of the
    widths with the planted truth (synthetic data) and with popularity. Explained in Chapter 8."""
    test = run.test_compact or run.result.test
    valid = run.result.valid
    total = run.memory["total"]
    if method == "ihas" or method in FAMILIES:   # iHAS's clusters and router, or a family's served tables
        extra = {"form": getattr(run, "form", "ihas"), "bytes": run.stored_bytes, "bytes_int32": None, "reached": None}
    elif method in PREFIX_METHODS or method.startswith("dnis-prefix"):
        extra = {"form": "compact", "bytes": run.stored_bytes, "bytes_int32": None, "reached": None}
    else:
        snap = run.info.get("snapshot", {})
        extra = {"form": "csr", "bytes": run.stored_bytes, "bytes_int32": total["csr_int32"],
                 "reached": snap.get("reached"), "mask_epoch": snap.get("epoch")}
    return {"method": method, "sparsity": sparsity, "seed": seed, "density": round(1 - sparsity, 6),
            **{m: test[m] for m in metrics}, f"valid_{metrics[-1]}": valid[metrics[-1]],
            **extra, "budget_bytes": (1 - sparsity) * total["dense"], "dense_bytes": total["dense"],
            "kept": total["parameters"], "kept_fraction": total["density"], "best_epoch": run.result.best_epoch,
            "epochs": len(run.result.history), "seconds": seconds,
            "spearman": None if split is None else width_correlations(run.sizes, split),
            **magprune_fields(getattr(run, "info", None) or {}, metrics)}


def magprune_fields(info: dict, metrics) -> dict:
    """What a MagPrune cell adds: the accounting, the dense model it was pruned from (its best epoch, its
    validation value of the cell's last metric, NDCG@20 or log loss, as ``valid_*``, and its test metrics:
    every MagPrune cell of a seed must start from the same model) and, for ``magprune-tois``, the chosen
    ``min_item`` with every value its search evaluated. Explained in Chapter 8."""
    if "dense" not in info:
        return {}
    dense = info["dense"]
    out = {"accounting": info.get("accounting", "bytes"), "dense_best_epoch": dense["best_epoch"],
           "dense_valid": dense["valid"][metrics[-1]],
           "dense_test": {m: dense["test"][m] for m in metrics} if dense["test"] else None}
    if "min_item" in info:
        out.update({k: info[k] for k in ("min_item", "max_min_item", "search", "metric", "evaluations")},
                   min_item_values=info["values"])
    return out


@dataclass
class Stored:
    """What :func:`record` reads of a run, for the methods whose runners return no BaselineRun / PruneRun
    (CIESS's selected mask per budget, iHAS's K cluster models). Explained in Chapter 8."""
    result: SimpleNamespace            # test, valid, best_epoch, history (only its length is read)
    memory: dict                       # memory["total"]: dense, parameters, density
    stored_bytes: int
    sizes: dict = field(default_factory=dict)
    test_compact: dict | None = None
    info: dict = field(default_factory=dict)


def ciess_run(found: dict) -> tuple[Stored, dict]:
    """A CIESS budget of :func:`~recsize.search.ciess.run_ciess` (the best retrained mask, chosen on
    validation) as a :class:`Stored`, and the fields only CIESS has. Explained in Chapter 8."""
    best = found["best"]
    tables = [r for r in best["memory"] if r != "total"]
    result = SimpleNamespace(test=best["test"], valid=best["valid"], best_epoch=best["best_epoch"],
                             history=[None] * int(best.get("epochs") or 0))
    run = Stored(result, best["memory"], int(sum(best["memory"][r]["compact_measured"] for r in tables)),
                 {"user": np.asarray(best["user_sizes"]), "item": np.asarray(best["item_sizes"])},
                 best["test_compact"])
    return run, {"projected": best["projected"], "candidates": len(found["candidates"]), "rank": best["rank"],
                 "mask_density": best["density"]}


def ihas_run(run, dense: int) -> tuple[Stored, dict]:
    """An :class:`~recsize.search.ihas.IHASRun` as a :class:`Stored`: bytes and kept parameters as
    ``run_ihas`` counts them (K cluster tables, router, extra first-order tables; ``charge`` says which of
    them the budget counted), best epoch and epochs the largest over the cluster models. Explained in Chapter 8."""
    b = run.budget
    total = {"dense": dense, "parameters": b["total_parameters"],
             "density": b["total_parameters"] * dense_bytes(1, 1) / dense}
    result = SimpleNamespace(test=run.test, valid=run.valid, best_epoch=max(run.training["best_epoch"]),
                             history=[None] * max(run.training["epochs"]))
    extra = {"charge": b["charge"], "clusters": len(run.models), "cluster_best_epochs": run.training["best_epoch"],
             "cluster_epochs": run.training["epochs"], "cluster_bytes": b["cluster_bytes"],
             "routing_bytes": b["routing_bytes"], "first_order_bytes": b["first_order_bytes"]}
    return Stored(result, {"total": total}, b["total_bytes"]), extra


def pep_config(experiment: Experiment) -> PEPConfig:
    """PEP's settings of ``experiment`` (the authors' defaults unless it changes them). Explained in Chapter 8."""
    return PEPConfig(granularity=experiment.pep_granularity, threshold_init=experiment.pep_init,
                     scale=experiment.pep_scale, search_epochs=experiment.pep_epochs)


def stacked_cells(experiment: Experiment, split, config, shapes, todo, seed: int, say=print) -> dict:
    """The seed's pending ES / MDE / MR cells trained in one stacked pass
    (:func:`~recsize.search.run_baselines_stacked`, LightGCN), as {(method, sparsity): (run, seconds,
    extra)}. Each run equals its one-by-one run; its ``train`` (wall) and ``cpu`` (process CPU) seconds are
    the pass's shared equally among the K models (``stacked_pass`` and ``stacked_pass_cpu`` keep the
    whole), so summing a grid's seconds counts the pass once. Explained in Chapter 8."""
    cells = []
    for method, sparsity in todo:
        density = round(1 - sparsity, 6)
        if method not in STACKABLE:
            continue
        if method != "es":
            density = prefix_density_for_bytes(shapes, density)
            if density is None:   # skipped with one line in the cell loop
                continue
        cells.append((method, sparsity, density))
    if not cells:
        return {}
    begin, begin_cpu = time.perf_counter(), time.process_time()
    runs = run_baselines_stacked(experiment.backbone, split, [(m.split("-")[0], d) for m, _, d in cells],
                                 experiment.d_max, config, seed=seed)
    wall, cpu = time.perf_counter() - begin, time.process_time() - begin_cpu
    say(f"seed {seed}: {len(cells)} ES / MDE / MR models in one stacked pass, {wall:.1f} s", flush=True)
    seconds = {"train": wall / len(cells), "cpu": cpu / len(cells), "stacked_pass": wall, "stacked_pass_cpu": cpu}
    return {(m, c): (run, seconds, {"stacked": len(cells)}) for (m, c, _), run in zip(cells, runs)}


def _quiet(*args, **kwargs) -> None:
    pass


def seed_cells(experiment: Experiment, seed: int, todo, device: str = "cpu", stacked: bool = False,
               progress: bool = True, hooks: dict | None = None):
    """Compute the cells ``todo`` ((method, sparsity) pairs, in that order) of one seed of ``experiment``
    and yield each as a ``benchmarks/prune.py`` cell (a dict, :func:`record`) as soon as it is done. The
    seed's split is ``prepare(dataset, "random-811", seed=seed)``; a dense model, a QAT model, a PEP
    training, a DNIS search and a CIESS search are made at most once and serve every budget; the quantised
    and hashed families are computed by :mod:`recsize.experiments.families`. ``stacked`` trains the ES /
    MDE / MR cells in one pass (LightGCN; the same numbers); ``progress`` prints one line per cell;
    ``hooks`` replaces functions named in :data:`HOOKS` (``{"prepare": ...}``). A budget that leaves less
    than one dimension per row (prefix methods), no room for iHAS's router or lies below a family's floor
    (:func:`~recsize.experiments.families.unreachable`) is skipped with one line.
    Explained in Chapter 8."""
    fn = _steps(hooks)
    say = print if progress else _quiet
    e, backbone, dim = experiment, experiment.backbone, experiment.d_max
    metrics = METRICS[e.task]
    split = fn["prepare"](e.dataset, "random-811", seed=seed, verbose=False)
    config = default_config(backbone, epochs=e.epochs, patience=e.patience, seed=seed, progress=False, device=device)
    dense = searched = ciess = qat = None
    dnis = {}   # one DNIS search per seed and block ranking
    shapes = table_shapes(backbone, split, dim)
    stacked = stacked_cells(e, split, config, shapes, todo, seed, say) if stacked else {}
    for method, sparsity in todo:
        density = round(1 - sparsity, 6)
        stage = {}
        why = unreachable(method, shapes, sparsity) if method in FAMILIES else None
        if why:   # a budget below a quantised or hashed family's floor
            say(f"  seed {seed} c = {100 * sparsity:.0f} % {method}: skipped, {why}", flush=True)
            continue
        if (method.startswith("magprune") or SHARED.get(method) == "dense") and dense is None:
            dense = fn["train_dense"](backbone, split, dim, config)
            say(f"seed {seed}: dense {backbone} best epoch {dense.best_epoch}, {dense.seconds:.1f} s, "
                f"test {metrics[-1]} {dense.test[metrics[-1]]:.4f}", flush=True)
        if SHARED.get(method) == "qat" and qat is None:
            qat = train_qat(backbone, split, dim, config)
            say(f"seed {seed}: QAT {backbone} best epoch {qat.best_epoch}, {qat.seconds:.1f} s", flush=True)
        if method == "pep" and searched is None:
            missing = [round(1 - c, 6) for m, c in todo if m == "pep"]
            searched = fn["pep_search"](backbone, split, missing, dim, config, pep_config(e))
            say(f"seed {seed}: PEP training {len(searched.history)} epochs, {searched.seconds:.1f} s; masks at "
                + ", ".join(f"c = {1 - d:g}: epoch {s.epoch}{'' if s.reached else ' (not reached)'}"
                            for d, s in searched.snapshots.items()), flush=True)
        ranking = DNIS_VARIANTS.get(method, {}).get("block_ranking", "per-table")
        if method in DNIS_VARIANTS and ranking not in dnis:
            dnis_config = DNISConfig(d_max=dim, warm_epochs=e.epochs, search_epochs=e.epochs,
                                     retrain_epochs=e.epochs, patience=e.patience, seed=seed,
                                     progress=False, device=device, block_ranking=ranking)
            dnis[ranking] = found = fn["dnis_search"](backbone, split, dnis_config)
            say(f"seed {seed}: DNIS ({ranking} blocks) warm start {found.warm['epochs']} epochs, search "
                f"{len(found.history)} epochs (best {found.best_epoch}), {found.seconds['total']:.1f} s", flush=True)
        fitted = prefix_density_for_bytes(shapes, density)   # the prefix density at 1 - c of the bytes
        if fitted is None and method in ("es-bytes", "mde-bytes", "mr-bytes", "ciess", "ihas"):
            say(f"  seed {seed} c = {100 * sparsity:.0f} % {method}: skipped, the compact form's offsets "
                "leave less than one dimension per row in this budget", flush=True)
            continue
        if method == "ciess" and ciess is None:
            # one search serves every budget; the budgets are always the protocol's (and any others the
            # experiment declares), so that the selection bands and a cell's value do not depend on which
            # cells a resumed run still misses
            all_c = sorted(set(SPARSITIES) | set(e.sparsities))
            budgets = {c: round(prefix_density_for_bytes(shapes, round(1 - c, 6)), 12) for c in all_c
                       if prefix_density_for_bytes(shapes, round(1 - c, 6)) is not None}
            ciess_config = CIESSConfig(budgets=tuple(budgets.values()), d_max=dim, episodes=e.ciess_episodes,
                                       iterations=e.ciess_iterations, iteration_batches=e.ciess_iteration_batches,
                                       top_l=e.ciess_top_l, reward=e.ciess_reward, lam=e.ciess_lam,
                                       full_epochs=e.epochs, retrain_epochs=e.epochs, patience=e.patience,
                                       seed=seed, progress=False, device=device)
            ciess = (fn["run_ciess"](backbone, split, ciess_config), budgets)
            say(f"seed {seed}: CIESS reference {ciess[0].seconds['reference']:.1f} s, search "
                f"{e.ciess_episodes} x {e.ciess_iterations} iterations {ciess[0].seconds['search']:.1f} s, "
                f"retraining {ciess[0].seconds['retrain']:.1f} s", flush=True)
        begin, begin_cpu = time.perf_counter(), time.process_time()
        extra = {}
        if method in DNIS_VARIANTS:
            found = dnis[ranking]
            config_d = DNISConfig(**{**asdict(found.config), **DNIS_VARIANTS[method]})
            run = run_dnis(backbone, split, density, config_d, searched=found).run
            stage = {"search": found.seconds["total"], "warm": found.seconds["warm"],
                     "search_epochs": len(found.history), "warm_epochs": found.warm["epochs"],
                     "retrain": time.perf_counter() - begin}
        elif method.startswith("magprune-tois"):   # the benchmark's procedure, bytes or parameters
            accounting = "params" if method.endswith("-params") else "bytes"
            run = run_magprune_tois(backbone, split, density, dim, config, accounting, dense=dense)
            stage = {"dense": dense.seconds, "prune": run.seconds["prune"]}
        elif method.startswith("magprune"):   # magprune-table: the per-table split, whatever prune_split says
            rule = "per-table" if method == "magprune-table" else e.prune_split
            budget = params_budget(shapes, density, rule) if method == "magprune-params" else None
            run = run_magprune(backbone, split, density, dim, config, rule, dense=dense, budget=budget)
            if budget is not None:
                run.info["accounting"] = "params"
            stage = {"dense": dense.seconds, "finetune": run.seconds["finetune"]}
        elif method == "pep":
            run = run_pep(backbone, split, density, dim, config, searched=searched)
            stage = {"search": searched.seconds, "retrain": run.seconds["retrain"]}
        elif (method, sparsity) in stacked:
            run, stage, extra = stacked[method, sparsity]
        elif method == "es":
            run = run_baseline(backbone, split, "es", density, dim, config, seed=seed)
            stage = {"train": time.perf_counter() - begin, "cpu": time.process_time() - begin_cpu}
        elif method == "ciess":
            result, budgets = ciess
            found = result.budgets[str(budgets[sparsity])]
            run, extra = ciess_run(found)
            stage = {"reference": result.seconds["reference"], "search": result.seconds["search"],
                     "retrain": sum(c["seconds"] for c in found["candidates"])}
            extra["budget_density"] = budgets[sparsity]
        elif method == "ihas":
            ihas_config = IHASConfig(lr=config.lr, batch_size=config.batch_size, charge=e.ihas_charge,
                                     clusters=e.ihas_clusters, search_epochs=e.ihas_search_epochs,
                                     layout=e.ihas_layout, cluster_init=e.ihas_cluster_init)
            try:
                ihas = fn["run_ihas"](backbone, split, fitted, dim, ihas_config, config, seed=seed, progress=False)
            except ValueError as error:   # what the budget charges besides the tables leaves too little
                say(f"  seed {seed} c = {100 * sparsity:.0f} % ihas: skipped, {error}", flush=True)
                continue
            run, extra = ihas_run(ihas, sum(dense_bytes(rows, d) for rows, d in shapes.values()))
            stage = {"search": ihas.seconds["search"], "retrain": ihas.seconds["retrain"]}
            extra["budget_density"] = fitted
        elif method in FAMILIES:   # quantised and hashed tables (families.py)
            shared = {"dense": dense, "qat": qat}.get(SHARED.get(method))
            run = FAMILIES[method](backbone, split, sparsity, dim, config, seed, dense=shared)
            stage, extra = run.seconds, run.extra
        else:
            run = run_baseline(backbone, split, method.split("-")[0], fitted, dim, config, seed=seed)
            stage = {"train": time.perf_counter() - begin, "cpu": time.process_time() - begin_cpu}
        r = {**record(method, sparsity, seed, run, stage, metrics, split), **extra}
        say(f"  seed {seed} c = {100 * sparsity:.0f} % {method:8s} {metrics[0]} {r[metrics[0]]:.4f} {metrics[1]} "
            f"{r[metrics[1]]:.4f} {r['bytes'] / 1024:7.1f} KiB ({r['form']}), kept {r['kept']:,}, best epoch "
            f"{r['best_epoch']} of {r['epochs']}, {time.perf_counter() - begin:.1f} s", flush=True)
        yield r
