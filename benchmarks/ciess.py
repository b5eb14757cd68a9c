"""CIESS against the budget-matched baselines ES, MR and MDE on ml-100k (Chapter 6).

Protocol: ml-100k, every rating a positive, random 8:1:1 split per user (``--protocol ciess-50-25-25`` for
the paper's per-user 50/25/25), full ranking, d_max = 64, budgets c = 80 / 90 / 95 % (densities 0.2 / 0.1
/ 0.05). CIESS runs the reduced schedule (6 episodes x 5 iterations x 3 epochs, l = 1, lambda = 0.4), once
with the random walk and once without (the ablation, reusing the same full-width reference). The
baselines train with the same early-stopping settings as CIESS's retraining (at most 100 epochs, patience
10; patience 5 stopped LightGCN runs on an early plateau, see the README). Seed s sets the split, the search and training. Reported: test Recall@20 / NDCG@20 of the best
retrained mask per budget, kept parameters, compact bytes; the wall time of a whole search plus
retraining, and an estimate of the paper's schedule (30 x 10 iterations of 5 epochs, l = 3) extrapolated
from the measured time per iteration and per retraining.

    python benchmarks/ciess.py                          # 3 seeds, LightGCN and NeuMF (about 1.5 h on 2 cores)
    python benchmarks/ciess.py --seeds 0 --backbones lightgcn
    python benchmarks/ciess.py --quick                  # smoke run: a tiny schedule, one seed
    python benchmarks/ciess.py --schedule paper --no-ablation --seeds 0 --backbones lightgcn   # the paper's
    python benchmarks/ciess.py --seeds 1 --part ciess --device cuda --out s1.json   # parallel pieces ...
    python benchmarks/ciess.py --merge s0.json s1.json ... --out benchmarks/out/ciess.json   # ... merged

Writes benchmarks/out/ciess.json.
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
from recsize.search.ciess import CIESS, SCHEDULES, CIESSConfig
from recsize.train import default_config

OUT = Path(__file__).resolve().parent / "out" / "ciess.json"
SPARSITIES = (0.8, 0.9, 0.95)
# The paper's ML-1M LightGCN Recall@20 (CIESS, ES, MR) at c = 80 / 90 / 95 % (../shared/reference/methods.md).
PAPER = {0.8: (0.2436, 0.2248, 0.2004), 0.9: (0.2248, 0.2105, 0.1802), 0.95: (0.2009, 0.1752, 0.1634)}



def row(method, backbone, seed, density, best, seconds=None) -> dict:
    return {"method": method, "backbone": backbone, "seed": seed, "density": density, "sparsity": round(1 - density, 6),
            "recall@20": best["test"]["recall@20"], "ndcg@20": best["test"]["ndcg@20"],
            "parameters": best["parameters"], "compact_bytes": best["compact_bytes"],
            "dense_bytes": best["dense_bytes"], "projected": best.get("projected", False), "seconds": seconds}


def paper_estimate(result, config: CIESSConfig) -> dict:
    """Extrapolate the paper's schedule from measured times: per-iteration time scaled by epochs, retraining
    scaled by l (a lower bound: the reduced schedule also caps retraining at fewer epochs)."""
    paper = SCHEDULES["paper"]
    per_iteration = float(np.mean([h["seconds"] for h in result.history]))
    per_epoch_iteration = per_iteration / config.epochs_per_iteration
    search = paper["episodes"] * paper["iterations"] * paper["epochs_per_iteration"] * per_epoch_iteration
    retrain = result.seconds["retrain"] * paper["top_l"] / config.top_l
    return {"seconds_per_iteration": per_iteration, "search": search, "retrain_lower_bound": retrain,
            "reference": result.seconds["reference"], "total": search + retrain + result.seconds["reference"]}


def summarize(runs: list, backbones, densities) -> list:
    """Mean and std over seeds per (backbone, budget, method)."""
    summary = []
    for backbone in backbones:
        for density in densities:
            for method in ("ciess", "ciess-no-walk", "es", "mr", "mde"):
                rs = [r for r in runs if r["backbone"] == backbone and r["method"] == method and r["density"] == density]
                if not rs:
                    continue
                rec, ndcg = np.array([r["recall@20"] for r in rs]), np.array([r["ndcg@20"] for r in rs])
                summary.append({"backbone": backbone, "method": method, "sparsity": round(1 - density, 6),
                                "recall@20_mean": rec.mean(), "recall@20_std": rec.std(),
                                "ndcg@20_mean": ndcg.mean(), "ndcg@20_std": ndcg.std(),
                                "parameters": int(np.mean([r["parameters"] for r in rs])),
                                "compact_bytes": int(np.mean([r["compact_bytes"] for r in rs])),
                                "projected": sum(bool(r["projected"]) for r in rs), "n": len(rs)})
    return summary


def report(summary: list, timings: list, protocol: str, seeds) -> None:
    """Print the summary table and the wall times."""
    print(f"\nml-100k ({protocol}), d_max = 64, seeds {list(seeds)}, test split; mean (std over seeds)")
    print(f"{'backbone':9s}{'c':>6s} {'method':14s}{'Recall@20':>18s}{'NDCG@20':>18s}{'parameters':>11s}{'compact':>10s}")
    for s in summary:
        print(f"{s['backbone']:9s}{100 * s['sparsity']:5.0f}% {s['method']:14s}"
              f"{s['recall@20_mean']:>10.4f} ({s['recall@20_std']:.4f}){s['ndcg@20_mean']:>10.4f} ({s['ndcg@20_std']:.4f})"
              f"{s['parameters']:>11,}{s['compact_bytes'] / 1024:>8.1f}Ki" + ("  projected" if s["projected"] else ""))
    for t in timings:
        e = t["paper_schedule_estimate"]
        print(f"{t['backbone']} seed {t['seed']}: whole CIESS run {t['whole_seconds'] / 60:.1f} min; "
              f"{e['seconds_per_iteration']:.1f} s per iteration; paper schedule about {e['total'] / 3600:.1f} h "
              f"or more (search {e['search'] / 3600:.1f} h)")


def merge(paths, out: Path) -> int:
    """Combine outputs of this script (same protocol, schedule and lambda; say one seed or one part each)."""
    import json
    parts = []
    for path in paths:
        try:
            parts.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: cannot read {path}: {e}")
    for key in ("protocol", "schedule", "lambda", "quick"):
        values = {json.dumps(d.get(key), sort_keys=True) for d in parts}
        if len(values) > 1:
            raise SystemExit(f"error: cannot merge runs with different {key!r}: {sorted(values)}")
    runs = [r for d in parts for r in d["runs"]]
    if len({(r["backbone"], r["seed"], r["method"], r["density"]) for r in runs}) != len(runs):
        raise SystemExit("error: the files repeat a (backbone, seed, method, budget); give each piece once")
    timings = [t for d in parts for t in d["timings"]]
    backbones = list(dict.fromkeys(r["backbone"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    densities = sorted({r["density"] for r in runs}, reverse=True)
    summary = summarize(runs, backbones, densities)
    report(summary, timings, parts[0]["protocol"], seeds)
    write_json({**parts[0], "machine": "; ".join(dict.fromkeys(d["machine"] for d in parts)),
                "device": ", ".join(dict.fromkeys(d.get("device", "cpu") for d in parts)), "part": "merged",
                "seeds": seeds, "summary": summary, "runs": runs, "timings": timings,
                "total_seconds": sum(d["total_seconds"] for d in parts),
                "merged_from": [Path(p).name for p in paths]}, out)
    print(f"written to {out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["lightgcn", "neumf"], choices=["mf", "neumf", "ngcf", "lightgcn"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--protocol", default="random-811", choices=["random-811", "ciess-50-25-25"])
    p.add_argument("--lam", type=float, default=0.4, help="lambda (default 0.4)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny schedule, seed 0, LightGCN")
    p.add_argument("--patience", type=int, default=None,
                   help="early-stopping patience of the reference, the retraining and the baselines (default: the "
                        "reduced schedule's 5)")
    p.add_argument("--part", default="all", choices=["all", "ciess", "baselines"],
                   help="run only CIESS (with its ablation) or only the baselines, e.g. as parallel processes to "
                        "--merge afterwards (default: all)")
    p.add_argument("--schedule", default="reduced", choices=sorted(SCHEDULES),
                   help="reduced (default: minutes per seed on a CPU) or paper (30 x 10 iterations, l = 3)")
    p.add_argument("--no-ablation", action="store_true", help="skip the run without the random walk")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda; timings are only comparable per device")
    p.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                   help="combine the outputs of earlier runs (say, one seed each) into one summary; runs nothing")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    densities = tuple(round(1 - c, 6) for c in SPARSITIES)
    if args.quick:
        args.seeds, args.backbones = args.seeds[:1], args.backbones[:1]
        config_kw = dict(episodes=1, iterations=2, epochs_per_iteration=1, top_l=1, full_epochs=2,
                         retrain_epochs=2, patience=1, hidden=32)
    else:
        config_kw = dict(SCHEDULES[args.schedule])
    if args.patience is not None:
        if args.patience < 1:
            p.error(f"--patience must be >= 1, got {args.patience}")
        config_kw["patience"] = args.patience
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    runs, timings = [], []
    start = time.perf_counter()
    for backbone in args.backbones:
        for seed in args.seeds:
            split = prepare("ml-100k", args.protocol, seed=seed)
            config = CIESSConfig(**{**config_kw, "budgets": densities, "lam": args.lam, "seed": seed, "progress": False,
                                     "device": args.device})
            if args.part in ("all", "ciess"):
                t0 = time.perf_counter()
                search = CIESS(backbone, split, config)
                result = search.run()
                whole = time.perf_counter() - t0
                timings.append({"backbone": backbone, "seed": seed, "whole_seconds": whole, **result.seconds,
                                "paper_schedule_estimate": paper_estimate(result, config),
                                "search_density_first_last": [result.history[0]["density"], result.history[-1]["density"]]})
                for b in result.budgets.values():
                    runs.append(row("ciess", backbone, seed, b["density"], b["best"], whole))
                print(f"{backbone} seed {seed}: CIESS {whole:.0f} s "
                      f"(reference {result.seconds['reference']:.0f}, search {result.seconds['search']:.0f}, "
                      f"retrain {result.seconds['retrain']:.0f})", flush=True)
                if not args.no_ablation:
                    t0 = time.perf_counter()
                    ablation = CIESS(backbone, split, CIESSConfig(**{**config.to_dict(), "random_walk": False,
                                                                     "budgets": densities}),
                                     reference=search.state["reference"]).run()
                    for b in ablation.budgets.values():
                        runs.append(row("ciess-no-walk", backbone, seed, b["density"], b["best"],
                                        time.perf_counter() - t0))
                    print(f"{backbone} seed {seed}: CIESS without the walk {time.perf_counter() - t0:.0f} s", flush=True)
            if args.part == "ciess":
                continue
            train_config = default_config(backbone, epochs=config.retrain_epochs, patience=config.patience, seed=seed,
                                          progress=False, device=args.device)
            for method in ("es", "mr", "mde"):
                for density in densities:
                    t0 = time.perf_counter()
                    run = run_baseline(backbone, split, method, density, config.d_max, train_config, seed=seed)
                    mem = run.memory["total"]
                    runs.append(row(method, backbone, seed, density,
                                    {"test": run.result.test, "parameters": mem["parameters"],
                                     "compact_bytes": mem["compact"], "dense_bytes": mem["dense"]},
                                    time.perf_counter() - t0))
            print(f"{backbone} seed {seed}: baselines done", flush=True)
    summary = summarize(runs, args.backbones, densities)
    report(summary, timings, args.protocol, args.seeds)
    write_json({"machine": machine(), "device": args.device, "part": args.part, "protocol": args.protocol, "seeds": args.seeds, "quick": args.quick,
                "lambda": args.lam, "schedule": config_kw, "paper_ml1m_lightgcn_recall20": {str(k): v for k, v in PAPER.items()},
                "summary": summary, "runs": runs, "timings": timings,
                "total_seconds": time.perf_counter() - start}, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
