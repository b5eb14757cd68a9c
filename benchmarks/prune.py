"""MagPrune, PEP, DNIS, CIESS and iHAS against ES, MDE and MR at equal memory on ml-100k (Chapters 4, 5, 8).

Protocol: ml-100k, random 8:1:1 split per user (top-k backbones: LightGCN by default, MF, NeuMF, NGCF; test
Recall@20 / NDCG@20 by full ranking) or over samples of the CTR view ``ml-100k-ctr`` (FM, DeepFM; test
AUC / log loss), d_max = 64, sparsities c = 50 / 80 / 90 / 95 %. For the
element-wise methods the budget is 1 - c of the dense tables' bytes, CSR index included (so they keep
fewer entries than 1 - c); ES keeps 1 - c of the parameters as prefixes (its compact form adds its row
offsets and padding, so it holds slightly *more* than 1 - c of the dense bytes: both are reported).

* ES: ``run_baseline(..., "es")``, every row ~ (1 - c) * 64 wide, trained from scratch;
* MagPrune: one full-width model per seed (trained to convergence), pruned by one global magnitude
  threshold to every budget, fine-tuned with the mask fixed (``run_magprune``, ``--prune-split``);
* MagPrune per table (``magprune-table``): the same dense model, every table pruned to 1 - c of its own
  bytes (``prune_split="per-table"``), as ``dnis-table`` is for DNIS: the ablation of the one threshold;
* MagPrune as the TOIS'25 benchmark runs it (``magprune-tois``, ``run_magprune_tois``): the same dense model,
  every table pruned on its own to 1 - c of its bytes, each row's ``min_item`` largest entries protected
  (``min_item`` by the benchmark's binary search on validation NDCG@20, AUC for CTR), no fine-tuning; the
  cell records ``min_item`` and every value the search tried;
* equal parameters (``magprune-params``, ``magprune-tois-params``): the same two procedures keeping 1 - c of
  the dense *entries* (``params_budget``: the benchmark's and the papers' count; their CSR bytes exceed
  1 - c of the dense bytes, recorded as ``bytes``), the accounting under which the benchmark compared;
* PEP: one thresholded training per seed watches every budget still missing; each budget retrains from the
  initial weights with its mask (``pep_search`` + ``run_pep``; the authors' defaults unless changed);
* ES at equal bytes (``es-bytes``): ES with the largest density whose compact tables (values, offsets,
  padding) fit in the same 1 - c of the dense bytes as MagPrune and PEP; skipped (said so) where that leaves
  less than one dimension per row (c = 95 % at d_max = 64);
* MDE at equal bytes (``mde-bytes``): the frequency rule at that same density (its compact form holds the
  same values and offsets, so the same bytes up to padding);
* MR at equal bytes (``mr-bytes``): random widths (``run_baseline(..., "mr")``) at that same density, the
  same compact prefix storage;
* CIESS (``ciess``, top-k backbones): ``run_ciess`` with its faithful defaults (M = 30 episodes x T = 10
  iterations of the authors' batch training, l = 3 masks retrained per budget, the official selection),
  its budgets the es-bytes densities, so its compact prefix tables fit the same bytes; one search per seed
  over the budgets of all of c = 50 / 80 / 90 / 95 % (and any others asked for: the selection bands depend
  on the set, so a cell's value does not depend on which cells a resumed run still misses); the best of
  the l retrained masks on validation is reported; ``--ciess-episodes``, ``--ciess-iterations``,
  ``--ciess-iteration-batches`` and ``--ciess-top-l`` reduce it for a CPU, ``--ciess-reward`` and
  ``--ciess-lam`` pick the reward (issue 16's experiment 3); ``projected`` marks a budget
  no searched mask met;
* iHAS (``ihas``, CTR backbones; skipped with one line for top-k ones): ``run_ihas`` per budget with the
  es-bytes parameter count (``--ihas-charge`` says what the budget charges beyond the cluster tables,
  recorded per cell); its bytes are those ``run_ihas`` counts (K compact cluster tables, router, the extra
  first-order tables), so it stores *more* than the budget: read its KiB column; ``--ihas-layout`` and
  ``--ihas-cluster-init`` pick the variants of Chapter 7, and a budget the router (and first-order tables)
  leave no room in is skipped with one line.

The full comparison of issue 14 (Chapter 8), one command per backbone, resumable and mergeable (each
file a protocol, ``recsize.search.compare.RUN_SETTINGS``; ``benchmarks/report.py`` merges
``out/PREFIX_*.json``, pairs the seeds against es-bytes and adds each method's AUKC,
``recsize.search.compare.aukc``):

    python benchmarks/prune.py --backbone lightgcn --patience 20 --methods es-bytes mde-bytes mr-bytes magprune \
        pep dnis dnis-prefix ciess --out benchmarks/out/prune_lightgcn20_all.json
    (likewise --backbone neumf, --backbone deepfm with ihas instead of ciess, --dataset planted-100k)

Every training uses the backbone's trainer settings, the same epoch cap (``--epochs``) and patience
(``--patience``, default 10). Reported per cell: test Recall@20 / NDCG@20 with the stored (CSR or compact)
tables, bytes (CSR, its VLDB'24 int32 accounting, compact for ES), kept entries, best epoch, wall times.
Resumable: the JSON is written atomically after every (method, sparsity, seed) cell and cells already in
``--out`` are skipped (with the same settings). One thread (``torch.set_num_threads(1)``).

    python benchmarks/prune.py                               # 3 seeds x 4 sparsities x every method (long)
    python benchmarks/prune.py --seeds 0 --epochs 100        # one seed, shorter cap
    python benchmarks/prune.py --quick --out /tmp/prune.json # smoke run: 2 epochs, one seed, c = 90 %
    python benchmarks/prune.py --backbone deepfm --out benchmarks/out/prune_deepfm_all.json
    python benchmarks/prune.py --dataset planted-100k --out benchmarks/out/prune_planted_lightgcn_all.json

Writes benchmarks/out/prune.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from common import machine

from recsize.budget import dense_bytes
from recsize.data import prepare
from recsize.files import write_json
from recsize.search import (
    PEPConfig,
    pep_search,
    run_baseline,
    run_baselines_stacked,
    run_magprune,
    run_magprune_tois,
    run_pep,
    table_shapes,
    train_dense,
)
from recsize.search.ciess import CIESSConfig, run_ciess
from recsize.search.compare import (
    LABELS,
    LOWER_IS_BETTER,
    METRICS,
    _task,
    applicable_methods,
    differing_settings,
    run_setting,
    width_correlations,
)
from recsize.search.dnis import DNISConfig, run_dnis
from recsize.search.dnis import search as dnis_search
from recsize.search.ihas import IHASConfig, run_ihas
from recsize.search.magprune_tois import params_budget
from recsize.search.prune import prefix_density_for_bytes
from recsize.train import default_config

OUT = Path(__file__).resolve().parent / "out" / "prune.json"
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
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
MAGPRUNE_METHODS = ("magprune", "magprune-table", "magprune-tois", "magprune-params", "magprune-tois-params")
METHODS = (*MAGPRUNE_METHODS, "pep", "es", "es-bytes", "mde-bytes", "mr-bytes", *DNIS_VARIANTS, "ciess", "ihas")
PREFIX_METHODS = ("es", "es-bytes", "mde-bytes", "mr-bytes", "ciess")   # compact prefix storage
STACKABLE = ("es", "es-bytes", "mde-bytes", "mr-bytes")   # --stacked: these cells of one seed in one pass


def record(method: str, sparsity: float, seed: int, run, seconds: dict, metrics=METRICS["topk"],
           split=None) -> dict:
    """One cell: the test metrics with the stored tables (``metrics``: Recall@20 and NDCG@20 for top-k, AUC
    and log loss for CTR), bytes, kept entries, epochs, wall times and the Spearman correlations of the
    widths with the planted truth (synthetic data) and with popularity."""
    test = run.test_compact or run.result.test
    valid = run.result.valid
    total = run.memory["total"]
    if method == "ihas":
        extra = {"form": "ihas", "bytes": run.stored_bytes, "bytes_int32": None, "reached": None}
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
    ``min_item`` with every value its search evaluated."""
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
    (CIESS's selected mask per budget, iHAS's K cluster models)."""
    result: SimpleNamespace            # test, valid, best_epoch, history (only its length is read)
    memory: dict                       # memory["total"]: dense, parameters, density
    stored_bytes: int
    sizes: dict = field(default_factory=dict)
    test_compact: dict | None = None
    info: dict = field(default_factory=dict)


def ciess_run(found: dict) -> tuple[Stored, dict]:
    """A CIESS budget of :func:`~recsize.search.ciess.run_ciess` (the best retrained mask, chosen on
    validation) as a :class:`Stored`, and the fields only CIESS has."""
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
    them the budget counted), best epoch and epochs the largest over the cluster models."""
    b = run.budget
    total = {"dense": dense, "parameters": b["total_parameters"],
             "density": b["total_parameters"] * dense_bytes(1, 1) / dense}
    result = SimpleNamespace(test=run.test, valid=run.valid, best_epoch=max(run.training["best_epoch"]),
                             history=[None] * max(run.training["epochs"]))
    extra = {"charge": b["charge"], "clusters": len(run.models), "cluster_best_epochs": run.training["best_epoch"],
             "cluster_epochs": run.training["epochs"], "cluster_bytes": b["cluster_bytes"],
             "routing_bytes": b["routing_bytes"], "first_order_bytes": b["first_order_bytes"]}
    return Stored(result, {"total": total}, b["total_bytes"]), extra


