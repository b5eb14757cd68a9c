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

The grids the book quotes (Chapter 8) are declared in ``recsize/experiments/declare.py`` and stored in
``evidence/NAME.jsonl``, which the README tables, the chapters and the tests read. By default this script
adds the cells missing from the store of the experiment its flags name (``--experiment NAME``, or the one
whose settings the flags give; ``--seeds``, ``--sparsities``, ``--methods`` narrow the run):

    python benchmarks/prune.py --experiment prune_lightgcn20 --seeds 0 --jobs 1
    python benchmarks/prune.py --backbone neumf --seeds 2 --methods es-bytes magprune   # prune_neumf

Every training uses the backbone's trainer settings, the same epoch cap (``--epochs``) and patience
(``--patience``, default 10). Reported per cell: test Recall@20 / NDCG@20 with the stored (CSR or compact)
tables, bytes (CSR, its VLDB'24 int32 accounting, compact for ES), kept entries, best epoch, wall times.
Resumable: the store (or ``--out``) is written atomically after every cell; stored cells are skipped. One thread.

    python benchmarks/prune.py --quick --out /tmp/prune.json # ad hoc, any flags: smoke run, 2 epochs, c = 90 %

The package computes the cells (``recsize/experiments/cells.py``): ``recsize.experiments.runner.run`` on the
declared experiment, or on an ``Experiment`` of the flags with ``--out`` as its store; ``--jobs N``: N seeds at once.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from common import machine

from recsize.data import prepare
from recsize.experiments import EXPERIMENTS, Cell, Experiment, get, store
from recsize.experiments.cells import pep_config
from recsize.experiments.declare import METHODS, SPARSITIES, differing_settings, run_setting
from recsize.experiments.runner import plan, run
from recsize.files import write_json
from recsize.search.ciess import run_ciess
from recsize.search.compare import LABELS, LOWER_IS_BETTER, METRICS, _task, applicable_methods

# the settings (flags) that make an experiment (Experiment.from_settings), in the order of its output's
# settings, after the dataset (ml-100k-ctr for the CTR backbones)
KEYS = ("backbone", "seeds", "sparsities", "methods", "dim", "epochs", "patience", "prune_split", "pep_epochs",
        "pep_init", "pep_scale", "pep_granularity", "quick", "ciess_episodes", "ciess_iterations",
        "ciess_iteration_batches", "ciess_top_l", "ciess_reward", "ciess_lam", "ihas_charge", "ihas_clusters",
        "ihas_search_epochs", "ihas_layout", "ihas_cluster_init")


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


def declared(settings: dict, given: set, name: str | None) -> Experiment:
    """The declared experiment ``name``, or the one whose settings the flags give and which declares the cells
    asked for; a flag given (``given``) that contradicts it raises ValueError naming the fix."""
    asked = {k: settings[k] for k in ("methods", "sparsities", "seeds") if k in given}
    fits = [get(name)] if name else [e for e in EXPERIMENTS.values() if not differing_settings(
        settings, e.settings(), set(asked.get("methods", e.methods)) & set(e.methods))
        and all(set(v) <= set(getattr(e, k)) for k, v in asked.items())]
    if len(fits) != 1:
        raise ValueError(f"the flags name {'no' if not fits else 'more than one'} declared experiment "
                         f"({', '.join(e.name for e in fits) or 'recsize/experiments/declare.py'}): name one with "
                         "--experiment NAME, or write an ad-hoc JSON with --out FILE")
    differ = [k for k in differing_settings(settings, fits[0].settings(), fits[0].methods) if k in given]
    if differ:
        raise ValueError(f"{fits[0].name} declares other settings than --{' --'.join(differ).replace('_', '-')}: "
                         "drop those flags, or write an ad-hoc JSON with --out FILE")
    return fits[0]


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
    p.add_argument("--jobs", type=int, default=1, help="seeds computed at once, in parallel processes (default 1)")
    p.add_argument("--experiment", help="the declared experiment to compute (default: the one the flags name)")
    p.add_argument("--evidence", type=Path, default=None, help="the evidence folder (default: evidence/)")
    p.add_argument("--out", type=Path, default=None, help="an ad-hoc JSON file instead of the evidence store")
    args = p.parse_args(argv)
    flags = [a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv)]
    given = {a.dest for a in p._actions if set(a.option_strings) & set(flags)}
    torch.set_num_threads(1)
    if args.quick:
        args.seeds, args.sparsities = args.seeds[:1], [0.9]
        args.epochs, args.patience, args.pep_epochs = 2, 1, 2
        args.ciess_episodes, args.ciess_iterations, args.ciess_iteration_batches, args.ciess_top_l = 1, 2, 2, 1
        args.ihas_search_epochs = 1
    if args.ciess_lam is not None and not args.ciess_lam >= 0:
        p.error(f"--ciess-lam must be >= 0, got {args.ciess_lam}")
    if args.stacked and args.backbone != "lightgcn":
        p.error(f"--stacked trains LightGCN models only (its propagation is linear), not {args.backbone}: drop "
                "--stacked")
    for method in [m for m in ("ciess", "ihas") if m in args.methods and m not in applicable_methods(args.backbone)]:
        if args.out is not None or "methods" in given:
            print(f"{method}: skipped, it applies to {'top-k' if method == 'ciess' else 'CTR'} backbones only, not "
                  f"{args.backbone}", flush=True)
        args.methods = [m for m in args.methods if m != method]
    settings = {"dataset": "ml-100k-ctr" if _task(args.backbone) == "ctr" else args.dataset,
                **{k: getattr(args, k) for k in KEYS}}
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    hooks = {"prepare": prepare, "run_ciess": run_ciess}   # this module's, so that tests can replace them
    start_all = time.perf_counter()
    if args.out is None:   # the evidence store of the declared experiment the flags name
        narrow = [getattr(args, k) if k in given else None for k in ("seeds", "methods", "sparsities")]
        try:
            experiment = declared(settings, given, args.experiment)
            plan(experiment, [], *narrow)          # refuses seeds, methods, budgets it does not declare
        except ValueError as e:
            p.error(str(e))
        run(experiment, *narrow, device=args.device, jobs=args.jobs, store=args.evidence, stacked=args.stacked,
            hooks=hooks)
        runs = [c.to_prune_run() for c in store.read(experiment, args.evidence)]
        settings = experiment.settings()
        args.backbone, args.dim, args.prune_split = experiment.backbone, experiment.d_max, experiment.prune_split
        args.seeds, args.sparsities = narrow[0] or experiment.seeds, narrow[2] or experiment.sparsities
    else:                  # an ad-hoc JSON: an experiment of the flags, the --out file as its store
        runs = load(args.out, settings)
        try:
            experiment = Experiment.from_settings(args.out.stem, settings) if args.methods else None
        except ValueError as e:
            p.error(str(e))

        def save(partial: bool = True):
            write_json({"settings": settings, "machine": machine(), "device": args.device,
                        "pep_config": asdict(pep_config(experiment)) if experiment else None, "runs": runs,
                        "partial": partial}, args.out)

        class OutFile:
            """The --out file as the runner's store: its cells, and one more saved at once."""
            def read(self, _):
                return [Cell.from_prune_run(r, settings, experiment) for r in runs]

            def add(self, _, cell):
                runs.append(cell.to_prune_run())
                save()

        if experiment is not None:
            run(experiment, device=args.device, jobs=args.jobs, store=OutFile(), stacked=args.stacked, hooks=hooks)
    wall = time.perf_counter() - start_all
    metrics = METRICS[_task(args.backbone)]
    rows = summarise([r for r in runs if r["seed"] in args.seeds and r["sparsity"] in args.sparsities], metrics)
    print(f"\n{args.backbone} on {settings['dataset']}, d_max = {args.dim}: MagPrune ({args.prune_split}) and PEP at 1 - c of the "
          f"dense bytes (CSR), ES at 1 - c of the parameters and es-bytes at 1 - c of the dense bytes (compact); "
          f"test split, mean ± std over seeds {list(args.seeds)} (* best {metrics[-1]} per c); {machine()}; this run "
          f"{wall / 60:.1f} min")
    print(table(rows))
    if args.out is None:
        print(f"experiment {experiment.name}: stored in {store.path_of(experiment, args.evidence)}")
        return 0
    save(partial=False)
    data = json.loads(args.out.read_text())
    data["summary"] = rows
    write_json(data, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
