"""Variable-size embedding storage: bytes of every form and lookup speed against fair dense baselines
(Chapter 4, Appendix A).

For an ml-100k-sized table (943 users + 1682 items = 2,625 rows) and a 1M-row table, at densities
5 / 10 / 20 % of d_max = 64 and 128, with widths from the MDE rule (alpha 0.3) on Zipf frequencies:

* bytes of the dense table, the masked table (dense + sizes) and the compact table (values + offsets +
  d_max floats of padding), and the compact bytes against the ideal sum(d_n) * 4 + (n + 1) * 8
  (goal: within 1 %);
* lookup speed in rows per second of *process CPU time* (on one thread that is the lookup's own work,
  whatever else a shared machine runs; wall time is not), batches of 4,096 random ids drawn with the
  Zipf frequencies (like real traffic), median over repeats, forward only (no autograd) and
  forward + backward (what each form's backward does; the fused kernels also update the weights), of:

  - three dense baselines of the full d_max table: ``nn.Embedding`` (its backward builds the gradient of
    the whole table), ``nn.Embedding(sparse=True)`` (a sparse gradient of the batch rows) and, where
    FBGEMM is installed, its fused CPU kernel (``SplitTableBatchedEmbeddingBagsCodegen``, SGD applied
    inside the backward). The compact table is compared with the best of them;
  - the masked table and the compact table (zero-padded d_max rows), the latter through the native
    one-pass loop and through the PyTorch path ("torch");
  - where TorchRec / FBGEMM are installed, the width buckets through one FBGEMM table-batched kernel (one
    table per width, rounded up to 4, the fused SGD; building its input from the ids is timed with it):
    "padded" assembles the d_max vectors (bit for bit the compact lookups), "unassembled" stops at the
    kernel's output, one pooled slice per bucket table, for a consumer that reads the kept values where
    they are (no zero padding); and, forward only, the buckets as served: ``BucketLookup`` over TorchRec's
    quantised collection with float32 weights (FBGEMM's inference kernel), padded d_max rows;
* the element-wise form (``CSREmbedding``) at the same kept total, its mask from global magnitude
  pruning of the dense table: its bytes (values, uint8 column indices, offsets) and lookup speed;
* the compact table row-wise quantised to int8 and int4 (``QuantizedCompactEmbedding``, Chapter 8: codes,
  a float16 scale and bias per row, the offsets): its bytes and, forward only (a serving form), its speed.

Without TorchRec / FBGEMM the FBGEMM columns are skipped (one line says so).

    python benchmarks/embedding.py --quick          # small tables, a smoke run (seconds)
    python benchmarks/embedding.py --out benchmarks/out/embedding.json   # also writes embedding.txt

Runs on one thread by default (``--threads``) so that figures do not depend on what else the machine
is doing on its other cores.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import machine
from recsize import native
from recsize.budget import csr_bytes, format_bytes, masked_bytes
from recsize.files import write_json
from recsize.embedding import CompactEmbedding, CSREmbedding, MaskedEmbedding
from recsize.quantize import QuantizedCompactEmbedding, quantized_compact_bytes
from recsize.search import mde_sizes
from recsize.torchrec_export import TorchRecMissing, export_tables, require_torchrec
from recsize.torchrec_lookup import BucketLookup, quantise

DENSE = ("dense", "dense_sparse", "dense_fused")           # the dense baselines of the full d_max table
BUCKETS = ("buckets_padded", "buckets_unassembled", "buckets_served")   # through FBGEMM (served: forward only)
QUANTISED = ("qcompact8", "qcompact4")   # the compact table row-wise quantised (forward only: a serving form)
PER_DENSITY = ("compact", "compact_torch", "csr") + BUCKETS + QUANTISED
INFERENCE_ONLY = ("buckets_served",) + QUANTISED


def steady_allocator() -> bool:
    """Keep large blocks on glibc's heap (no mmap threshold below 256 MiB, no trimming), as in a
    long-running server, so that no form pays a fresh mmap and its page faults on every lookup: glibc's
    default threshold moves with the process's history, and a 2 MB dense output mapped afresh each call
    ran at a quarter of its speed here. True where glibc's ``mallopt`` took the settings."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 256 << 20) and libc.mallopt(-1, 512 << 20))  # M_MMAP_ / M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def zipf_frequencies(num_rows: int, seed: int = 0, exponent: float = 1.0) -> np.ndarray:
    """Expected frequency of every row under a Zipf law, ranks shuffled over the ids."""
    freq = 1.0 / np.arange(1, num_rows + 1) ** exponent
    return freq[np.random.default_rng(seed).permutation(num_rows)]