def summarise(runs: list[dict], metrics=METRICS["topk"]) -> list[dict]:
    """Mean and standard deviation over seeds per (sparsity, method)."""
    rows = []
    for sparsity in sorted({r["sparsity"] for r in runs}):
        for method in METHODS:
            mine = [r for r in runs if r["sparsity"] == sparsity and r["method"] == method]
            if not mine:
                continue
            row = {"sparsity": sparsity, "method": method, "n": len(mine), "form": mine[0]["form"]}
            row["metrics"] = tuple(metrics)
            for k in (*metrics, "bytes", "kept", "best_epoch"):
                values = [r[k] for r in mine]
                row[k] = (float(np.mean(values)), float(np.std(values)))
            row["budget_bytes"] = mine[0]["budget_bytes"]
            row["unreached"] = sum(r["reached"] is False for r in mine)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Mean ± std over seeds per cell (the value alone when one seed ran)."""
    def cell(pair, n, width=9, digits=4):
        text = f"{pair[0]:.{digits}f}" + (f" ± {pair[1]:.{digits}f}" if n > 1 else "")
        return f"{text:>{width + (digits + 4 if n > 1 else 0)}s}"
    multi = any(r["n"] > 1 for r in rows)
    pad = 8 if multi else 0
    first, second = rows[0]["metrics"] if rows else METRICS["topk"]
    lines = [f"{'c':>5s} {'method':16s}{LABELS[first]:>{9 + pad}s}{LABELS[second]:>{10 + pad}s}{'KiB':>8s}"
             f"{'budget KiB':>11s}{'kept':>9s}{'best epoch':>{11 + (6 if multi else 0)}s}{'seeds':>6s}"]
    for r in rows:
        sign = -1 if second in LOWER_IS_BETTER else 1
        best = max(sign * x[second][0] for x in rows if x["sparsity"] == r["sparsity"])
        mark = "*" if sign * r[second][0] == best else " "
        note = f"  ({r['unreached']} seed(s): budget not reached, last state cut)" if r["unreached"] else ""
        n = r["n"] if multi else 1
        epoch = f"{r['best_epoch'][0]:.1f}" + (f" ± {r['best_epoch'][1]:.1f}" if n > 1 else "")
        lines.append(f"{100 * r['sparsity']:4.0f}% {r['method']:16s}{cell(r[first], n)} "
                     f"{cell(r[second], n)}{mark}{r['bytes'][0] / 1024:>7.1f}{r['budget_bytes'] / 1024:>11.1f}"
                     f"{r['kept'][0]:>9,.0f}{epoch:>{11 + (6 if multi else 0)}s}{r['n']:>6d}{note}")
    return "\n".join(lines)


def load(path: Path, settings: dict) -> list[dict]:
    """The cells already in ``path`` (none if it does not exist); refuse results made with other settings
    (a method's own settings only where the file holds cells of it: the file's settings are rewritten)."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    old = data.get("settings", {})
    differ = differing_settings(old, settings, {r["method"] for r in data.get("runs", [])})
    if differ:
        shown = ", ".join(f"{k}={run_setting(old, k)!r}" for k in differ)
        raise SystemExit(f"{path} holds results made with other settings ({shown}): use another --out, or the same "
                         "settings to resume")
    return list(data.get("runs", []))


