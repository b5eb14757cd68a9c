"""Variable-size embedding storage: bytes of every form and lookup throughput (Chapter 4).

For an ml-100k-sized table (943 users + 1682 items = 2,625 rows) and a 1M-row table, at densities
5 / 10 / 20 % of d_max = 64 and 128, with widths from the MDE rule (alpha 0.3) on Zipf frequencies:

* bytes of the dense table, the masked table (dense + sizes) and the compact table (values + offsets +
  d_max floats of padding), and the compact bytes against the ideal sum(d_n) * 4 + (n + 1) * 8
  (goal: within 1 %);
* lookup throughput in rows per second of the compact table against a dense ``nn.Embedding`` of the
  same d_max (and the masked table), forward only (no autograd) and forward + backward (the gradient
  of the values, as an optimizer step needs it), batches of 4,096 random ids drawn with the Zipf
  frequencies (like real traffic), median over repeats;
* the element-wise form (``CSREmbedding``) at the same kept total, its mask from global magnitude
  pruning of the dense table: its bytes (values, uint8 column indices, offsets) and lookup throughput.

    python benchmarks/embedding.py --quick          # small tables, a smoke run
    python benchmarks/embedding.py --out benchmarks/out/embedding.json

Runs on one thread by default (``--threads``) so that figures do not depend on what else the machine
is doing on its other cores.
"""
from __future__ import annotations

import argparse
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
from recsize.search import mde_sizes



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


def throughput(table, batches, repeats: int, calls: int, backward: bool) -> float:
    """Rows per second looked up (and back-propagated) by ``table``."""
    grad = torch.randn(len(batches[0]), table.embedding_dim if hasattr(table, "embedding_dim") else table.dim)

    def forward(c):
        with torch.no_grad():
            table(batches[c % len(batches)])

    def forward_backward(c):
        out = table(batches[c % len(batches)])
        out.backward(grad)
        for p in table.parameters():
            p.grad = None

    return len(batches[0]) / median_seconds(forward_backward if backward else forward, repeats, calls)


def magnitude_mask(weight: torch.Tensor, kept: int) -> torch.Tensor:
    """The element mask keeping the ``kept`` entries of largest magnitude (global magnitude pruning)."""
    keep = torch.zeros(weight.numel(), dtype=torch.bool)
    keep[weight.detach().abs().flatten().topk(kept).indices] = True
    return keep.view_as(weight)


def bench_case(num_rows: int, d_max: int, densities, args) -> list[dict]:
    """Bytes and throughput of the four forms of one table shape at every density."""
    freq = zipf_frequencies(num_rows)
    rng = np.random.default_rng(1)
    batches = [torch.from_numpy(rng.choice(num_rows, args.batch, p=freq / freq.sum())) for _ in range(args.calls)]
    torch.manual_seed(0)
    dense = torch.nn.Embedding(num_rows, d_max)
    masked = MaskedEmbedding(num_rows, d_max)
    speed = {}  # dense and masked cost does not depend on the sizes: timed once per table shape
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
        ideal = int(sizes.sum()) * 4 + (num_rows + 1) * 8
        dense_bytes = dense.weight.numel() * dense.weight.element_size()
        row = {"rows": num_rows, "d_max": d_max, "density": density, "mean_width": float(sizes.mean()),
               "dense_bytes": dense_bytes, "masked_bytes": masked.num_bytes(), "compact_bytes": compact.num_bytes(),
               "ideal_bytes": ideal, "overhead": compact.num_bytes() / ideal - 1,
               "compact_vs_dense": compact.num_bytes() / dense_bytes, "csr_bytes": csr.num_bytes()}
        for backward in (False, True):
            key = "fwd_bwd" if backward else "fwd"
            for name, table in (("dense", dense), ("masked", masked)):
                if f"{key}_{name}" not in speed:
                    speed[f"{key}_{name}"] = throughput(table, batches, args.repeats, args.calls, backward)
            row[f"{key}_dense"], row[f"{key}_masked"] = speed[f"{key}_dense"], speed[f"{key}_masked"]
            row[f"{key}_compact"] = throughput(compact, batches, args.repeats, args.calls, backward)
            with native.disabled():  # the three-pass PyTorch path, for comparison
                row[f"{key}_compact_torch"] = throughput(compact, batches, args.repeats, args.calls, backward)
            row[f"{key}_csr"] = throughput(csr, batches, args.repeats, args.calls, backward)
        rows.append(row)
        print_row(row)
    return rows