def median_seconds(step, repeats: int, calls: int, clock=time.perf_counter) -> float:
    """Median over ``repeats`` of the mean time of ``calls`` consecutive calls (after one warm-up), read
    from ``clock`` (wall time by default; ``time.process_time`` counts the process's own CPU time)."""
    step(0)
    times = []
    for _ in range(repeats):
        start = clock()
        for c in range(calls):
            step(c)
        times.append((clock() - start) / calls)
    return statistics.median(times)


def throughput(table, batches, repeats: int, backward: bool) -> float:
    """Rows per second of process CPU time looked up by ``table`` (a module or a function of the ids), one
    call per batch; with ``backward``, then a backward pass of a fixed gradient."""
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

    return len(batches[0]) / median_seconds(step, repeats, len(batches), clock=time.process_time)


def magnitude_mask(weight: torch.Tensor, kept: int) -> torch.Tensor:
    """The element mask keeping the ``kept`` entries of largest magnitude (global magnitude pruning)."""
    keep = torch.zeros(weight.numel(), dtype=torch.bool)
    keep[weight.detach().abs().flatten().topk(kept).indices] = True
    return keep.view_as(weight)


def fbgemm_problem() -> str | None:
    """Why the FBGEMM columns cannot be measured here (TorchRec or FBGEMM missing), or None."""
    try:
        require_torchrec()
    except TorchRecMissing as e:
        return str(e)
    return None


def fused_tables(shapes, lr: float = 0.01):
    """FBGEMM's CPU table-batched kernel for tables of ``shapes`` [(rows, width)], SGD in the backward."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (ComputeDevice, EmbeddingLocation,
                                                                         SplitTableBatchedEmbeddingBagsCodegen)
    specs = [(rows, width, EmbeddingLocation.HOST, ComputeDevice.CPU) for rows, width in shapes]
    return SplitTableBatchedEmbeddingBagsCodegen(specs, optimizer=EmbOptimType.EXACT_SGD, learning_rate=lr)


class FusedDense(torch.nn.Module):
    """A dense table in FBGEMM's fused kernel (one id per bag)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.tbe = fused_tables([tuple(weight.shape)])
        with torch.no_grad():
            self.tbe.split_embedding_weights()[0].copy_(weight)

    def forward(self, ids):
        return self.tbe(ids, torch.arange(len(ids) + 1))


class FusedBuckets(torch.nn.Module):
    """The bucket tables of one compact table in one FBGEMM kernel; ``assemble``: the padded d_max rows,
    else the kernel's pooled output (one slice per bucket table, zero outside an id's own bucket)."""

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


def bucket_forms(compact: CompactEmbedding, ids: torch.Tensor) -> dict:
    """The FBGEMM bucket forms of ``compact`` (checked against its lookups on ``ids``)."""
    forms = {"buckets_padded": FusedBuckets(compact), "buckets_unassembled": FusedBuckets(compact, False)}
    served = quantise(BucketLookup(export_tables({"t": compact})), torch.float32)
    forms["buckets_served"] = lambda batch: served({"t": batch})["t"]
    with torch.no_grad():
        assert torch.equal(forms["buckets_padded"](ids), compact(ids)), "bucket lookups differ"
        assert torch.equal(forms["buckets_served"](ids), compact(ids)), "served lookups differ"
    return forms


