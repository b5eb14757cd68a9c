"""Where a grid cell's time goes: imports, sampling, forward, backward, optimizer, evaluation (issue 14, Chapter 8).

Issue 14 asks to measure before speeding anything up. This script profiles what one cell of the converged
grids does (``benchmarks/prune.py``, ES at equal bytes, c = 90 %, seed 0: ``run_baseline`` trains the
width-masked model, compacts it and tests it) for each backbone of the grids, three ways:

* ``python -X importtime``: what ``import recsize.search`` costs, by top-level package (paid once per
  process; the grid runs one process per (grid, seed));
* cProfile over ``--epochs`` epochs of the cell (early stopping off): the share of each stage of the
  training loop (:func:`recsize.train.train`): batches (BPR sampling, or slicing the CTR rows), the
  forward pass (for LightGCN split into the propagation and the loss after it), the backward pass (for
  LightGCN with the sparse product's own backward), the optimizer, validation (full ranking or AUC), the
  best-weights copy; the compaction and test after training; the rest. cProfile slows Python-heavy code
  more than the kernels, so the wall time without it is printed next to it;
* torch.profiler over one epoch: the operators with the largest self CPU time and their share.

    python benchmarks/where_time_goes.py                      # LightGCN, NeuMF, DeepFM, 5 epochs each
    python benchmarks/where_time_goes.py --backbones lightgcn --epochs 3

Writes benchmarks/out/where_time_goes.json (atomically). One thread.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import machine

from recsize.data import prepare
from recsize.files import write_json
from recsize.search import run_baseline, table_shapes
from recsize.search.compare import _task
from recsize.search.prune import prefix_density_for_bytes
from recsize.train import default_config

OUT = Path(__file__).resolve().parent / "out" / "where_time_goes.json"
BACKBONES = ("lightgcn", "neumf", "deepfm")
SPARSITY = 0.9
# stage -> the functions (file name ending, function name) whose cumulative time it is; a stage listed
# under another ("within") is a part of that one and is subtracted from it
STAGES = {
    "batches": [("sampler.py", "epoch"), ("train.py", "<genexpr>")],
    "forward: propagation": [("backbones.py", "propagate")],
    "forward: loss": [("backbones.py", "loss")],
    "backward": [("_tensor.py", "backward")],
    "backward: sparse product": [("backbones.py", "backward")],
    "optimizer step": [("adam.py", "step")],
    "zero_grad": [("optimizer.py", "zero_grad")],
    "validation": [("evaluate.py", "evaluate_topk"), ("evaluate.py", "evaluate_ctr")],
    "best-weights copy": [("copy.py", "deepcopy")],
}
WITHIN = {"forward: propagation": "forward: loss", "backward: sparse product": "backward"}


def import_times(module: str = "recsize.search") -> dict:
    """``python -X importtime -c 'import MODULE'`` in a fresh process: the total, and every module's own
    (self) import time summed by its top-level package (torch, numpy, ...), largest first."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                          text=True, check=True)
    own = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| \s*(\S+)", line)
        if m:
            root = m.group(3).split(".")[0]
            own[root] = own.get(root, 0.0) + int(m.group(1)) / 1e6
    ranked = dict(sorted(own.items(), key=lambda kv: -kv[1]))
    return {"module": module, "total": sum(ranked.values()), "packages": ranked}


def _cumulative(stats: pstats.Stats, where: list[tuple[str, str]]) -> float:
    return sum(v[3] for (file, _, name), v in stats.stats.items()
               if any(file.endswith(f) and name == n for f, n in where))


def stage_shares(stats: pstats.Stats, total: float, train_total: float) -> dict:
    """Seconds per stage of a profiled cell (parts listed in :data:`WITHIN` taken out of their whole), the
    compaction and test after training, and the rest."""
    raw = {stage: _cumulative(stats, where) for stage, where in STAGES.items()}
    out = dict(raw)
    for part, whole in WITHIN.items():
        out[whole] = raw[whole] - raw[part]
    out["compaction and test"] = total - train_total
    out["other"] = total - sum(out.values())    # cProfile's clock against the wall clock: may be < 0
    return out


def one_cell(backbone: str, epochs: int, seed: int = 0) -> dict:
    """Profile one ES-at-equal-bytes cell of ``backbone`` (c = 90 %) for ``epochs`` epochs."""
    data = "ml-100k-ctr" if _task(backbone) == "ctr" else "ml-100k"
    split = prepare(data, "random-811", seed=seed, verbose=False)
    density = prefix_density_for_bytes(table_shapes(backbone, split, 64), round(1 - SPARSITY, 6))
    config = default_config(backbone, epochs=epochs, patience=epochs, seed=seed, progress=False)

    def cell():
        return run_baseline(backbone, split, "es", density, 64, config, seed=seed)

    run_baseline(backbone, split, "es", density, 64,   # warm-up: first-call costs out of the timings
                 default_config(backbone, epochs=1, seed=seed, progress=False), seed=seed)
    begin = time.perf_counter()
    cell()                                        # unprofiled: the wall time to compare with
    plain = time.perf_counter() - begin
    profiler = cProfile.Profile()
    begin = time.perf_counter()
    profiler.enable()
    run = cell()
    profiler.disable()
    total = time.perf_counter() - begin
    stats = pstats.Stats(profiler)
    train_total = _cumulative(stats, [("train.py", "train")])
    stages = stage_shares(stats, total, train_total)
    config1 = default_config(backbone, epochs=1, patience=1, seed=seed, progress=False, test=False)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run_baseline(backbone, split, "es", density, 64, config1, seed=seed)
    events = prof.key_averages()
    self_total = sum(e.self_cpu_time_total for e in events) / 1e6
    ops = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    return {"backbone": backbone, "data": data, "density": density, "epochs": len(run.result.history),
            "seconds_plain": plain, "seconds_profiled": total, "stages": stages,
            "ops_one_epoch": [{"op": e.key, "seconds": e.self_cpu_time_total / 1e6, "calls": e.count,
                               "share": e.self_cpu_time_total / 1e6 / self_total} for e in ops],
            "ops_self_total": self_total}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--epochs", type=int, default=5, help="epochs of each profiled cell (default 5)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    torch.set_num_threads(1)
    imports = import_times()
    print(f"import recsize.search: {imports['total']:.2f} s in a fresh process; largest: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in list(imports["packages"].items())[:5]), flush=True)
    cells = []
    for backbone in args.backbones:
        c = one_cell(backbone, args.epochs)
        cells.append(c)
        print(f"\n{backbone} on {c['data']}, ES at equal bytes (c = {SPARSITY:.0%}), {c['epochs']} epochs: "
              f"{c['seconds_plain']:.1f} s ({c['seconds_profiled']:.1f} s under cProfile)")
        for stage, s in c["stages"].items():
            print(f"  {stage:26s}{s:8.2f} s {100 * s / c['seconds_profiled']:5.1f} %")
        print(f"  largest operators, one epoch (torch.profiler, self CPU time {c['ops_self_total']:.2f} s):")
        for op in c["ops_one_epoch"]:
            print(f"    {op['op'][:40]:40s}{op['seconds']:7.2f} s {100 * op['share']:5.1f} % ({op['calls']} calls)")
    write_json({"machine": machine(), "epochs": args.epochs, "sparsity": SPARSITY, "imports": imports,
                "cells": cells}, args.out)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