HEADER = (f"{'rows':>9s} {'d_max':>5s} {'dens':>5s} {'dense':>10s} {'masked':>10s} {'compact':>10s} "
          f"{'vs ideal':>8s} {'csr':>10s} | {'fwd Mrows/s: dense':>18s} {'masked':>7s} {'compact':>7s} "
          f"{'torch':>7s} {'csr':>7s} | {'fwd+bwd: dense':>14s} {'masked':>7s} {'compact':>7s} {'torch':>7s} "
          f"{'csr':>7s}")


def print_row(r: dict) -> None:
    m = 1e6
    print(f"{r['rows']:>9,} {r['d_max']:>5d} {100 * r['density']:>4.0f}% {format_bytes(r['dense_bytes']):>10s} "
          f"{format_bytes(r['masked_bytes']):>10s} {format_bytes(r['compact_bytes']):>10s} "
          f"{100 * r['overhead']:>+7.2f}% {format_bytes(r['csr_bytes']):>10s} | {r['fwd_dense'] / m:>18.2f} "
          f"{r['fwd_masked'] / m:>7.2f} {r['fwd_compact'] / m:>7.2f} {r['fwd_compact_torch'] / m:>7.2f} "
          f"{r['fwd_csr'] / m:>7.2f} | {r['fwd_bwd_dense'] / m:>14.2f} {r['fwd_bwd_masked'] / m:>7.2f} "
          f"{r['fwd_bwd_compact'] / m:>7.2f} {r['fwd_bwd_compact_torch'] / m:>7.2f} {r['fwd_bwd_csr'] / m:>7.2f}",
          flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small tables and few repeats (a smoke run)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    p.add_argument("--batch", type=int, default=4096, help="ids per lookup (default 4096)")
    p.add_argument("--repeats", type=int, help="timing repeats; the median is reported (default 7, quick 3)")
    p.add_argument("--calls", type=int, default=10, help="lookups per timed repeat (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (3 if args.quick else 7)
    row_counts = [943 + 1682, 20_000] if args.quick else [943 + 1682, 1_000_000]
    dims = [64] if args.quick else [64, 128]
    densities = [0.1] if args.quick else [0.05, 0.10, 0.20]
    print(f"embedding storage and lookup, batch {args.batch}, median of {args.repeats} x {args.calls} lookups")
    print(f"machine: {machine()}")
    print(f"compact lookups: {'native one-pass loop' if native.available() else 'PyTorch path (no C compiler)'}; "
          f"'torch' columns: the PyTorch path")
    print(HEADER)
    rows = []
    for num_rows in row_counts:
        for d_max in dims:
            rows += bench_case(num_rows, d_max, densities, args)
    worst = max(abs(r["overhead"]) for r in rows)
    print(f"\ncompact bytes vs sum(d_n) * 4 + (n + 1) * 8: worst {100 * worst:.3f} % "
          f"({'within' if worst <= 0.01 else 'NOT within'} 1 %)")
    at_10 = [r for r in rows if abs(r["density"] - 0.1) < 1e-9]
    for key in ("fwd", "fwd_bwd"):
        for form, what in (("compact", "compact"), ("compact_torch", "compact (PyTorch path)"), ("csr", "CSR")):
            ratios = [r[f"{key}_{form}"] / r[f"{key}_dense"] for r in at_10]
            print(f"{what} / dense lookup speed at 10 % density, {key.replace('_', '+')}: "
                  + ", ".join(f"{x:.2f}x" for x in ratios))
    if args.out:
        write_json({"machine": machine(), "batch": args.batch, "repeats": args.repeats, "calls": args.calls,
                    "threads": args.threads, "quick": args.quick, "native": native.available(), "rows": rows}, args.out)
        print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
