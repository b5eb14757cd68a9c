"""MagPrune, PEP and DNIS against ES at equal memory on ml-100k (Chapters 4 and 5).

Protocol: ml-100k, random 8:1:1 split per user (top-k backbones: LightGCN by default, MF, NeuMF, NGCF; test
Recall@20 / NDCG@20 by full ranking) or over samples of the CTR view ``ml-100k-ctr`` (FM, DeepFM; test
AUC / log loss), d_max = 64, sparsities c = 50 / 80 / 90 / 95 %. For the
element-wise methods the budget is 1 - c of the dense tables' bytes, CSR index included (so they keep
fewer entries than 1 - c); ES keeps 1 - c of the parameters as prefixes (its compact form adds its row
offsets and padding, so it holds slightly *more* than 1 - c of the dense bytes: both are reported).

* ES: ``run_baseline(..., "es")``, every row ~ (1 - c) * 64 wide, trained from scratch;
* MagPrune: one full-width model per seed (trained to convergence), pruned by one global magnitude
  threshold to every budget, fine-tuned with the mask fixed (``run_magprune``, ``--prune-split``);
* PEP: one thresholded training per seed watches every budget still missing; each budget retrains from the
  initial weights with its mask (``pep_search`` + ``run_pep``; the authors' defaults unless changed);
* ES at equal bytes (``es-bytes``): ES with the largest density whose compact tables (values, offsets,
  padding) fit in the same 1 - c of the dense bytes as MagPrune and PEP; skipped (said so) where that leaves
  less than one dimension per row (c = 95 % at d_max = 64);
* MDE at equal bytes (``mde-bytes``): the frequency rule at that same density (its compact form holds the
  same values and offsets, so the same bytes up to padding).

Every training uses the backbone's trainer settings, the same epoch cap (``--epochs``) and patience
(``--patience``, default 10). Reported per cell: test Recall@20 / NDCG@20 with the stored (CSR or compact)
tables, bytes (CSR, its VLDB'24 int32 accounting, compact for ES), kept entries, best epoch, wall times.
Resumable: the JSON is written atomically after every (method, sparsity, seed) cell and cells already in
``--out`` are skipped (with the same settings). One thread (``torch.set_num_threads(1)``).

    python benchmarks/prune.py                               # 3 seeds x 4 sparsities x 3 methods (long)
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
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from common import machine
from recsize.data import prepare
from recsize.files import write_json
from recsize.search import PEPConfig, pep_search, run_baseline, run_magprune, run_pep, table_shapes, train_dense
from recsize.search.compare import (LABELS, LOWER_IS_BETTER, METRICS, RUN_SETTINGS, _task,
                                    width_correlations)
from recsize.search.prune import prefix_density_for_bytes
from recsize.search.dnis import DNISConfig, run_dnis, search as dnis_search
from recsize.train import default_config

OUT = Path(__file__).resolve().parent / "out" / "prune.json"
# DNIS (Chapter 5): one search per seed, then each derivation at every budget
DNIS_VARIANTS = {
    "dnis": {"derive": "in-place", "prune_by": "weight", "budget_split": "global"},           # the authors
    "dnis-alpha": {"derive": "in-place", "prune_by": "alpha-weight", "budget_split": "global"},  # Hetu
    "dnis-table": {"derive": "in-place", "prune_by": "weight", "budget_split": "per-table"},
    "dnis-prefix": {"derive": "prefix-retrain", "prune_by": "weight", "budget_split": "global"},
    "dnis-prefix-old": {"derive": "prefix-retrain", "prune_by": "alpha-weight", "budget_split": "per-table"},
}
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
METHODS = ("magprune", "pep", "es", "es-bytes", "mde-bytes", *DNIS_VARIANTS)


def record(method: str, sparsity: float, seed: int, run, seconds: dict, metrics=METRICS["topk"],
           split=None) -> dict:
    """One cell: the test metrics with the stored tables (``metrics``: Recall@20 and NDCG@20 for top-k, AUC
    and log loss for CTR), bytes, kept entries, epochs, wall times and the Spearman correlations of the
    widths with the planted truth (synthetic data) and with popularity."""
    test = run.test_compact or run.result.test
    valid = run.result.valid
    total = run.memory["total"]
    if method in ("es", "es-bytes", "mde-bytes") or method.startswith("dnis-prefix"):
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
            "spearman": None if split is None else width_correlations(run.sizes, split)}


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
    """The cells already in ``path`` (none if it does not exist); refuse results made with other settings."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    old = data.get("settings", {})
    differ = [k for k in RUN_SETTINGS if old.get(k) != settings[k]]
    if differ:
        shown = ", ".join(f"{k}={old.get(k)!r}" for k in differ)
        raise SystemExit(f"{path} holds results made with other settings ({shown}): use another --out, or the same "
                         "settings to resume")
    return list(data.get("runs", []))


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
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs of everything, first seed, c = 90 %%")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.seeds, args.sparsities = args.seeds[:1], [0.9]
        args.epochs, args.patience, args.pep_epochs = 2, 1, 2
    keys = ("backbone", "seeds", "sparsities", "methods", "dim", "epochs", "patience", "prune_split", "pep_epochs",
            "pep_init", "pep_scale", "pep_granularity", "quick")
    task = _task(args.backbone)
    metrics = METRICS[task]
    settings = {"dataset": "ml-100k-ctr" if task == "ctr" else args.dataset, **{k: getattr(args, k) for k in keys}}
    runs = load(args.out, settings)
    done = {(r["method"], r["sparsity"], r["seed"]) for r in runs}
    pep = PEPConfig(granularity=args.pep_granularity, threshold_init=args.pep_init, scale=args.pep_scale,
                    search_epochs=args.pep_epochs)
    start_all = time.perf_counter()

    def save(partial: bool = True):
        write_json({"settings": settings, "machine": machine(), "pep_config": asdict(pep),
                    "runs": runs, "partial": partial}, args.out)

    for seed in args.seeds:
        todo = [(m, c) for c in args.sparsities for m in args.methods if (m, c, seed) not in done]
        if not todo:
            continue
        split = prepare(settings["dataset"], "random-811", seed=seed, verbose=False)
        config = default_config(args.backbone, epochs=args.epochs, patience=args.patience, seed=seed, progress=False)
        dense = searched = dnis = None
        for method, sparsity in todo:
            density = round(1 - sparsity, 6)
            stage = {}
            if method == "magprune" and dense is None:
                dense = train_dense(args.backbone, split, args.dim, config)
                print(f"seed {seed}: dense {args.backbone} best epoch {dense.best_epoch}, {dense.seconds:.1f} s, "
                      f"test {metrics[-1]} {dense.test[metrics[-1]]:.4f}", flush=True)
            if method == "pep" and searched is None:
                missing = [round(1 - c, 6) for m, c in todo if m == "pep"]
                searched = pep_search(args.backbone, split, missing, args.dim, config, pep)
                print(f"seed {seed}: PEP training {len(searched.history)} epochs, {searched.seconds:.1f} s; masks at "
                      + ", ".join(f"c = {1 - d:g}: epoch {s.epoch}{'' if s.reached else ' (not reached)'}"
                                  for d, s in searched.snapshots.items()), flush=True)
            if method in DNIS_VARIANTS and dnis is None:
                dnis_config = DNISConfig(d_max=args.dim, warm_epochs=args.epochs, search_epochs=args.epochs,
                                         retrain_epochs=args.epochs, patience=args.patience, seed=seed,
                                         progress=False)
                dnis = dnis_search(args.backbone, split, dnis_config)
                print(f"seed {seed}: DNIS warm start {dnis.warm['epochs']} epochs, search {len(dnis.history)} "
                      f"epochs (best {dnis.best_epoch}), {dnis.seconds['total']:.1f} s", flush=True)
            begin = time.perf_counter()
            if method in DNIS_VARIANTS:
                config_d = DNISConfig(**{**asdict(dnis.config), **DNIS_VARIANTS[method]})
                run = run_dnis(args.backbone, split, density, config_d, searched=dnis).run
                stage = {"search": dnis.seconds["total"], "warm": dnis.seconds["warm"],
                         "search_epochs": len(dnis.history), "warm_epochs": dnis.warm["epochs"],
                         "retrain": time.perf_counter() - begin}
            elif method == "magprune":
                run = run_magprune(args.backbone, split, density, args.dim, config, args.prune_split, dense=dense)
                stage = {"dense": dense.seconds, "finetune": run.seconds["finetune"]}
            elif method == "pep":
                run = run_pep(args.backbone, split, density, args.dim, config, searched=searched)
                stage = {"search": searched.seconds, "retrain": run.seconds["retrain"]}
            elif method == "es":
                run = run_baseline(args.backbone, split, "es", density, args.dim, config, seed=seed)
                stage = {"train": time.perf_counter() - begin}
            else:
                fitted = prefix_density_for_bytes(table_shapes(args.backbone, split, args.dim), density)
                if fitted is None:
                    print(f"  seed {seed} c = {100 * sparsity:.0f} % {method}: skipped, the compact form's offsets "
                          "leave less than one dimension per row in this budget", flush=True)
                    continue
                run = run_baseline(args.backbone, split, method.split("-")[0], fitted, args.dim, config, seed=seed)
                stage = {"train": time.perf_counter() - begin}
            runs.append(record(method, sparsity, seed, run, stage, metrics, split))
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
