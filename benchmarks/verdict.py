"""Chapter 8's evidence in one command: the converged head-to-head grids of every backbone (issue 14).

Runs ``benchmarks/prune.py`` once per (grid, seed) as separate processes, ``--jobs`` at a time (one
thread each), then ``benchmarks/report.py``. Every process writes its own file
``out/prune_GRID_verdict_sSEED.json`` after every (method, budget) cell, so an interrupted run continues
where it stopped when started again. These files are a rerun to compare with the stored grids, not part of
them: the README tables and the chapters read the evidence store (``evidence/NAME.jsonl``), whose missing
cells ``recsize experiment run prune_GRID --jobs N`` computes (one writer, seeds in parallel processes).

The grids (every method at equal bytes, c = 50 / 80 / 90 / 95 %, every training to convergence: cap 300,
patience 20 for LightGCN, 10 otherwise):

* ``lightgcn20``: LightGCN on ml-100k: ES, MDE, MR, MagPrune, PEP, DNIS (|E| and |alpha E|), CIESS at
  the reduced schedule of Chapter 6 (6 x 5 iterations of 200 batches, l = 1);
* ``neumf``: NeuMF on ml-100k, the same methods;
* ``deepfm``: DeepFM on ml-100k-ctr: the same without CIESS, with iHAS (its defaults, Chapter 7);
* ``planted_lightgcn``: LightGCN on planted-100k (true widths independent of popularity, Chapter 8.8):
  ES, MDE, MR, MagPrune, PEP, DNIS, CIESS (the reduced schedule above).

The LightGCN grids train a seed's ES / MDE / MR cells in one stacked pass (``prune.py --stacked``,
``recsize.stacked``): the same numbers as one by one, in less time.

On the 2-core CPU of this project each grid takes 4.4 to 4.9 hours of one core over its three seeds
(Chapter 8.6 prints the stored runs' times); on a GPU, pass ``--device cuda`` and more ``--jobs``.

    python benchmarks/verdict.py                       # every grid, seeds 0 1 2, two processes at a time
    python benchmarks/verdict.py --grids deepfm --seeds 0 --jobs 1
    python benchmarks/verdict.py --dry-run             # print the commands only
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
COMMON = ["es-bytes", "mde-bytes", "mr-bytes", "magprune", "pep", "dnis", "dnis-alpha"]
CIESS = ["--ciess-episodes", "6", "--ciess-iterations", "5", "--ciess-iteration-batches", "200",
         "--ciess-top-l", "1"]
GRIDS = {
    "lightgcn20": ["--backbone", "lightgcn", "--patience", "20", "--methods", *COMMON, "ciess", *CIESS,
                   "--stacked"],
    "neumf": ["--backbone", "neumf", "--methods", *COMMON, "ciess", *CIESS],
    "deepfm": ["--backbone", "deepfm", "--methods", *COMMON, "ihas"],
    "planted_lightgcn": ["--backbone", "lightgcn", "--dataset", "planted-100k", "--methods", *COMMON, "ciess",
                         *CIESS, "--stacked"],
}


def commands(grids, seeds, device: str, out: Path = OUT) -> list[list[str]]:
    """One ``prune.py`` command line per (grid, seed), in that order."""
    return [[sys.executable, str(HERE / "prune.py"), *GRIDS[g], "--seeds", str(s), "--device", device,
             "--out", str(out / f"prune_{g}_verdict_s{s}.json")] for g in grids for s in seeds]


def run_all(cmds: list[list[str]], jobs: int, logs: Path) -> int:
    """Run the commands ``jobs`` at a time, each with one thread and its log in ``logs``; the number of
    commands that failed. Each command's process CPU seconds (user + system, from ``os.wait4``: its own
    work, whatever else shares the machine) and wall seconds go to ``logs/times.json``."""
    import os

    from recsize.files import write_json
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed, times = list(cmds), [], 0, {}
    while pending or running:
        while pending and len(running) < jobs:
            cmd = pending.pop(0)
            log = logs / (Path(cmd[cmd.index("--out") + 1]).stem + ".log")
            proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
            running.append((proc, log, time.perf_counter()))
            print(f"started {log.stem} (log {log})", flush=True)
        for proc, log, began in list(running):
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            proc.returncode = os.waitstatus_to_exitcode(status)
            running.remove((proc, log, began))
            failed += proc.returncode != 0
            times[log.stem] = {"command": " ".join(proc.args[1:]), "returncode": proc.returncode,
                               "cpu_seconds": usage.ru_utime + usage.ru_stime,
                               "wall_seconds": time.perf_counter() - began}
            print(f"{'finished' if proc.returncode == 0 else 'FAILED'} {log.stem}: "
                  f"{times[log.stem]['cpu_seconds'] / 60:.1f} min of CPU", flush=True)
        time.sleep(1)
    write_json(times, logs / "times.json")
    return failed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2, the CPU's cores)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--dry-run", action="store_true", help="print the commands and run nothing")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if any(s < 0 for s in args.seeds):
        p.error(f"--seeds must be >= 0, got {args.seeds}")
    cmds = commands(args.grids, args.seeds, args.device)
    if args.dry_run:
        for cmd in cmds:
            print(" ".join(cmd[1:]))
        return 0
    failed = run_all(cmds, args.jobs, OUT / "logs")
    if failed:
        print(f"{failed} of {len(cmds)} runs failed: see their logs in {OUT / 'logs'}; run again to resume",
              file=sys.stderr)
        return 1
    return subprocess.call([sys.executable, str(HERE / "report.py")])


if __name__ == "__main__":
    sys.exit(main())
