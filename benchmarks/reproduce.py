"""Re-run a sample of an experiment's stored cells with today's code and say which give the stored numbers
(recsize.experiments.reproduce; Chapter 8). Exit 1 when one differs.

    python benchmarks/reproduce.py prune_deepfm --sample 2
    python benchmarks/reproduce.py prune_lightgcn20 --cell es-bytes 0.95 0
"""
from __future__ import annotations

import argparse
import sys

from recsize.experiments import reproduce as rep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("experiment")
    p.add_argument("--sample", type=int, default=1, help="cells drawn at random (default 1)")
    p.add_argument("--draw-seed", type=int, default=0, help="seed of the draw (default 0)")
    p.add_argument("--cell", nargs=3, action="append", metavar=("METHOD", "C", "SEED"),
                   help="a stored cell to re-run (repeatable; instead of --sample)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        cells = ([(m, float(c), int(s)) for m, c, s in args.cell] if args.cell
                 else rep.sample_cells(args.experiment, args.sample, args.draw_seed))
        rows = rep.reproduce(args.experiment, cells, device=args.device, progress=True)
    except ValueError as e:
        print(f"reproduce.py: error: {e}", file=sys.stderr)
        return 2
    for r in rows:
        method, c, seed = r["cell"]
        print(f"{args.experiment} {method} c = {100 * c:g} % seed {seed}: "
              f"{'equal' if r['equal'] else 'DIFFERENT'}\n  stored   {r['stored']}\n  computed {r['computed']}")
    return 0 if all(r["equal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