def bench_case(num_rows: int, d_max: int, densities, args, say) -> list[dict]:
    """Bytes and speed of every form of one table shape at every density."""
    freq = zipf_frequencies(num_rows)
    rng = np.random.default_rng(1)
    batches = [torch.from_numpy(rng.choice(num_rows, args.batch, p=freq / freq.sum())) for _ in range(args.calls)]
    torch.manual_seed(0)
    masked = MaskedEmbedding(num_rows, d_max)
    weight = masked.weight.detach().clone()
    # the dense baselines and the masked table cost the same at every density: their forward+backward (slow
    # at 1M rows with a dense gradient) is timed once per table shape; their forward, cheap, again beside
    # every density's forms, so that each forward ratio compares figures taken seconds apart
    shape_forms = {"dense": torch.nn.Embedding.from_pretrained(weight, freeze=False),
                   "dense_sparse": torch.nn.Embedding.from_pretrained(weight, freeze=False, sparse=True),
                   "masked": masked}
    if args.fbgemm:
        shape_forms["dense_fused"] = FusedDense(weight)
    speed = {f"fwd_bwd_{name}": throughput(table, batches, args.repeats, True) for name, table in shape_forms.items()}
    rows = []
    for density in densities:
        sizes = mde_sizes(freq, d_max, density, alpha=0.3)
        masked.set_sizes(sizes)
        compact = CompactEmbedding.from_masked(masked)
        keep = magnitude_mask(masked.weight, int(sizes.sum()))
        csr = CSREmbedding.from_dense(masked.weight, keep)
        with torch.no_grad():
            assert torch.equal(compact(batches[0]), masked(batches[0])), "compact and masked lookups differ"
            assert torch.equal(csr(batches[0]), (masked.weight * keep)[batches[0]]), "CSR lookups differ"
        assert csr.num_bytes() == csr_bytes(keep.sum(1), d_max)
        assert masked.num_bytes() == masked_bytes(num_rows, d_max)
        quantised = {f"qcompact{b}": QuantizedCompactEmbedding.from_compact(compact, b) for b in (8, 4)}
        for name, table in quantised.items():
            assert table.num_bytes() == quantized_compact_bytes(sizes, d_max, table.bits)
        ideal = int(sizes.sum()) * 4 + (num_rows + 1) * 8
        dense_bytes = weight.numel() * weight.element_size()
        row = {"rows": num_rows, "d_max": d_max, "density": density, "mean_width": float(sizes.mean()),
               "dense_bytes": dense_bytes, "masked_bytes": masked.num_bytes(), "compact_bytes": compact.num_bytes(),
               "ideal_bytes": ideal, "overhead": compact.num_bytes() / ideal - 1,
               "compact_vs_dense": compact.num_bytes() / dense_bytes, "csr_bytes": csr.num_bytes(),
               **{f"{name}_bytes": table.num_bytes() for name, table in quantised.items()}, **speed}
        forms = {"compact": compact, "csr": csr, **quantised}
        for name, table in shape_forms.items():
            row[f"fwd_{name}"] = throughput(table, batches, args.repeats, False)
        if args.fbgemm:
            forms.update(bucket_forms(compact, batches[0]))
            row["buckets"] = len(forms["buckets_padded"].widths)
        for key in ("fwd", "fwd_bwd"):
            backward = key == "fwd_bwd"
            for name, table in forms.items():
                if not (backward and name in INFERENCE_ONLY):
                    row[f"{key}_{name}"] = throughput(table, batches, args.repeats, backward)
            with native.disabled():  # the three-pass PyTorch path, for comparison
                row[f"{key}_compact_torch"] = throughput(compact, batches, args.repeats, backward)
        rows.append(row)
        say(format_row(row))
    return rows


def best_dense(row: dict, key: str) -> tuple[str, float]:
    """The fastest dense baseline of ``row`` in pass ``key`` ("fwd" or "fwd_bwd"): (name, rows/s)."""
    return max(((n, row[f"{key}_{n}"]) for n in DENSE if f"{key}_{n}" in row), key=lambda nv: nv[1])


COLUMNS = (("dense", "dense"), ("sparse", "dense_sparse"), ("fused", "dense_fused"), ("masked", "masked"),
           ("compact", "compact"), ("torch", "compact_torch"), ("csr", "csr"), ("b.pad", "buckets_padded"),
           ("b.unas", "buckets_unassembled"), ("b.serv", "buckets_served"), ("q8", "qcompact8"), ("q4", "qcompact4"))
HEADER = (f"{'rows':>9s} {'d_max':>5s} {'dens':>5s} {'dense':>10s} {'compact':>10s} {'vs ideal':>8s} "
          f"{'csr':>10s} {'q8':>10s} {'q4':>10s} | pass    " + "".join(f"{h:>8s}" for h, _ in COLUMNS)
          + " | compact / best dense")


def format_row(r: dict) -> str:
    """Two lines: the bytes and forward speeds, then the forward+backward speeds (M rows per CPU second)."""
    lines = []
    for key in ("fwd", "fwd_bwd"):
        head = (f"{r['rows']:>9,} {r['d_max']:>5d} {100 * r['density']:>4.0f}% {format_bytes(r['dense_bytes']):>10s} "
                f"{format_bytes(r['compact_bytes']):>10s} {100 * r['overhead']:>+7.2f}% "
                f"{format_bytes(r['csr_bytes']):>10s} {format_bytes(r['qcompact8_bytes']):>10s} "
                f"{format_bytes(r['qcompact4_bytes']):>10s}") if key == "fwd" else " " * 85
        cells = "".join(f"{r[f'{key}_{c}'] / 1e6:>8.2f}" if f"{key}_{c}" in r else f"{'-':>8s}" for _, c in COLUMNS)
        name, best = best_dense(r, key)
        lines.append(f"{head} | {key.replace('_', '+'):7s} {cells} | {r[f'{key}_compact'] / best:.2f}x ({name})")
    return "\n".join(lines)


