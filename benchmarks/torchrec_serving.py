"""Searched widths through TorchRec: quantised serving on ml-100k and sharding plans at scale (Appendix A).

* **Narrow or quantise?** MF on ml-100k (random 8:1:1, d_max = 64; seeds 0, 1, 2 by default, each its own
  split and initialisation; training capped at 300 epochs with early stopping) trained with full widths and with MDE
  widths at densities 0.5 / 0.25 / 0.1 (c = 50 / 75 / 90 %), exported to TorchRec bucket tables and
  served as float32, FP16 and INT8 (TorchRec's quantised collection; INT8 is row-wise with an FP16
  scale and bias per row, and TorchRec aligns every quantised row to 16 bytes). For each: the bytes the
  collection stores (tables) and the int64 id -> (bucket, row) index, and test Recall@20 / NDCG@20 of a
  full ranking through the served tables. Equal bytes pair up across rows: full width at FP16 against
  MDE 0.5 at float32, and so on.
* **Plans at scale.** A synthetic table of 10M and 100M rows with MDE widths at c = 90 % (d_max = 64;
  the bucket shares come from MDE on 1M Zipf-distributed rows, scaled), as bucket tables, next to the
  dense d_max table: TorchRec's planner on the meta device (nothing is allocated) for 8 and 64 GPUs
  (8 per host, TorchRec's default 32 GB each): every table's sharding and the weight bytes per rank.

    python benchmarks/torchrec_serving.py --quick                       # 2 epochs, one seed, 10M rows only
    python benchmarks/torchrec_serving.py --out benchmarks/out/torchrec_serving.json

Needs the torchrec extra (``pip install -e ".[torchrec]" && pip install --no-deps torchrec==1.8.0``).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common import machine
from embedding import zipf_frequencies
from recsize.budget import format_bytes
from recsize.files import write_json
from recsize.search import mde_sizes
from recsize.torchrec_export import bucket_widths, export_tables, require_torchrec, table_name

DTYPES = {"fp32": None, "fp16": torch.float16, "int8": torch.qint8}


def quantisation(epochs: int, densities, seed: int = 0) -> list[dict]:
    from recsize.data import prepare
    from recsize.evaluate import evaluate_topk
    from recsize.search.baselines import run_baseline
    from recsize.torchrec_lookup import BucketLookup, DotScorer, quantise, stored_bytes
    from recsize.train import default_config
    split = prepare("ml-100k", "random-811", seed=seed)
    rows = []
    for density in densities:
        method = "es" if density == 1.0 else "mde"
        start = time.perf_counter()
        run = run_baseline("mf", split, method, density, d_max=64, seed=seed,
                           config=default_config("mf", epochs=epochs, seed=seed, progress=False))
        lookup = BucketLookup(export_tables(run.model.embedding_tables()))
        index = sum(2 * 8 * len(lookup.get_buffer(f"{r}_bucket")) for r in lookup.tables_of)
        for name, dtype in DTYPES.items():
            served = lookup if dtype is None else quantise(lookup, dtype)
            test = evaluate_topk(DotScorer(served, split.n_items), split, "test", ks=(20,), device="cpu")
            rows.append({"seed": seed, "widths": "full" if method == "es" else f"MDE {density:g}", "density": density,
                         "dtype": name, "tables": stored_bytes(served) - index, "index": index,
                         "recall@20": test["recall@20"], "ndcg@20": test["ndcg@20"],
                         "recsize_compact": {k: run.test_compact[k] for k in ("recall@20", "ndcg@20")},
                         "best_epoch": run.result.best_epoch, "seconds": time.perf_counter() - start})
            print_quant_row(rows[-1], rows[0]["tables"])
    return rows


def print_quant_row(r: dict, full: int) -> None:
    if r is None:
        print(f"{'widths':10s}{'dtype':>6s}{'tables':>12s}{'x full':>8s}{'index':>11s}"
              f"{'Recall@20':>11s}{'NDCG@20':>9s}")
        return
    print(f"{r['widths']:10s}{r['dtype']:>6s}{format_bytes(r['tables']):>12s}{r['tables'] / full:>8.3f}"
          f"{format_bytes(r['index']):>11s}{r['recall@20']:>11.4f}{r['ndcg@20']:>9.4f}", flush=True)


def searched_buckets(rows: int, d_max: int = 64, density: float = 0.1, sample: int = 1_000_000) -> dict:
    """{bucket width: rows} for ``rows`` rows: MDE widths on ``sample`` Zipf rows, shares scaled up."""
    widths = bucket_widths(mde_sizes(zipf_frequencies(sample), d_max, density), d_max)
    counts = Counter(widths.tolist())
    scaled = {w: int(round(n * rows / sample)) for w, n in sorted(counts.items()) if w > 0}
    top = max(scaled)
    scaled[top] += rows - sum(scaled.values()) - round(counts.get(0, 0) * rows / sample)  # exact total
    return scaled


def plan_one(buckets: dict, ranks: int) -> dict:
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    from recsize.torchrec_shard import make_plan, rank_bytes
    configs = [EmbeddingBagConfig(name=table_name("item", w), embedding_dim=w, num_embeddings=n,
                                  feature_names=[table_name("item", w)]) for w, n in buckets.items()]
    ebc = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
    module = nn.ModuleDict({"collection": ebc})
    start = time.perf_counter()
    plan = make_plan(module, ranks, compute_device="cuda", sharding_types=None, local_world_size=8)
    per_rank = rank_bytes(plan, module, ranks)
    tables = {name: {"sharding": ps.sharding_type, "kernel": ps.compute_kernel, "ranks": len(ps.ranks or [])}
              for name, ps in plan.plan["collection"].items()}
    return {"ranks": ranks, "tables": tables, "rank_bytes": per_rank, "seconds": time.perf_counter() - start,
            "weight_bytes": sum(n * w * 4 for w, n in buckets.items())}


def planning(row_counts, rank_counts) -> list[dict]:
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    out = []
    for rows in row_counts:
        for what, buckets in (("dense d_max 64", {64: rows}), ("MDE c = 90 %", searched_buckets(rows))):
            for ranks in rank_counts:
                r = {"rows": rows, "table": what, "buckets": buckets, **plan_one(buckets, ranks)}
                out.append(r)
                print_plan(r)
    return out


def print_plan(r: dict) -> None:
    b = r["rank_bytes"]
    kinds = Counter(f"{t['sharding']}x{t['ranks']}" for t in r["tables"].values())
    print(f"{r['rows']:>12,} rows {r['table']:15s}{r['ranks']:>4d} ranks  {len(r['tables']):>2d} tables  "
          f"weights {format_bytes(r['weight_bytes']):>10s}  per rank max {format_bytes(max(b)):>10s} "
          f"min {format_bytes(min(b)):>10s}  ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})",
          flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 epochs, one seed, 10M rows only")
    p.add_argument("--epochs", type=int, default=300,
                   help="cap on MF's training epochs, early stopping on validation NDCG@20 (default 300)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split and init seeds (default 0 1 2)")
    p.add_argument("--part", choices=["quant", "plan", "both"], default="both")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    require_torchrec()
    torch.set_num_threads(1)
    result = {"machine": machine(), "epochs": 2 if args.quick else args.epochs,
              "seeds": args.seeds[:1] if args.quick else args.seeds}
    if args.part in ("quant", "both"):
        print(f"MF on ml-100k, d_max 64, {result['epochs']} epochs: bytes and test quality as served")
        print_quant_row(None, 0)
        result["quantisation"] = [row for seed in result["seeds"]
                                  for row in quantisation(result["epochs"], (1.0, 0.5, 0.25, 0.1), seed)]
    if args.part in ("plan", "both"):
        print("\nTorchRec's planner on the meta device (weights only; 8 GPUs per host, 32 GB each)")
        rows = (10_000_000,) if args.quick else (10_000_000, 100_000_000)
        result["planning"] = planning(rows, (8, 64))
    if args.out:
        write_json(result, args.out)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
