"""Backbone quality and speed on ml-100k against an established library's figures.

Protocol: ml-100k, every rating a positive, random 8:1:1 split per user, full ranking with training
(and at test time validation) items excluded, d = 64, early stopping on validation NDCG@20 (patience 10),
each backbone with its settings from recsize.backbones.DEFAULTS. Seed s sets both the split and training.

    python benchmarks/backbones.py                  # 3 seeds, all four top-k backbones
    python benchmarks/backbones.py --seeds 0 --backbones mf lightgcn
    python benchmarks/backbones.py --markdown       # also print the README table (benchmarks/report.py)

Writes benchmarks/out/backbones.json. Targets: at least the reference Recall@20 / NDCG@20 and at least
2x faster than the reference whole-run time on a 2-core machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from common import machine
from report import render_backbones
from recsize.files import write_json
from recsize.data import prepare
from recsize.train import default_config, fit

# An established library on the same protocol (see ../shared/reference/methods.md): R@20, N@20, minutes.
REFERENCE = {"mf": (0.37, 0.32, 0.5), "neumf": (0.36, 0.29, 1.5), "lightgcn": (0.38, 0.33, 5.5),
             "ngcf": (0.37, 0.32, 7.3)}
OUT = Path(__file__).resolve().parent / "out" / "backbones.json"



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["mf", "neumf", "lightgcn", "ngcf"],
                   choices=list(REFERENCE))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--device", default="cpu")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)

    runs = []
    for name in args.backbones:
        for seed in args.seeds:
            split = prepare(args.dataset, "random-811", seed=seed)
            start = time.perf_counter()
            r = fit(name, split, dim=64, config=default_config(name, seed=seed, device=args.device, progress=False))
            wall = time.perf_counter() - start
            runs.append({"backbone": name, "seed": seed, "recall@20": r.test["recall@20"],
                         "ndcg@20": r.test["ndcg@20"], "seconds": wall, "best_epoch": r.best_epoch,
                         "epochs": len(r.history)})
            print(f"{name:9s} seed {seed}: R@20 {r.test['recall@20']:.4f} N@20 {r.test['ndcg@20']:.4f} "
                  f"{wall:6.1f} s ({len(r.history)} epochs, best {r.best_epoch})", flush=True)

    summary = {}
    for name in args.backbones:
        mine = [r for r in runs if r["backbone"] == name]
        agg = {k: (float(np.mean([r[k] for r in mine])), float(np.std([r[k] for r in mine])))
               for k in ("recall@20", "ndcg@20", "seconds", "epochs")}
        ref_r, ref_n, ref_min = REFERENCE[name]
        agg["reference"] = {"recall@20": ref_r, "ndcg@20": ref_n, "minutes": ref_min}
        agg["speedup"] = ref_min * 60 / agg["seconds"][0]
        summary[name] = agg

    header = (f"{'backbone':9s} {'Recall@20':>16s} {'NDCG@20':>16s} {'ref R/N':>11s} {'time (s)':>13s} "
              f"{'ref (s)':>8s} {'speed-up':>8s} {'epochs':>7s}")
    print("\n" + header)
    for name, a in summary.items():
        ref = a["reference"]
        print(f"{name:9s} {a['recall@20'][0]:.4f} ± {a['recall@20'][1]:.4f}  {a['ndcg@20'][0]:.4f} ± "
              f"{a['ndcg@20'][1]:.4f}  {ref['recall@20']:.2f}/{ref['ndcg@20']:.2f} {a['seconds'][0]:7.1f} ± "
              f"{a['seconds'][1]:4.1f} {ref['minutes'] * 60:8.0f} {a['speedup']:7.1f}x {a['epochs'][0]:7.0f}")
    print(f"\nmachine: {machine()}; seeds {args.seeds}; {args.dataset}, random 8:1:1 per user, full ranking, d = 64")
    data = {"machine": machine(), "seeds": args.seeds, "dataset": args.dataset, "runs": runs, "summary": summary}
    if args.markdown:
        print("\n" + render_backbones(data))
    write_json(data, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
