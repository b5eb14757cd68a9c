"""CIESS against the budget-matched baselines ES, MR and MDE on ml-100k (Chapter 6).

Protocol: ml-100k, every rating a positive, random 8:1:1 split per user (``--protocol ciess-50-25-25`` for
the paper's per-user 50/25/25), full ranking, d_max = 64 (``--dim 128`` for the paper's), budgets c = 80 /
90 / 95 % (densities 0.2 / 0.1 / 0.05). CIESS runs the reduced schedule (6 episodes x 5 iterations x 3
epochs, l = 1) with recsize's defaults, which follow the authors' code (issue 16: one exploration noise
scalar per iteration after the critic's pick, the code's reward with lambda 0.01, states in [-1, 1], the
code's TD3 pace, band selection); every design point can be switched with a flag (--reward, --lam,
--exploration, --state, --pace, --selection, --training, --iteration-batches, --no-rescale) and
--label names the configuration in the output, so several can be merged. CIESS runs once
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
    python benchmarks/ciess.py --part ciess --no-ablation --exploration per-entity --reward paper \
        --pace recsize --state recsize --selection recsize --no-rescale --label recsize-v1 --out old.json
    python benchmarks/ciess.py --part ciess --training official --iteration-batches 200 --label official-200
    python benchmarks/ciess.py --part ciess --training official --iteration-batches 200 --reward paper \
        --lambda-per-budget --bracket 0.1 1.6 --bisect 0.8 --label paper-bisect --out bisect80.json
    python benchmarks/ciess.py --allocation benchmarks/out/ciess_lam_*.json --retrain-epochs 300 --patience 20 \
        --out benchmarks/out/ciess_allocation.json

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
from recsize.search.ciess import CIESS, SCHEDULES, CIESSConfig, lambda_per_budget
from recsize.search.compare import width_correlations
from recsize.train import default_config

OUT = Path(__file__).resolve().parent / "out" / "ciess.json"
SPARSITIES = (0.8, 0.9, 0.95)
# The paper's ML-1M LightGCN Recall@20 (CIESS, ES, MR) at c = 80 / 90 / 95 % (../shared/reference/methods.md).
PAPER = {0.8: (0.2436, 0.2248, 0.2004), 0.9: (0.2248, 0.2105, 0.1802), 0.95: (0.2009, 0.1752, 0.1634)}



def row(method, backbone, seed, density, best, seconds=None, split=None) -> dict:
    """One cell. For a CIESS mask (``best`` holds ``user_sizes`` / ``item_sizes``) also its widths, their
    coefficient of variation per side and their Spearman correlation with training frequency (issue 16,
    experiment 1: too few parameters, or a bad allocation?)."""
    out = {"method": method, "backbone": backbone, "seed": seed, "density": density, "sparsity": round(1 - density, 6),
           "recall@20": best["test"]["recall@20"], "ndcg@20": best["test"]["ndcg@20"],
           "parameters": best["parameters"], "compact_bytes": best["compact_bytes"],
           "dense_bytes": best["dense_bytes"], "projected": best.get("projected", False), "seconds": seconds,
           "search_density": best.get("density"), "search_valid_ndcg@20": best.get("search_valid_ndcg@20")}
    if "user_sizes" in best:
        sizes = {"user": np.asarray(best["user_sizes"]), "item": np.asarray(best["item_sizes"])}
        out["width_cv"] = {side: float(w.std() / w.mean()) if w.mean() > 0 else None for side, w in sizes.items()}
        if split is not None:
            out["spearman_popularity"] = width_correlations(sizes, split)["popularity"]
        out["sizes"] = {side: w.tolist() for side, w in sizes.items()}
    return out


def paper_estimate(result, config: CIESSConfig) -> dict:
    """Extrapolate the paper's schedule from measured times: per-iteration time scaled by epochs, retraining
    scaled by l (a lower bound: the reduced schedule also caps retraining at fewer epochs)."""
    paper = SCHEDULES["paper"]
    per_iteration = float(np.mean([h["seconds"] for h in result.history]))
    if config.training == "epochs":  # the paper schedule trains the authors' batches: a rough scale only
        per_iteration_paper = per_iteration / config.epochs_per_iteration * paper["epochs_per_iteration"]
    else:
        per_iteration_paper = per_iteration
    search = paper["episodes"] * paper["iterations"] * per_iteration_paper
    retrain = result.seconds["retrain"] * paper["top_l"] / config.top_l
    return {"seconds_per_iteration": per_iteration, "search": search, "retrain_lower_bound": retrain,
            "reference": result.seconds["reference"], "total": search + retrain + result.seconds["reference"]}


def summarize(runs: list, backbones, densities) -> list:
    """Mean and std over seeds per (backbone, budget, method)."""
    summary = []
    for backbone in backbones:
        for density in densities:
            methods = dict.fromkeys(r["method"] for r in runs if r["backbone"] == backbone)
            for method in methods:
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


def report(summary: list, timings: list, protocol: str, seeds, dim: int = 64) -> None:
    """Print the summary table and the wall times."""
    print(f"\nml-100k ({protocol}), d_max = {dim}, seeds {list(seeds)}, test split; mean (std over seeds)")
    print(f"{'backbone':9s}{'c':>6s} {'method':14s}{'Recall@20':>18s}{'NDCG@20':>18s}{'parameters':>11s}{'compact':>10s}")
    for s in summary:
        print(f"{s['backbone']:9s}{100 * s['sparsity']:5.0f}% {s['method']:14s}"
              f"{s['recall@20_mean']:>10.4f} ({s['recall@20_std']:.4f}){s['ndcg@20_mean']:>10.4f} ({s['ndcg@20_std']:.4f})"
              f"{s['parameters']:>11,}{s['compact_bytes'] / 1024:>8.1f}Ki" + ("  projected" if s["projected"] else ""))
    for t in timings:
        if "paper_schedule_estimate" not in t:
            print(f"{t['backbone']} {t['label']} seed {t['seed']}: {t['searches']} searches and the retraining "
                  f"{t['whole_seconds'] / 60:.1f} min")
            continue
        e = t["paper_schedule_estimate"]
        print(f"{t['backbone']} {t.get('label', 'ciess')} seed {t['seed']}: whole CIESS run {t['whole_seconds'] / 60:.1f} min; "
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
    for key in ("protocol", "quick", "dim"):
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
    report(summary, timings, parts[0]["protocol"], seeds, parts[0].get("dim", 64))
    write_json({**parts[0], "settings": {d.get("label", "ciess"): d.get("settings") for d in parts}, "machine": "; ".join(dict.fromkeys(d["machine"] for d in parts)),
                "device": ", ".join(dict.fromkeys(d.get("device", "cpu") for d in parts)), "part": "merged",
                "seeds": seeds, "summary": summary, "runs": runs, "timings": timings,
                "total_seconds": sum(d["total_seconds"] for d in parts),
                "merged_from": [Path(p).name for p in paths]}, out)
    print(f"written to {out}")
    return 0


def _file_settings(data: dict, label: str) -> dict:
    """The CIESSConfig settings a stored run used (merged files keep one per label)."""
    settings = data["settings"]
    return settings[label] if label in settings else settings


def allocation(paths, out: Path, device: str = "cpu", retrain_epochs: int | None = None,
               patience: int | None = None) -> int:
    """Issue 16, experiment 1: too few parameters or a bad allocation? For every CIESS mask of the stored
    runs in ``paths`` that the search found inside its budget (not projected), retrain (a) the mask as
    found, (b) equal widths at exactly the mask's parameter count and (c) the mask scaled to the budget
    keeping its proportions, all three with the CIESS retraining of the stored run (same seed), its epoch
    cap and patience unless ``retrain_epochs`` / ``patience`` replace them (say 300 / 20: converged). A
    projected mask already is (c), and ES at the budget is (b). Resumable: every finished cell is written
    at once to ``out``."""
    import json
    from recsize.search.baselines import round_to_total
    from recsize.search.ciess_env import project_to_budget
    stored = json.loads(out.read_text()) if out.exists() else {}
    for key, value in (("retrain_epochs", retrain_epochs), ("patience", patience)):
        if stored and stored.get(key) != value and value is not None:
            raise SystemExit(f"error: {out} was retrained with {key} {stored.get(key)}, not {value}: use another "
                             "--out, or the same settings to resume")
    done = stored.get("runs", [])
    have = {(r["source"], r["backbone"], r["seed"], r["density"], r["method"]) for r in done}
    todo = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: cannot read {path}: {e}")
        for r in data.get("runs", []):
            if "sizes" in r and not r["projected"]:
                todo.append((Path(path).name, data, r))
    if not todo:
        raise SystemExit("error: no CIESS mask inside its budget in these files (all projected, or no CIESS "
                         "rows): nothing to retrain")
    runs, start = list(done), time.perf_counter()
    for source, data, r in todo:
        settings = {k: v for k, v in _file_settings(data, r["method"]).items() if k not in ("resolved",)}
        protocol = {k: v for k, v in (("retrain_epochs", retrain_epochs), ("patience", patience)) if v is not None}
        config = CIESSConfig(**{**settings, **protocol, "seed": r["seed"], "progress": False, "device": device})
        split = prepare("ml-100k", data["protocol"], seed=r["seed"])
        search = CIESS(r["backbone"], split, config)
        u, i = np.asarray(r["sizes"]["user"]), np.asarray(r["sizes"]["item"])
        n, total = len(u) + len(i), int(u.sum() + i.sum())
        equal = round_to_total(np.full(n, total / n), total, config.d_max)
        scaled = project_to_budget(u, i, r["density"], config.d_max)
        for method, (wu, wi) in ((f"{r['method']}/as-found", (u, i)),
                                 (f"{r['method']}/es-at-mask", (equal[:len(u)], equal[len(u):])),
                                 (f"{r['method']}/scaled", scaled)):
            key = (source, r["backbone"], r["seed"], r["density"], method)
            if key in have:
                continue
            t0 = time.perf_counter()
            best = search.retrain(wu, wi)
            best = {**best, "user_sizes": np.asarray(wu).tolist(), "item_sizes": np.asarray(wi).tolist()}
            runs.append({**row(method, r["backbone"], r["seed"], r["density"], best, time.perf_counter() - t0, split),
                         "source": source, "mask_recall@20": r["recall@20"], "mask_parameters": r["parameters"],
                         "mask_width_cv": r.get("width_cv"), "best_epoch": best["best_epoch"]})
            have.add(key)
            write_json({"machine": machine(), "device": device, "sources": [Path(p).name for p in paths],
                        "retrain_epochs": config.retrain_epochs, "patience": config.patience,
                        "runs": runs, "total_seconds": time.perf_counter() - start}, out)
            print(f"{source} {r['backbone']} seed {r['seed']} c = {1 - r['density']:.0%} {method}: "
                  f"Recall@20 {best['test']['recall@20']:.4f} ({best['parameters']:,} parameters; the mask "
                  f"{r['recall@20']:.4f} with {r['parameters']:,})", flush=True)
    print(f"written to {out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["lightgcn", "neumf"], choices=["mf", "neumf", "ngcf", "lightgcn"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--protocol", default="random-811", choices=["random-811", "ciess-50-25-25"])
    p.add_argument("--dim", type=int, default=64, help="d_max (default 64; the paper's 128)")
    p.add_argument("--label", default="ciess",
                   help="name of this CIESS configuration in the output (default ciess; the ablation adds "
                        "-no-walk)")
    p.add_argument("--reward", default="code", choices=["code", "paper"], help="reward form (default code)")
    p.add_argument("--lam", type=float, default=None,
                   help="lambda (default 0.01 with --reward code, 0.4 with --reward paper)")
    p.add_argument("--exploration", default="official", choices=["official", "per-entity"])
    p.add_argument("--state", default="official", choices=["official", "recsize"])
    p.add_argument("--pace", default="official", choices=["official", "recsize"])
    p.add_argument("--selection", default="official", choices=["official", "ndcg", "recsize"])
    p.add_argument("--no-rescale", action="store_true", help="sigma, walk t, target noise as at d_max 128")
    p.add_argument("--training", default=None, choices=["official", "epochs"],
                   help="per-iteration training (default: the schedule's; reduced: epochs)")
    p.add_argument("--epochs-per-iteration", type=int, default=None)
    p.add_argument("--iteration-batches", type=int, default=None,
                   help="batches per iteration with --training official (default the authors' per backbone)")
    p.add_argument("--iteration-batch-size", type=int, default=None, help="users per batch (default 10000)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny schedule, seed 0, LightGCN")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="--allocation: the retraining's epoch cap (default: the stored run's)")
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
    p.add_argument("--lambda-per-budget", action="store_true",
                   help="experiment 3 of issue 16: bisect lambda per budget until the search settles in the "
                        "budget's band, then retrain that budget's masks (with --part ciess)")
    p.add_argument("--bracket", nargs=2, type=float, default=(0.05, 3.2), metavar=("LOW", "HIGH"),
                   help="--lambda-per-budget: the lambdas to bisect between (default 0.05 3.2)")
    p.add_argument("--steps", type=int, default=4, help="--lambda-per-budget: searches per budget at most")
    p.add_argument("--bisect", nargs="+", type=float, default=None, metavar="C",
                   help="--lambda-per-budget: only these sparsities (e.g. 0.8), say one per process")
    p.add_argument("--allocation", nargs="+", type=Path, metavar="JSON",
                   help="experiment 1 of issue 16: for every CIESS mask in these runs found inside its budget, "
                        "retrain equal widths at its parameter count and the mask scaled to the budget")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    if args.allocation:
        for name in ("retrain_epochs", "patience"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if args.out == OUT:
            p.error("--allocation writes its own file: give --out, e.g. benchmarks/out/ciess_allocation.json")
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        return allocation(args.allocation, args.out, args.device, args.retrain_epochs, args.patience)
    densities = tuple(round(1 - c, 6) for c in SPARSITIES)
    if args.lambda_per_budget:
        if args.part != "ciess":
            p.error("--lambda-per-budget runs CIESS only: add --part ciess (the baselines are in ciess.json)")
        if not 0 < args.bracket[0] < args.bracket[1]:
            p.error(f"--bracket must be two lambdas 0 < LOW < HIGH, got {' '.join(map(str, args.bracket))}")
        if args.steps < 1:
            p.error(f"--steps must be >= 1, got {args.steps}")
        bad = [c for c in args.bisect or () if round(1 - c, 6) not in densities]
        if bad:
            p.error(f"--bisect takes sparsities among {', '.join(map(str, SPARSITIES))}, got {bad}")
        args.no_ablation = True
    if args.quick:
        args.seeds, args.backbones = args.seeds[:1], args.backbones[:1]
        config_kw = dict(episodes=1, iterations=2, training="epochs", epochs_per_iteration=1, top_l=1,
                         full_epochs=2, retrain_epochs=2, patience=1, hidden=32)
    else:
        config_kw = dict(SCHEDULES[args.schedule])
    if args.patience is not None:
        if args.patience < 1:
            p.error(f"--patience must be >= 1, got {args.patience}")
        config_kw["patience"] = args.patience
    settings = {"reward": args.reward, "lam": args.lam, "exploration": args.exploration, "state": args.state,
                "pace": args.pace, "selection": args.selection, "rescale": not args.no_rescale, "d_max": args.dim}
    for key in ("training", "epochs_per_iteration", "iteration_batches", "iteration_batch_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    config_kw.update(settings)
    try:
        CIESSConfig(**config_kw)  # bad settings: one line now, not after the first model trained
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    runs, timings = [], []
    start = time.perf_counter()
    for backbone in args.backbones:
        for seed in args.seeds:
            split = prepare("ml-100k", args.protocol, seed=seed)
            config = CIESSConfig(**{**config_kw, "budgets": densities, "seed": seed, "progress": False,
                                     "device": args.device})
            if args.lambda_per_budget:
                t0 = time.perf_counter()
                which = None if args.bisect is None else tuple(round(1 - c, 6) for c in args.bisect)
                found = lambda_per_budget(backbone, split, config, tuple(args.bracket), args.steps, which)
                for b, got in found.items():
                    runs.append({**row(args.label, backbone, seed, b, got["budget"]["best"],
                                       time.perf_counter() - t0, split),
                                 "lambda": got["lam"], "in_band": got["in_band"], "band": got["band"],
                                 "trace": got["trace"]})
                    print(f"{backbone} seed {seed} c = {1 - b:.0%}: lambda {got['lam']:.3g} "
                          f"({'in' if got['in_band'] else 'not in'} the band; settled "
                          + ", ".join(f"{t['lam']:.3g} -> {t['settled_density']:.3f}" for t in got["trace"])
                          + f"), Recall@20 {got['budget']['best']['test']['recall@20']:.4f}", flush=True)
                timings.append({"backbone": backbone, "seed": seed, "label": args.label,
                                "whole_seconds": time.perf_counter() - t0,
                                "searches": sum(len(g["trace"]) for g in found.values())})
                continue
            if args.part in ("all", "ciess"):
                t0 = time.perf_counter()
                search = CIESS(backbone, split, config)
                result = search.run()
                whole = time.perf_counter() - t0
                timings.append({"backbone": backbone, "seed": seed, "label": args.label, "whole_seconds": whole,
                                **result.seconds, "paper_schedule_estimate": paper_estimate(result, config),
                                "search_density_first_last": [result.history[0]["density"], result.history[-1]["density"]],
                                "search_density": [h["density"] for h in result.history],
                                "search_valid_ndcg@20": [h["valid_ndcg@20"] for h in result.history]})
                for b in result.budgets.values():
                    runs.append(row(args.label, backbone, seed, b["density"], b["best"], whole, split))
                print(f"{backbone} seed {seed}: CIESS {whole:.0f} s "
                      f"(reference {result.seconds['reference']:.0f}, search {result.seconds['search']:.0f}, "
                      f"retrain {result.seconds['retrain']:.0f})", flush=True)
                if not args.no_ablation:
                    t0 = time.perf_counter()
                    ablation = CIESS(backbone, split, CIESSConfig(**{**config.to_dict(), "random_walk": False,
                                                                     "budgets": densities}),
                                     reference=search.state["reference"]).run()
                    for b in ablation.budgets.values():
                        runs.append(row(f"{args.label}-no-walk", backbone, seed, b["density"], b["best"],
                                        time.perf_counter() - t0, split))
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
    report(summary, timings, args.protocol, args.seeds, args.dim)
    write_json({"machine": machine(), "device": args.device, "part": args.part, "protocol": args.protocol, "seeds": args.seeds, "quick": args.quick,
                "dim": args.dim, "label": args.label, "settings": CIESSConfig(**config_kw).to_dict(),
                "lambda": CIESSConfig(**config_kw).lam, "schedule": config_kw, "paper_ml1m_lightgcn_recall20": {str(k): v for k, v in PAPER.items()},
                "summary": summary, "runs": runs, "timings": timings,
                "total_seconds": time.perf_counter() - start}, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
