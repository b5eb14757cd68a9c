"""iHAS against uniform widths (ES), the frequency rule (MDE) and DNIS at equal total embedding parameters.

Chapter 7. For every dataset and seed (the seed sets the split and training): ES and MDE keep
target_parameters(density, n_features, d_max) in one feature table; DNIS (if recsize.search.dnis exists)
derives row widths meeting the same total; iHAS with K = 1 (field-level gates, no routing) and with
K > 1 clusters fit their cluster tables, the router (router table, gate network, centroids) and the K - 1
extra first-order tables into the same total (``--charges routing+linear``, the default; ``--charges
embeddings`` charges neither, ``--charges routing`` the router only, recsize's earlier accounting);
``--cluster-inits search`` warm-starts the cluster models from the search model; ``--layouts shared`` trains
one model whose single table every cluster reads through its own prefix masks, no data split. Names: a
variant is named by what departs from (scratch, routing, per-cluster), the names of the stored tables.
Test AUC and log loss, mean and spread over seeds.

    python benchmarks/ihas.py                          # synthetic + ml-100k-ctr, 3 seeds, full epochs
    python benchmarks/ihas.py --quick                  # 1 seed, few epochs (a smoke run)
    python benchmarks/ihas.py --datasets synthetic --seeds 0 1 --epochs 20
    python benchmarks/ihas.py --datasets ml-100k-ctr --methods ihas --cluster-inits scratch search \
        --charges routing+linear embeddings --layouts per-cluster shared --backbone deepfm --epochs 300 \
        --patience 10 --seeds 0 --out benchmarks/out/ihas_breakdown_s0.json   # Chapter 7's breakdown (per seed)

Writes benchmarks/out/ihas.json (atomically).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import machine
from recsize.files import write_json
from recsize.data import prepare
from recsize.search import run_baseline
from recsize.search.ihas import IHASConfig, run_ihas
from recsize.train import default_config

OUT = Path(__file__).resolve().parent / "out" / "ihas.json"
DEFAULT_VARIANT = ("scratch", "routing", "per-cluster")  # IHASConfig's cluster_init, charge and layout



def load(name: str, seed: int, n_synthetic: int):
    if name == "synthetic":
        return prepare("synthetic-ctr", seed=seed, n=n_synthetic)
    return prepare(name, seed=seed)


def one_seed(dataset, seed, args, log) -> dict:
    split = load(dataset, seed, args.n_synthetic)
    synthetic = dataset == "synthetic"
    d_max = 32 if synthetic else args.dim
    train_over = {"lr": 3e-3, "batch_size": 512} if synthetic else {}
    tc = default_config(args.backbone, epochs=args.epochs, patience=args.patience, seed=seed, progress=False,
                        **train_over)
    rows = {}

    def record(name, test, params, seconds):
        rows[name] = {"auc": test["auc"], "logloss": test["logloss"], "parameters": int(params),
                      "seconds": seconds}
        log(f"  {dataset} seed {seed} {name:10s} AUC {test['auc']:.4f} log loss {test['logloss']:.4f} "
            f"params {int(params):,} ({seconds:.0f} s)")

    for method in [m for m in ("es", "mde") if m in args.methods]:
        t = time.perf_counter()
        run = run_baseline(args.backbone, split, method, args.density, d_max, tc, seed=seed)
        record(method.upper(), run.result.test, sum(run.sizes["feature"]), time.perf_counter() - t)
    if args.dnis and "dnis" in args.methods:
        try:
            from recsize.search.dnis import DNISConfig, run_dnis
        except ImportError:
            log("  (recsize.search.dnis not found: DNIS skipped)")
        else:
            t = time.perf_counter()
            cfg = DNISConfig(d_max=d_max, warm_epochs=args.search_epochs, search_epochs=args.search_epochs,
                             retrain_epochs=args.epochs, patience=args.patience, seed=seed, progress=False,
                             train_overrides=train_over)
            d = run_dnis(args.backbone, split, args.density, cfg)
            record("DNIS", d.run.result.test, sum(d.run.sizes["feature"]), time.perf_counter() - t)
    variants = [(K, init, charge, layout) for K in sorted({1, *args.clusters}) for init in args.cluster_inits
                for charge in args.charges for layout in args.layouts
                if not (K == 1 and (charge, layout) != (args.charges[0], args.layouts[0]))]  # K = 1: one model
    for K, init, charge, layout in variants if "ihas" in args.methods else []:
        t = time.perf_counter()
        cfg = IHASConfig(clusters=K, n_blocks=4, route_dim=args.route_dim, hidden=8 if synthetic else 16,
                         search_epochs=args.search_epochs, lr=tc.lr, batch_size=tc.batch_size,
                         cluster_init=init, charge=charge, layout=layout)
        r = run_ihas(args.backbone, split, args.density, d_max, cfg, tc, seed=seed)
        shown = (init,) if K == 1 else (init, charge, layout)   # K = 1: one model, nothing to charge
        name = f"iHAS K={K}" + ("" if shown == DEFAULT_VARIANT[:len(shown)]
                                else f" ({', '.join(v for v in shown if v != 'per-cluster')})")
        record(name, r.test, r.budget["total_parameters"], time.perf_counter() - t)
        rows[name].update(routing=r.budget["routing_parameters"]["total"],
                          first_order=r.budget["routing_parameters"]["first_order"],
                          charged=r.budget["routing_parameters"]["charged"], total_bytes=r.budget["total_bytes"],
                          clusters_used=len(r.models), cluster_sizes=r.cluster_sizes["train"])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["synthetic", "ml-100k-ctr"])
    p.add_argument("--backbone", default="fm", choices=["fm", "deepfm"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--density", type=float, default=0.2)
    p.add_argument("--dim", type=int, default=64, help="d_max on ml-100k-ctr (32 on the synthetic data)")
    p.add_argument("--clusters", nargs="+", type=int, default=[4])
    p.add_argument("--route-dim", type=int, default=2)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--search-epochs", type=int, default=15)
    p.add_argument("--n-synthetic", type=int, default=40000)
    p.add_argument("--cluster-inits", nargs="+", default=["scratch"], choices=["scratch", "search"],
                   help="iHAS cluster models from scratch (default) and/or warm-started from the search model")
    p.add_argument("--charges", nargs="+", default=["routing+linear"],
                   choices=["routing", "routing+linear", "embeddings"],
                   help="iHAS budget accounting: the router and the extra first-order tables charged (default), "
                        "nothing, and/or the router only (recsize's earlier, inconsistent accounting)")
    p.add_argument("--layouts", nargs="+", default=["per-cluster"], choices=["per-cluster", "shared"],
                   help="iHAS: one model per cluster on its own samples (default, the paper) and/or one shared "
                        "table with per-cluster masks, trained on every sample")
    p.add_argument("--no-dnis", dest="dnis", action="store_false")
    p.add_argument("--methods", nargs="+", default=["es", "mde", "dnis", "ihas"],
                   choices=["es", "mde", "dnis", "ihas"], help="methods to run (default all)")
    p.add_argument("--quick", action="store_true", help="1 seed, 5 epochs, 3 search epochs")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.search_epochs, args.patience = args.seeds[:1], 5, 3, 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    def log(msg):
        print(msg, flush=True)

    results, start = {}, time.perf_counter()
    for dataset in args.datasets:
        per_seed = {}
        for seed in args.seeds:
            per_seed[seed] = one_seed(dataset, seed, args, log)
        names = list(next(iter(per_seed.values())))
        summary = {}
        for name in names:
            auc = np.array([per_seed[s][name]["auc"] for s in args.seeds])
            ll = np.array([per_seed[s][name]["logloss"] for s in args.seeds])
            summary[name] = {"auc_mean": float(auc.mean()), "auc_std": float(auc.std()),
                             "logloss_mean": float(ll.mean()), "logloss_std": float(ll.std()),
                             "parameters": per_seed[args.seeds[0]][name]["parameters"]}
        results[dataset] = {"per_seed": {str(s): v for s, v in per_seed.items()}, "summary": summary}
        print(f"\n{dataset} ({args.backbone}, density {args.density}, seeds {args.seeds}):")
        width = max(12, *(len(n) + 1 for n in summary))
        print(f"{'method':{width}s}{'AUC':>18s}{'log loss':>18s}{'parameters':>12s}")
        for name, m in summary.items():
            print(f"{name:{width}s}{m['auc_mean']:10.4f} ± {m['auc_std']:.4f}{m['logloss_mean']:10.4f} ± "
                  f"{m['logloss_std']:.4f}{m['parameters']:12,}")
    write_json({"machine": machine(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                               for k, v in vars(args).items()},
                "seconds": time.perf_counter() - start, "results": results}, args.out)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