def summary(rows: list[dict]) -> list[str]:
    """The closing lines: bytes against the ideal; at 10 % density, the speed ratios against the best dense
    baseline (and against plain nn.Embedding, labelled so) and where the FBGEMM buckets stand."""
    worst = max(abs(r["overhead"]) for r in rows)
    lines = [f"compact bytes vs sum(d_n) * 4 + (n + 1) * 8: worst {100 * worst:.3f} % "
             f"({'within' if worst <= 0.01 else 'NOT within'} 1 %)"]
    at_10 = [r for r in rows if abs(r["density"] - 0.1) < 1e-9]
    for bits in (8, 4):
        lines.append(f"compact int{bits} bytes / compact float32 at 10 % density: "
                     + ", ".join(f"{r[f'qcompact{bits}_bytes'] / r['compact_bytes']:.3f}" for r in at_10))
    forms = [("compact", "compact"), ("compact_torch", "compact (PyTorch path)"), ("csr", "CSR"),
             ("qcompact8", "compact int8"), ("qcompact4", "compact int4")]
    forms += [(b, b.replace("_", " ")) for b in BUCKETS if all(f"fwd_{b}" in r for r in at_10)]
    for key in ("fwd", "fwd_bwd"):
        for form, what in forms:
            if all(f"{key}_{form}" in r for r in at_10):
                ratios = [r[f"{key}_{form}"] / best_dense(r, key)[1] for r in at_10]
                lines.append(f"{what} / best dense baseline at 10 % density, {key.replace('_', '+')}: "
                             + ", ".join(f"{x:.2f}x" for x in ratios))
        ratios = [r[f"{key}_compact"] / r[f"{key}_dense"] for r in at_10]
        lines.append(f"compact / plain nn.Embedding (dense gradient) at 10 % density, {key.replace('_', '+')}: "
                     + ", ".join(f"{x:.2f}x" for x in ratios))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small tables and few repeats (a smoke run)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here (and the printed table beside it, "
                                             ".txt)")
    p.add_argument("--batch", type=int, help="ids per lookup (default 4096, quick 1024)")
    p.add_argument("--repeats", type=int, help="timing repeats; the median is reported (default 7, quick 3)")
    p.add_argument("--calls", type=int, help="lookups per timed repeat (default 10, quick 4)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.calls = args.calls or (4 if args.quick else 10)
    args.batch = args.batch or (1024 if args.quick else 4096)
    row_counts = [943 + 1682, 20_000] if args.quick else [943 + 1682, 1_000_000]
    dims = [64] if args.quick else [64, 128]
    densities = [0.1] if args.quick else [0.05, 0.10, 0.20]
    steady = steady_allocator()
    problem = fbgemm_problem()
    args.fbgemm = problem is None
    text = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        text.append(line)

    say(f"embedding storage and lookup, batch {args.batch}, median of {args.repeats} x {args.calls} lookups; "
        f"speed in millions of rows per second of process CPU time (on one thread the lookup's own work, "
        f"less sensitive than wall time to other processes on a busy machine)")
    say(f"machine: {machine()}")
    say(f"compact lookups: {'native one-pass loop' if native.available() else 'PyTorch path (no C compiler)'}; "
        f"'torch': the PyTorch path; dense baselines: nn.Embedding (dense gradient), sparse=True, FBGEMM fused")
    say(f"allocator: {'large blocks kept on the heap (glibc mallopt)' if steady else 'default (no glibc mallopt)'}")
    if problem:
        say(f"FBGEMM columns skipped (the fused dense kernel and the width buckets): {problem}")
    say(HEADER)
    rows = []
    for num_rows in row_counts:
        for d_max in dims:
            rows += bench_case(num_rows, d_max, densities, args, say)
    say()
    for line in summary(rows):
        say(line)
    if args.out:
        write_json({"machine": machine(), "batch": args.batch, "repeats": args.repeats, "calls": args.calls,
                    "threads": args.threads, "quick": args.quick, "native": native.available(),
                    "fbgemm": args.fbgemm, "clock": "process CPU time", "steady_allocator": steady,
                    "rows": rows}, args.out)
        args.out.with_suffix(".txt").write_text("\n".join(text) + "\n")
        print(f"figures written to {args.out} and {args.out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
