"""Why element-wise pruning breaks MF and NeuMF but not LightGCN: the dimensions a user and an item share.

Chapter 5. A dot product <e_u, e_i> on the stored rows keeps a term only where *both* rows keep that
dimension. Prefix widths (ES, MDE) line every row up from dimension 0, so a pair shares min(d_u, d_i)
dimensions; an element-wise mask (MagPrune, DNIS in place, PEP) keeps each row's own largest entries, and
two sparse rows rarely coincide. MF scores with that dot product, NeuMF's GMF branch too; LightGCN scores
with the *propagated* rows, each a mean over a neighbourhood, which fill the gaps.

For every backbone and seed: the full-width model trained to convergence (MagPrune's first step,
``train_dense``), its tables pruned by magnitude to 1 - c of the dense bytes (one global threshold, and one
per table), and over the test pairs (ml-100k, random 8:1:1): the mean number of dimensions the user's and
the item's stored rows share (``recsize.search.shared_dimensions``), the same for ES's prefix widths at
equal bytes, and for LightGCN the same for the propagated rows of the pruned model.

    python benchmarks/overlap.py                      # mf, neumf, lightgcn x 3 seeds (~15 min, one thread)
    python benchmarks/overlap.py --backbones neumf --seeds 0 --out /tmp/overlap.json

Writes benchmarks/out/overlap.json (atomically, after every (backbone, seed); an interrupted run resumes).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import machine

from recsize.data import prepare
from recsize.files import write_json
from recsize.search import (baseline_sizes, element_budget, magnitude_masks, masked_model, role_counts,
                            shared_dimensions, table_shapes, train_dense)
from recsize.search.prune import prefix_density_for_bytes
from recsize.train import default_config

OUT = Path(__file__).resolve().parent / "out" / "overlap.json"
SPARSITIES = (0.5, 0.8, 0.9, 0.95)


def one(backbone: str, seed: int, args) -> list[dict]:
    """Every (c, split rule) of one backbone and seed."""
    split = prepare("ml-100k", "random-811", seed=seed, verbose=False)
    config = default_config(backbone, epochs=args.epochs, patience=args.patience, seed=seed, progress=False)
    dense = train_dense(backbone, split, args.dim, config)
    tables = {r: t.table().detach() for r, t in dense.model.embedding_tables().items()}
    state = {k: v.detach().clone() for k, v in dense.model.state_dict().items()}
    shapes = table_shapes(backbone, split, args.dim)
    pairs = split.test.tocoo()
    users, items = torch.as_tensor(pairs.row, dtype=torch.long), torch.as_tensor(pairs.col, dtype=torch.long)
    counts = role_counts(split)
    rows = []
    for c in args.sparsities:
        density = round(1 - c, 6)
        fitted = prefix_density_for_bytes(shapes, density)
        es = None
        if fitted is not None:
            wu = baseline_sizes("es", counts["user"], args.dim, fitted)
            wi = baseline_sizes("es", counts["item"], args.dim, fitted)
            es = float(np.minimum(wu[pairs.row], wi[pairs.col]).mean())
        for rule in ("global", "per-table"):
            masks, _ = magnitude_masks(tables, element_budget(shapes, density, rule))
            row = {"backbone": backbone, "seed": seed, "sparsity": c, "split": rule,
                   "shared": shared_dimensions(masks["user"], masks["item"], users, items),
                   "es_shared": es, "es_density": fitted,
                   "kept": {r: float(m.float().mean()) for r, m in masks.items()}}
            if hasattr(dense.model, "propagate"):   # graph backbones score with the propagated rows
                model = masked_model(backbone, split, args.dim, masks, state, seed)
                with torch.no_grad():
                    final_u, final_i = model.propagate()
                row["propagated_shared"] = shared_dimensions(final_u != 0, final_i != 0, users, items)
            rows.append(row)
    print(f"{backbone} seed {seed}: dense best epoch {dense.best_epoch}, {dense.seconds:.0f} s", flush=True)
    return rows


def table(rows: list[dict]) -> list[str]:
    """Mean over seeds of the shared dimensions per test pair, per backbone, budget and rule."""
    lines = [f"{'backbone':9s} {'c':>4s} {'rule':9s} {'pruned rows':>11s} {'ES prefix':>9s} "
             f"{'propagated':>10s} {'seeds':>5s}"]
    keys = dict.fromkeys((r["backbone"], r["sparsity"], r["split"]) for r in rows)
    for b, c, rule in keys:
        mine = [r for r in rows if (r["backbone"], r["sparsity"], r["split"]) == (b, c, rule)]
        es = [r["es_shared"] for r in mine if r["es_shared"] is not None]
        prop = [r["propagated_shared"] for r in mine if "propagated_shared" in r]
        lines.append(f"{b:9s} {100 * c:3.0f}% {rule:9s} {np.mean([r['shared'] for r in mine]):11.2f} "
                     f"{np.mean(es) if es else float('nan'):9.2f} "
                     f"{np.mean(prop) if prop else float('nan'):10.2f} {len(mine):5d}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["mf", "neumf", "lightgcn"],
                   choices=["mf", "neumf", "lightgcn"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    settings = {"dataset": "ml-100k", "dim": args.dim, "epochs": args.epochs, "patience": args.patience,
                "sparsities": args.sparsities}
    rows, done = [], set()
    if args.out.exists():
        old = json.loads(args.out.read_text())
        if old.get("settings") == settings:
            rows = old["rows"]
            done = {(r["backbone"], r["seed"]) for r in rows}
        else:
            raise SystemExit(f"{args.out} holds a run with other settings: pass another --out")
    start = time.perf_counter()
    for backbone in args.backbones:
        for seed in args.seeds:
            if (backbone, seed) in done:
                continue
            rows += one(backbone, seed, args)
            write_json({"settings": settings, "machine": machine(), "rows": rows}, args.out)
    print("\n".join(table(rows)))
    print(f"shared dimensions per test pair (mean over seeds); {machine()}; "
          f"this run {(time.perf_counter() - start) / 60:.1f} min; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