def stacked_cells(args, split, config, shapes, todo, seed: int) -> dict:
    """``--stacked``: the seed's pending ES / MDE / MR cells trained in one stacked pass
    (:func:`~recsize.search.run_baselines_stacked`), as {(method, sparsity): (run, seconds, extra)}. Each run
    equals its one-by-one run; its ``train`` (wall) and ``cpu`` (process CPU) seconds are the pass's shared
    equally among the K models (``stacked_pass`` and ``stacked_pass_cpu`` keep the whole), so summing a grid's
    seconds counts the pass once."""
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
    runs = run_baselines_stacked(args.backbone, split, [(m.split("-")[0], d) for m, _, d in cells], args.dim,
                                 config, seed=seed)
    wall, cpu = time.perf_counter() - begin, time.process_time() - begin_cpu
    print(f"seed {seed}: {len(cells)} ES / MDE / MR models in one stacked pass, {wall:.1f} s", flush=True)
    seconds = {"train": wall / len(cells), "cpu": cpu / len(cells), "stacked_pass": wall, "stacked_pass_cpu": cpu}
    return {(m, c): (run, seconds, {"stacked": len(cells)}) for (m, c, _), run in zip(cells, runs)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="lightgcn", choices=["lightgcn", "mf", "neumf", "ngcf", "fm", "deepfm"])
    p.add_argument("--dataset", choices=["ml-100k", "planted-100k", "planted-1m"], default="ml-100k",
                   help="top-k data: ml-100k, or synthetic data whose true widths are independent of popularity "
                        "(CTR backbones always use ml-100k-ctr)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--dim", type=int, default=64, help="d_max (default 64)")
    p.add_argument("--epochs", type=int, default=300, help="epoch cap of every training (default 300)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience (default 10)")
    p.add_argument("--prune-split", choices=["global", "per-table"], default="global")
    p.add_argument("--pep-epochs", type=int, default=300, help="cap on PEP's thresholded training (default 300)")
    p.add_argument("--pep-init", type=float, default=-15.0, help="PEP threshold init s (default -15)")
    p.add_argument("--pep-scale", type=float, default=1.0, help="PEP threshold scale: g(s) = scale * sigmoid(s) "
                   "(default 1)")
    p.add_argument("--pep-granularity", default="feature_dim",
                   choices=["feature_dim", "feature", "dimension", "global"])
    p.add_argument("--ciess-episodes", type=int, default=30, help="CIESS episodes M (default 30, the paper's)")
    p.add_argument("--ciess-iterations", type=int, default=10, help="CIESS iterations T per episode (default 10)")
    p.add_argument("--ciess-iteration-batches", type=int, default=None,
                   help="batches of each CIESS iteration's training (default: the authors' per backbone, "
                        "LightGCN 2,000, NeuMF 1,500); fewer for a reduced CPU schedule")
    p.add_argument("--ciess-top-l", type=int, default=3, help="CIESS masks retrained per budget (default 3)")
    p.add_argument("--ciess-reward", default="code", choices=["code", "paper"],
                   help="CIESS reward form (default code, the authors' code; paper: the paper's text)")
    p.add_argument("--ciess-lam", type=float, default=None,
                   help="CIESS lambda (default 0.01 with the code's reward, 0.4 with the paper's)")
    p.add_argument("--ihas-charge", default="routing+linear", choices=["routing", "routing+linear", "embeddings"],
                   help="what iHAS's budget charges beyond the cluster tables: the router and the extra "
                   "first-order tables (default), nothing, or the router only")
    p.add_argument("--ihas-clusters", type=int, default=4, help="iHAS clusters K (default 4)")
    p.add_argument("--ihas-layout", default="per-cluster", choices=["per-cluster", "shared"],
                   help="iHAS: one model per cluster (default, the paper) or one shared table (Chapter 7)")
    p.add_argument("--ihas-cluster-init", default="scratch", choices=["scratch", "search"],
                   help="iHAS cluster models from scratch (default) or warm-started from the search model")
    p.add_argument("--ihas-search-epochs", type=int, default=10, help="iHAS gate search epochs (default 10)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: every training, search and retraining; "
                   "the numbers do not depend on it up to floating point, the wall times do (recorded per file)")
    p.add_argument("--stacked", action="store_true",
                   help="LightGCN: train a seed's ES / MDE / MR cells together in one stacked pass "
                   "(recsize.stacked; the same numbers as one by one, faster; saved when the pass ends)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs of everything, first seed, c = 90 %%")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.seeds, args.sparsities = args.seeds[:1], [0.9]
        args.epochs, args.patience, args.pep_epochs = 2, 1, 2
        args.ciess_episodes, args.ciess_iterations, args.ciess_iteration_batches, args.ciess_top_l = 1, 2, 2, 1
        args.ihas_search_epochs = 1
    keys = ("backbone", "seeds", "sparsities", "methods", "dim", "epochs", "patience", "prune_split", "pep_epochs",
            "pep_init", "pep_scale", "pep_granularity", "quick", "ciess_episodes", "ciess_iterations",
            "ciess_iteration_batches", "ciess_top_l", "ciess_reward", "ciess_lam", "ihas_charge", "ihas_clusters",
            "ihas_search_epochs", "ihas_layout", "ihas_cluster_init")
    if args.ciess_lam is not None and not args.ciess_lam >= 0:
        p.error(f"--ciess-lam must be >= 0, got {args.ciess_lam}")
    if args.stacked and args.backbone != "lightgcn":
        p.error(f"--stacked trains LightGCN models only (its propagation is linear), not {args.backbone}: drop "
                "--stacked")
    task = _task(args.backbone)
    metrics = METRICS[task]
    for method in [m for m in ("ciess", "ihas") if m in args.methods and m not in applicable_methods(args.backbone)]:
        print(f"{method}: skipped, it applies to {'top-k' if method == 'ciess' else 'CTR'} backbones only, not "
              f"{args.backbone}", flush=True)
        args.methods = [m for m in args.methods if m != method]
    settings = {"dataset": "ml-100k-ctr" if task == "ctr" else args.dataset, **{k: getattr(args, k) for k in keys}}
    runs = load(args.out, settings)
    done = {(r["method"], r["sparsity"], r["seed"]) for r in runs}
    pep = PEPConfig(granularity=args.pep_granularity, threshold_init=args.pep_init, scale=args.pep_scale,
                    search_epochs=args.pep_epochs)
    start_all = time.perf_counter()

    def save(partial: bool = True):
        write_json({"settings": settings, "machine": machine(), "device": args.device, "pep_config": asdict(pep),
                    "runs": runs, "partial": partial}, args.out)

    for seed in args.seeds:
        todo = [(m, c) for c in args.sparsities for m in args.methods if (m, c, seed) not in done]
        if not todo:
            continue
        split = prepare(settings["dataset"], "random-811", seed=seed, verbose=False)
        config = default_config(args.backbone, epochs=args.epochs, patience=args.patience, seed=seed, progress=False,
                                device=args.device)
        dense = searched = ciess = None
        dnis = {}   # one DNIS search per seed and block ranking
        shapes = table_shapes(args.backbone, split, args.dim)
        stacked = stacked_cells(args, split, config, shapes, todo, seed) if args.stacked else {}
        for method, sparsity in todo:
            density = round(1 - sparsity, 6)
            stage = {}
            if method.startswith("magprune") and dense is None:
                dense = train_dense(args.backbone, split, args.dim, config)
                print(f"seed {seed}: dense {args.backbone} best epoch {dense.best_epoch}, {dense.seconds:.1f} s, "
                      f"test {metrics[-1]} {dense.test[metrics[-1]]:.4f}", flush=True)
            if method == "pep" and searched is None:
                missing = [round(1 - c, 6) for m, c in todo if m == "pep"]
                searched = pep_search(args.backbone, split, missing, args.dim, config, pep)
                print(f"seed {seed}: PEP training {len(searched.history)} epochs, {searched.seconds:.1f} s; masks at "
                      + ", ".join(f"c = {1 - d:g}: epoch {s.epoch}{'' if s.reached else ' (not reached)'}"
                                  for d, s in searched.snapshots.items()), flush=True)
            ranking = DNIS_VARIANTS.get(method, {}).get("block_ranking", "per-table")
            if method in DNIS_VARIANTS and ranking not in dnis:
                dnis_config = DNISConfig(d_max=args.dim, warm_epochs=args.epochs, search_epochs=args.epochs,
                                         retrain_epochs=args.epochs, patience=args.patience, seed=seed,
                                         progress=False, device=args.device, block_ranking=ranking)
                dnis[ranking] = found = dnis_search(args.backbone, split, dnis_config)
                print(f"seed {seed}: DNIS ({ranking} blocks) warm start {found.warm['epochs']} epochs, search "
                      f"{len(found.history)} epochs (best {found.best_epoch}), {found.seconds['total']:.1f} s",
                      flush=True)
            fitted = prefix_density_for_bytes(shapes, density)   # the prefix density at 1 - c of the bytes
            if fitted is None and method in ("es-bytes", "mde-bytes", "mr-bytes", "ciess", "ihas"):
                print(f"  seed {seed} c = {100 * sparsity:.0f} % {method}: skipped, the compact form's offsets "
                      "leave less than one dimension per row in this budget", flush=True)
                continue
            if method == "ciess" and ciess is None:
                # one search serves every budget; the budgets are always the protocol's (and any others
                # asked for), so that the selection bands and a cell's value do not depend on which cells
                # a resumed run still misses
                all_c = sorted(set(SPARSITIES) | set(args.sparsities))
                budgets = {c: round(prefix_density_for_bytes(shapes, round(1 - c, 6)), 12) for c in all_c
                           if prefix_density_for_bytes(shapes, round(1 - c, 6)) is not None}
                ciess_config = CIESSConfig(budgets=tuple(budgets.values()), d_max=args.dim,
                                           episodes=args.ciess_episodes, iterations=args.ciess_iterations,
                                           iteration_batches=args.ciess_iteration_batches, top_l=args.ciess_top_l,
                                           reward=args.ciess_reward, lam=args.ciess_lam,
                                           full_epochs=args.epochs, retrain_epochs=args.epochs,
                                           patience=args.patience, seed=seed, progress=False,
                                           device=args.device)
                ciess = (run_ciess(args.backbone, split, ciess_config), budgets)
                print(f"seed {seed}: CIESS reference {ciess[0].seconds['reference']:.1f} s, search "
                      f"{args.ciess_episodes} x {args.ciess_iterations} iterations {ciess[0].seconds['search']:.1f} s, "
                      f"retraining {ciess[0].seconds['retrain']:.1f} s", flush=True)
            begin, begin_cpu = time.perf_counter(), time.process_time()
            extra = {}
            if method in DNIS_VARIANTS:
                found = dnis[ranking]
                config_d = DNISConfig(**{**asdict(found.config), **DNIS_VARIANTS[method]})
                run = run_dnis(args.backbone, split, density, config_d, searched=found).run
                stage = {"search": found.seconds["total"], "warm": found.seconds["warm"],
                         "search_epochs": len(found.history), "warm_epochs": found.warm["epochs"],
                         "retrain": time.perf_counter() - begin}
            elif method.startswith("magprune-tois"):   # the benchmark's procedure, bytes or parameters
                accounting = "params" if method.endswith("-params") else "bytes"
                run = run_magprune_tois(args.backbone, split, density, args.dim, config, accounting, dense=dense)
                stage = {"dense": dense.seconds, "prune": run.seconds["prune"]}
            elif method.startswith("magprune"):   # magprune-table: the per-table split, whatever --prune-split
                rule = "per-table" if method == "magprune-table" else args.prune_split
                budget = params_budget(shapes, density, rule) if method == "magprune-params" else None
                run = run_magprune(args.backbone, split, density, args.dim, config, rule, dense=dense, budget=budget)
                if budget is not None:
                    run.info["accounting"] = "params"
                stage = {"dense": dense.seconds, "finetune": run.seconds["finetune"]}
            elif method == "pep":
                run = run_pep(args.backbone, split, density, args.dim, config, searched=searched)
                stage = {"search": searched.seconds, "retrain": run.seconds["retrain"]}
            elif (method, sparsity) in stacked:
                run, stage, extra = stacked[method, sparsity]
            elif method == "es":
                run = run_baseline(args.backbone, split, "es", density, args.dim, config, seed=seed)
                stage = {"train": time.perf_counter() - begin, "cpu": time.process_time() - begin_cpu}
            elif method == "ciess":
                result, budgets = ciess
                found = result.budgets[str(budgets[sparsity])]
                run, extra = ciess_run(found)
                stage = {"reference": result.seconds["reference"], "search": result.seconds["search"],
                         "retrain": sum(c["seconds"] for c in found["candidates"])}
                extra["budget_density"] = budgets[sparsity]
            elif method == "ihas":
                ihas_config = IHASConfig(lr=config.lr, batch_size=config.batch_size, charge=args.ihas_charge,
                                         clusters=args.ihas_clusters, search_epochs=args.ihas_search_epochs,
                                         layout=args.ihas_layout, cluster_init=args.ihas_cluster_init)
                try:
                    ihas = run_ihas(args.backbone, split, fitted, args.dim, ihas_config, config, seed=seed,
                                    progress=False)
                except ValueError as e:   # what the budget charges besides the tables leaves too little
                    print(f"  seed {seed} c = {100 * sparsity:.0f} % ihas: skipped, {e}", flush=True)
                    continue
                run, extra = ihas_run(ihas, sum(dense_bytes(rows, d) for rows, d in shapes.values()))
                stage = {"search": ihas.seconds["search"], "retrain": ihas.seconds["retrain"]}
                extra["budget_density"] = fitted
            else:
                run = run_baseline(args.backbone, split, method.split("-")[0], fitted, args.dim, config, seed=seed)
                stage = {"train": time.perf_counter() - begin, "cpu": time.process_time() - begin_cpu}
            runs.append({**record(method, sparsity, seed, run, stage, metrics, split), **extra})
            done.add((method, sparsity, seed))
            r = runs[-1]
            print(f"  seed {seed} c = {100 * sparsity:.0f} % {method:8s} {metrics[0]} {r[metrics[0]]:.4f} {metrics[1]} "
                  f"{r[metrics[1]]:.4f} {r['bytes'] / 1024:7.1f} KiB ({r['form']}), kept {r['kept']:,}, best epoch "
                  f"{r['best_epoch']} of {r['epochs']}, {time.perf_counter() - begin:.1f} s", flush=True)
            save()
    wall = time.perf_counter() - start_all
    rows = summarise([r for r in runs if r["seed"] in args.seeds and r["sparsity"] in args.sparsities], metrics)
    print(f"\n{args.backbone} on {settings['dataset']}, d_max = {args.dim}: MagPrune ({args.prune_split}) and PEP at 1 - c of the "
          f"dense bytes (CSR), ES at 1 - c of the parameters and es-bytes at 1 - c of the dense bytes (compact); "
          f"test split, mean ± std over seeds "
          f"{args.seeds} (* best {metrics[-1]} per c); {machine()}; this run {wall / 60:.1f} min")
    print(table(rows))
    save(partial=False)
    data = json.loads(args.out.read_text())
    data["summary"] = rows
    write_json(data, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
