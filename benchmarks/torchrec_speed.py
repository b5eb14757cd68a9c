"""Lookup speed of searched widths through FBGEMM's table-batched kernels, against fair dense baselines.

Appendix A; the same tables as ``benchmarks/embedding.py`` (MDE widths on Zipf frequencies, batches of
4,096 Zipf-drawn ids, one thread, median of repeats of the process CPU time), at 10 % density of
d_max = 64:

* dense baselines of the full d_max table: ``nn.Embedding`` (its backward builds the gradient of the whole
  table), ``nn.Embedding(sparse=True)`` (a sparse gradient of the batch rows) and FBGEMM's fused kernel
  (``SplitTableBatchedEmbeddingBagsCodegen``, SGD applied inside the backward);
* recsize's ``CompactEmbedding`` (zero-padded d_max rows);
* the buckets through one FBGEMM table-batched kernel (one table per width, rounded up to 4, the fused
  SGD): building its input from the ids (bucket, row, offsets) is timed with it; "padded" assembles the
  d_max vectors (bit for bit the compact lookups), "unassembled" stops at the kernel's output, one
  pooled slice per bucket table, for a consumer that reads the kept values where they are;
* forward only, the buckets as served: ``BucketLookup`` over TorchRec's quantised collection with float32
  weights (FBGEMM's inference kernel, ``IntNBitTableBatchedEmbeddingBagsCodegen``), padded d_max rows.

Forward+backward includes what each form's backward does (the fused kernels also update the weights).

    python benchmarks/torchrec_speed.py --out benchmarks/out/torchrec_speed.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import machine
from embedding import median_seconds, zipf_frequencies
from recsize.embedding import CompactEmbedding
from recsize.files import write_json
from recsize.search import mde_sizes
from recsize.torchrec_export import export_tables, require_torchrec
from recsize.torchrec_lookup import BucketLookup, quantise


def fused_tables(shapes, lr: float = 0.01):
    """FBGEMM's CPU table-batched kernel for tables of ``shapes`` [(rows, width)], SGD in the backward."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (ComputeDevice, EmbeddingLocation,
                                                                         SplitTableBatchedEmbeddingBagsCodegen)
    specs = [(rows, width, EmbeddingLocation.HOST, ComputeDevice.CPU) for rows, width in shapes]
    return SplitTableBatchedEmbeddingBagsCodegen(specs, optimizer=EmbOptimType.EXACT_SGD, learning_rate=lr)


class FusedDense(torch.nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.tbe = fused_tables([tuple(weight.shape)])
        with torch.no_grad():
            self.tbe.split_embedding_weights()[0].copy_(weight)

    def forward(self, ids):
        return self.tbe(ids, torch.arange(len(ids) + 1))


class FusedBuckets(torch.nn.Module):
    """The bucket tables of one compact table in one FBGEMM kernel."""

    def __init__(self, compact: CompactEmbedding, assemble: bool = True):
        super().__init__()
        export = export_tables({"t": compact})
        names = export.tables_of["t"]
        self.widths = [export.weights[n].shape[1] for n in names]
        self.tbe = fused_tables([tuple(export.weights[n].shape) for n in names])
        with torch.no_grad():
            for w, n in zip(self.tbe.split_embedding_weights(), names):
                w.copy_(export.weights[n])
        self.bucket, self.row, self.d_max, self.assemble = export.bucket["t"], export.row["t"], compact.dim, assemble
        self.tables = torch.arange(len(names))[:, None]

    def forward(self, ids):
        bucket, row = self.bucket[ids], self.row[ids]
        order = torch.argsort(bucket, stable=True)
        lengths = (bucket[None, :] == self.tables).flatten()
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        pooled = self.tbe(row[order], offsets)  # (batch, sum of the bucket widths)
        if not self.assemble:
            return pooled
        out, start = pooled.new_zeros(len(ids), self.d_max), 0
        for w in self.widths:
            keep = min(w, self.d_max)
            out[:, :keep] += pooled[:, start:start + keep]
            start += w
        return out


def cpu_seconds(step, repeats: int, calls: int) -> float:
    """Median over ``repeats`` of the mean *process CPU time* of ``calls`` calls (after one warm-up): on
    one thread it is the lookup's own work, whatever else the shared machine runs (wall time is not)."""
    return median_seconds(step, repeats, calls, clock=time.process_time)


def speed(table, batches, repeats: int, backward: bool) -> float:
    """Rows per second through ``table``; with ``backward``, a backward pass of a fixed gradient."""
    grads = {}

    def step(c):
        ids = batches[c % len(batches)]
        if not backward:
            with torch.no_grad():
                table(ids)
            return
        out = table(ids)
        out.backward(grads.setdefault(out.shape, torch.randn(out.shape)))
        for p in getattr(table, "parameters", lambda: [])():
            p.grad = None

    return len(batches[0]) / cpu_seconds(step, repeats, len(batches))


def bench(num_rows: int, d_max: int, density: float, args) -> dict:
    freq = zipf_frequencies(num_rows)
    rng = np.random.default_rng(1)
    batches = [torch.from_numpy(rng.choice(num_rows, args.batch, p=freq / freq.sum())) for _ in range(args.calls)]
    torch.manual_seed(0)
    compact = CompactEmbedding(mde_sizes(freq, d_max, density, alpha=0.3), d_max)
    weight = torch.randn(num_rows, d_max) * 0.1
    forms = {"dense": torch.nn.Embedding.from_pretrained(weight, freeze=False),
             "dense sparse": torch.nn.Embedding.from_pretrained(weight, freeze=False, sparse=True),
             "dense fused": FusedDense(weight), "compact": compact,
             "buckets padded": FusedBuckets(compact), "buckets unassembled": FusedBuckets(compact, False)}
    served = quantise(BucketLookup(export_tables({"t": compact})), torch.float32)
    with torch.no_grad():
        assert torch.equal(forms["buckets padded"](batches[0]), compact(batches[0])), "bucket lookups differ"
        assert torch.equal(served({"t": batches[0]})["t"], compact(batches[0])), "served lookups differ"
    row = {"rows": num_rows, "d_max": d_max, "density": density, "buckets": len(forms["buckets padded"].widths)}
    for key, backward in (("fwd", False), ("fwd_bwd", True)):
        row[key] = {name: speed(t, batches, args.repeats, backward) for name, t in forms.items()}
        if not backward:
            row[key]["buckets served"] = speed(lambda ids: served({"t": ids}), batches, args.repeats, False)
        best = max(row[key][n] for n in ("dense", "dense sparse", "dense fused"))
        print(f"{num_rows:>9,} rows {key:8s}" + "".join(f"{n:>20s} {v / 1e6:6.2f}" for n, v in row[key].items())
              + f"   vs best dense: " + " ".join(f"{row[key][n] / best:.2f}x" for n in
                                                  ("compact", "buckets padded", "buckets unassembled")
                                                  if n in row[key]), flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small tables, few repeats")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    require_torchrec()
    torch.set_num_threads(1)
    if args.quick:
        args.repeats = 3
    print(f"lookup speed in M rows per CPU second, batch {args.batch}, median of {args.repeats} x {args.calls}; "
          f"{machine()}")
    rows = [bench(n, 64, 0.1, args) for n in ((2_625, 20_000) if args.quick else (2_625, 1_000_000))]
    if args.out:
        write_json({"machine": machine(), "batch": args.batch, "repeats": args.repeats, "calls": args.calls,
                    "rows": rows}, args.out)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
