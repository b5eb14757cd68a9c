"""recsize's earlier DNIS against the budget-matched baselines ES, MR and MDE on ml-100k (Chapter 5).

The authors' derivation (prune the trained tables in place under one global threshold, fine-tune, CSR)
is measured against MagPrune and ES at equal bytes by ``benchmarks/prune.py``; this script keeps the
earlier protocol (prefix widths, retrained from scratch, parameter budgets) that produced dnis.json.

Protocol: ml-100k, random 8:1:1 split (per user for top-k; over samples for the CTR view), d_max = 64,
budgets c = 80 / 90 / 95 % pruned (densities 0.2 / 0.1 / 0.05). Two backbones: LightGCN on top-k
(full ranking, test Recall@20 / NDCG@20) and DeepFM on the CTR view (test AUC / log loss). DNIS runs the
paper's settings (10 frequency blocks, warm start, alternating first-order updates, alpha lr 0.01,
L1 1e-5, widths from the magnitude of the alpha-scaled entries); one search per seed serves the three
budgets. Every method keeps exactly the same number of parameters per table and retrains with the
backbone's default trainer settings, the same epoch cap and patience (top-k: at most 100 epochs,
patience 10; CTR: at most 30, patience 3, as validation AUC peaks within a few epochs). Seed s sets the
split, the search and training. Reported: mean and standard deviation over seeds, and the wall time of
the search and of one retraining.

    python benchmarks/dnis.py                    # 3 seeds, LightGCN and DeepFM (long on 2 cores)
    python benchmarks/dnis.py --seeds 0 1 --epochs 30 --backbones lightgcn
    python benchmarks/dnis.py --quick            # smoke run: tiny epochs, one seed, one budget

Writes benchmarks/out/dnis.json (or --out).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common import machine
from report import render_dnis
from recsize.files import write_json
from recsize.data import prepare
from recsize.search import run_baseline
from recsize.search.dnis import DNISConfig, run_dnis, search
from recsize.train import default_config

OUT = Path(__file__).resolve().parent / "out" / "dnis.json"
SPARSITIES = (0.8, 0.9, 0.95)
DATASETS = {"lightgcn": "ml-100k", "deepfm": "ml-100k-ctr", "mf": "ml-100k", "neumf": "ml-100k", "fm": "ml-100k-ctr"}
METRICS = {"ml-100k": ("recall@20", "ndcg@20"), "ml-100k-ctr": ("auc", "logloss")}
BASELINES = ("es", "mr", "mde")
# recsize's earlier DNIS, which this benchmark measured (benchmarks/out/dnis.json): prefix widths from
# |alpha x E| per table, retrained from scratch; an alpha step after every training batch; constant lr.
# The authors' derivation (in place, one global threshold) is measured by benchmarks/prune.py.
EARLIER = {"derive": "prefix-retrain", "prune_by": "alpha-weight", "budget_split": "per-table",
           "alternation": "every-batch", "lr_decay": 1.0}



def record(backbone, seed, sparsity, method, test, memory, seconds, best_epoch, epochs) -> dict:
    dataset = DATASETS[backbone]
    return {"backbone": backbone, "dataset": dataset, "seed": seed, "sparsity": sparsity, "method": method,
            **{k: test[k] for k in METRICS[dataset]}, "parameters": memory["total"]["parameters"],
            "compact_bytes": memory["total"]["compact"], "dense_bytes": memory["total"]["dense"],
            "seconds": seconds, "best_epoch": best_epoch, "epochs": epochs}


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    order = list(dict.fromkeys(r["backbone"] for r in runs))
    keys = sorted({(r["backbone"], r["sparsity"], r["method"]) for r in runs},
                  key=lambda k: (order.index(k[0]), k[1], (["dnis", *BASELINES].index(k[2]))))
    for backbone, sparsity, method in keys:
        mine = [r for r in runs if (r["backbone"], r["sparsity"], r["method"]) == (backbone, sparsity, method)]
        row = {"backbone": backbone, "sparsity": sparsity, "method": method, "n": len(mine),
               "parameters": mine[0]["parameters"], "compact_bytes": mine[0]["compact_bytes"],
               "dense_bytes": mine[0]["dense_bytes"]}
        for k in (*METRICS[DATASETS[backbone]], "seconds", "epochs"):
            values = [r[k] for r in mine]
            row[k] = (float(np.mean(values)), float(np.std(values)))
        rows.append(row)
    return rows


def table(rows: list[dict], searches: list[dict]) -> str:
    """The terminal table (the README's markdown table is benchmarks/report.py's render_dnis)."""
    lines = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        m1, m2 = METRICS[DATASETS[backbone]]
        mine = [r for r in rows if r["backbone"] == backbone]
        lines.append(f"{backbone} ({DATASETS[backbone]})")
        lines.append(f"{'c':>5s} {'method':6s}{m1:>18s}{m2:>18s}{'parameters':>12s}{'compact KiB':>12s}"
                     f"{'retrain s':>14s}")
        for r in mine:
            best = max(x[m1][0] for x in mine if x["sparsity"] == r["sparsity"])
            mark = "*" if r[m1][0] == best else " "
            cells = [f"{r[m1][0]:.4f} ± {r[m1][1]:.4f}{mark}", f"{r[m2][0]:.4f} ± {r[m2][1]:.4f}"]
            lines.append(f"{100 * r['sparsity']:4.0f}% {r['method']:6s}{cells[0]:>18s}{cells[1]:>18s}"
                         f"{r['parameters']:>12,}{r['compact_bytes'] / 1024:>12.1f}"
                         f"{r['seconds'][0]:>8.1f} ± {r['seconds'][1]:<4.1f}")
        s = [x for x in searches if x["backbone"] == backbone]
        if s:
            lines.append(f"DNIS search ({backbone}, once per seed for all budgets): "
                         f"{np.mean([x['seconds'] for x in s]):.1f} ± {np.std([x['seconds'] for x in s]):.1f} s "
                         f"(warm start {np.mean([x['warm_seconds'] for x in s]):.1f} s)")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["lightgcn", "deepfm"], choices=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    p.add_argument("--dim", type=int, default=64, help="d_max (default 64)")
    p.add_argument("--epochs", type=int, default=100, help="top-k retraining epoch cap, every method (default 100)")
    p.add_argument("--patience", type=int, default=10, help="top-k early-stopping patience (default 10)")
    p.add_argument("--ctr-epochs", type=int, default=30, help="CTR retraining epoch cap (default 30)")
    p.add_argument("--ctr-patience", type=int, default=3,
                   help="CTR early-stopping patience (default 3: validation AUC peaks within a few epochs)")
    p.add_argument("--warm-epochs", type=int, default=20, help="DNIS warm start (default 20)")
    p.add_argument("--search-epochs", type=int, default=20, help="DNIS alternating epochs (default 20)")
    p.add_argument("--granularity", choices=["row", "block"], default="row")
    p.add_argument("--methods", nargs="+", default=["dnis", *BASELINES], choices=["dnis", *BASELINES])
    p.add_argument("--quick", action="store_true", help="smoke run: 2-epoch everything, seed 0, c = 90 %%")
    p.add_argument("--markdown", action="store_true", help="also print the README table")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.sparsities = args.seeds[:1], [0.9]
        args.epochs, args.patience, args.warm_epochs, args.search_epochs = 2, 1, 1, 1
        args.ctr_epochs, args.ctr_patience = 2, 1

    settings = {k: getattr(args, k) for k in ("backbones", "seeds", "sparsities", "dim", "epochs", "patience",
                                              "ctr_epochs", "ctr_patience", "warm_epochs", "search_epochs",
                                              "granularity", "methods", "quick")}
    runs, searches = [], []
    start_all = time.perf_counter()
    for backbone in args.backbones:
        dataset = DATASETS[backbone]
        m1, m2 = METRICS[dataset]
        epochs, patience = (args.ctr_epochs, args.ctr_patience) if dataset.endswith("-ctr") \
            else (args.epochs, args.patience)
        for seed in args.seeds:
            split = prepare(dataset, "random-811", seed=seed)
            config = DNISConfig(d_max=args.dim, warm_epochs=args.warm_epochs, search_epochs=args.search_epochs,
                                granularity=args.granularity, retrain_epochs=epochs, patience=patience,
                                seed=seed, progress=False, **EARLIER)
            searched = None
            if "dnis" in args.methods:
                searched = search(backbone, split, config)
                searches.append({"backbone": backbone, "seed": seed, "seconds": searched.seconds["total"],
                                 "warm_seconds": searched.seconds["warm"], "best_epoch": searched.best_epoch,
                                 "alpha_mean": {r: a.mean(1).tolist() for r, a in searched.alphas.items()},
                                 "history": searched.history})
                print(f"{backbone} seed {seed}: DNIS search {searched.seconds['total']:.1f} s "
                      f"(best alternating epoch {searched.best_epoch})", flush=True)
            train_config = default_config(backbone, epochs=epochs, patience=patience, seed=seed, progress=False)
            for sparsity in args.sparsities:
                density = round(1 - sparsity, 6)
                for method in args.methods:
                    if method == "dnis":
                        run = run_dnis(backbone, split, density, config, searched=searched)
                        base, seconds = run.run, run.seconds["retrain"]
                    else:
                        begin = time.perf_counter()
                        base = run_baseline(backbone, split, method, density, args.dim, train_config, seed=seed)
                        seconds = time.perf_counter() - begin
                    runs.append(record(backbone, seed, sparsity, method, base.result.test, base.memory, seconds,
                                       base.result.best_epoch, len(base.result.history)))
                    print(f"  c = {100 * sparsity:.0f} % {method:5s} {m1} {base.result.test[m1]:.4f} "
                          f"{m2} {base.result.test[m2]:.4f}  {seconds:6.1f} s ({len(base.result.history)} epochs, "
                          f"best {base.result.best_epoch})", flush=True)
                write_json({"settings": settings, "machine": machine(), "runs": runs, "searches": searches,
                            "partial": True}, args.out)
    rows = summarise(runs)
    wall = time.perf_counter() - start_all
    print(f"\nDNIS against ES / MR / MDE at the same budget, mean ± std over seeds {args.seeds} "
          f"(* best mean per budget); {machine()}; whole benchmark {wall / 60:.1f} min")
    print(f"settings: {settings}\n")
    print(table(rows, searches))
    data = {"settings": settings, "machine": machine(), "wall_seconds": wall, "summary": rows, "runs": runs,
            "searches": searches, "dnis_config": asdict(DNISConfig(d_max=args.dim, warm_epochs=args.warm_epochs,
                                                                   search_epochs=args.search_epochs,
                                                                   granularity=args.granularity, **EARLIER))}
    if args.markdown:
        print(render_dnis(data))
    write_json(data, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
