"""Every search method head to head at the same budgets on ml-100k (Chapter 8).

Protocol: ml-100k, every rating a positive, random 8:1:1 split per user, full ranking, test Recall@20 /
NDCG@20 for the top-k backbones LightGCN and NeuMF; the ml-100k CTR view (random 8:1:1 over samples), test
AUC / log loss for DeepFM. d_max = 64; budgets c = 80 / 90 / 95 % pruned (densities 0.2 / 0.1 / 0.05).
Methods: ES, MR, MDE, DNIS, CIESS (top-k only) and iHAS (CTR only), through
``recsize.search.compare.head_to_head``: the same split, budgets and retraining for every method, the
quality measured with compact tables, the real compact bytes (iHAS: its K cluster tables plus the router).

The default is a documented *reduced* schedule that fits in about half an hour on a 2-core CPU with one
seed (seed s sets the split, the searches and the training):

* retraining, every method: at most 30 epochs, patience 10 (top-k; CIESS's full-width reference model
  too); at most 30 epochs, patience 3 for DeepFM (validation AUC peaks within a few epochs), as in
  benchmarks/dnis.py;
* DNIS: 20 warm-start + 20 search epochs (the official scripts' values), 10 frequency blocks, one
  search for the three budgets;
* CIESS: the reduced schedule of benchmarks/ciess.py (6 episodes x 5 iterations x 3 epochs, l = 1,
  lambda = 0.4; the paper runs 30 x 10), one search for the three budgets;
* iHAS: K = 4 clusters, 10 search epochs, one search per budget, the router charged and the K - 1 extra
  first-order tables not (``charge="routing"``, recsize's earlier accounting, kept here because the stored
  run used it and because the consistent default, ``routing+linear``, cannot fit K = 4 on ml-100k-ctr at
  c = 95 %: its router and extra tables need 15,234 parameters of a 9,146 budget).

    python benchmarks/head_to_head.py                      # seed 0, LightGCN, NeuMF, DeepFM
    python benchmarks/head_to_head.py --seeds 0 1 2        # three seeds (about three times as long)
    python benchmarks/head_to_head.py --backbones neumf --markdown
    python benchmarks/head_to_head.py --quick              # smoke run: tiny schedules, a few minutes

Writes benchmarks/out/head_to_head.json (after every backbone, atomically; ``partial`` until the end).
``--markdown`` prints the README table (benchmarks/report.py renders the same from the JSON).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from common import machine
from recsize.files import write_json
from recsize.search.compare import (HeadToHeadConfig, format_costs, format_table, head_to_head, search_costs,
                                    summary_table)

OUT = Path(__file__).resolve().parent / "out" / "head_to_head.json"
DATASETS = {"lightgcn": "ml-100k", "neumf": "ml-100k", "mf": "ml-100k", "ngcf": "ml-100k",
            "deepfm": "ml-100k-ctr", "fm": "ml-100k-ctr"}
SPARSITIES = (0.8, 0.9, 0.95)


def settings_for(backbone: str, args) -> HeadToHeadConfig:
    """The head-to-head settings of one backbone: the top-k or the CTR retraining, the same searches."""
    ctr = DATASETS[backbone].endswith("-ctr")
    return HeadToHeadConfig(
        sparsities=tuple(args.sparsities), seeds=tuple(args.seeds), d_max=args.dim,
        epochs=args.ctr_epochs if ctr else args.epochs, patience=args.ctr_patience if ctr else args.patience,
        dnis={"warm_epochs": args.warm_epochs, "search_epochs": args.search_epochs},
        ciess=dict(args.ciess), ihas={"clusters": args.clusters, "search_epochs": args.ihas_search_epochs,
                                                 "charge": "routing"},
        progress=False)


def markdown(data: dict) -> str:
    """The README's head-to-head section: one table per backbone and the search cost (Chapter 8).
    benchmarks/report.py renders the README block with this function."""
    s = data["settings"]
    records = data["records"]
    seeds = ", ".join(map(str, s["seeds"]))
    lines = [f"Machine: {data['machine']}; seed(s) {seeds}; d_max {s['dim']}; top-k retraining at most "
             f"{s['epochs']} epochs (patience {s['patience']}), CTR at most {s['ctr_epochs']} (patience "
             f"{s['ctr_patience']}); DNIS {s['warm_epochs']} warm-start + {s['search_epochs']} search epochs; "
             f"CIESS {s['ciess']['episodes']} episodes x {s['ciess']['iterations']} iterations x "
             f"{s['ciess']['epochs_per_iteration']} epochs (l = {s['ciess']['top_l']}); iHAS K = {s['clusters']}, "
             f"{s['ihas_search_epochs']} search epochs. Quality with compact tables on the test split; bold: best "
             f"mean per budget." + (f" Whole benchmark {data['wall_seconds'] / 60:.0f} min." if data.get("wall_seconds")
                                     else "") + (" PARTIAL RUN." if data.get("partial") else "")]
    lines += ["", format_table(summary_table(records), markdown=True), "",
              "Wall time per method, all three budgets (search once where one search serves every budget):", "",
              format_costs(search_costs(records), markdown=True)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["lightgcn", "neumf", "deepfm"], choices=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    p.add_argument("--dim", type=int, default=64, help="d_max (default 64)")
    p.add_argument("--epochs", type=int, default=30, help="top-k retraining epoch cap, every method (default 30)")
    p.add_argument("--patience", type=int, default=10, help="top-k early-stopping patience (default 10)")
    p.add_argument("--ctr-epochs", type=int, default=30, help="CTR retraining epoch cap (default 30)")
    p.add_argument("--ctr-patience", type=int, default=3, help="CTR early-stopping patience (default 3)")
    p.add_argument("--warm-epochs", type=int, default=20, help="DNIS warm start (default 20)")
    p.add_argument("--search-epochs", type=int, default=20, help="DNIS alternating epochs (default 20)")
    p.add_argument("--episodes", type=int, default=6, help="CIESS episodes (default 6; the paper: 30)")
    p.add_argument("--iterations", type=int, default=5, help="CIESS iterations per episode (default 5; paper: 10)")
    p.add_argument("--clusters", type=int, default=4, help="iHAS K (default 4)")
    p.add_argument("--ihas-search-epochs", type=int, default=10, help="iHAS search epochs (default 10)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2-epoch everything, tiny searches, seed 0")
    p.add_argument("--markdown", action="store_true", help="also print the README section")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    args.ciess = {"episodes": args.episodes, "iterations": args.iterations, "epochs_per_iteration": 3, "top_l": 1,
                  "lam": 0.4}
    if args.quick:
        args.seeds = args.seeds[:1]
        args.epochs, args.patience, args.ctr_epochs, args.ctr_patience = 2, 1, 2, 1
        args.warm_epochs, args.search_epochs, args.ihas_search_epochs = 1, 1, 1
        args.ciess = {"episodes": 1, "iterations": 2, "epochs_per_iteration": 1, "top_l": 1, "lam": 0.4, "hidden": 32}
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    settings = {k: getattr(args, k) for k in ("backbones", "seeds", "sparsities", "dim", "epochs", "patience",
                                              "ctr_epochs", "ctr_patience", "warm_epochs", "search_epochs",
                                              "ciess", "clusters", "ihas_search_epochs", "quick")}
    settings["protocol"] = {"top-k": "ml-100k, random 8:1:1 per user, full ranking",
                            "ctr": "ml-100k-ctr, random 8:1:1 over samples"}
    records, seconds, configs = [], {}, {}
    start = time.perf_counter()
    for backbone in args.backbones:
        config = settings_for(backbone, args)
        configs[backbone] = config.to_dict()
        t0 = time.perf_counter()
        mine = head_to_head(backbone, DATASETS[backbone], config)
        seconds[backbone] = time.perf_counter() - t0
        records += mine
        print(f"{backbone}: {seconds[backbone] / 60:.1f} min", flush=True)
        print(format_table(summary_table(mine)), flush=True)
        write_json({"settings": settings, "machine": machine(), "configs": configs, "records": records,
                    "backbone_seconds": seconds, "partial": True}, args.out)
    wall = time.perf_counter() - start
    data = {"settings": settings, "machine": machine(), "configs": configs, "records": records,
            "backbone_seconds": seconds, "wall_seconds": wall, "partial": False}
    print(f"\nAll methods at the same budgets; {machine()}; seeds {args.seeds}; whole benchmark {wall / 60:.1f} min\n")
    print(format_table(summary_table(records)))
    print()
    print(format_costs(search_costs(records)))
    if args.markdown:
        print("\n" + markdown(data))
    write_json(data, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
