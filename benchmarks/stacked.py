"""Stacked training: K width-masked LightGCN models in one pass against K passes, on ml-100k (issue 14, Chapter 8).

Protocol. ``prepare("ml-100k", "random-811", seed=0)``, LightGCN at d_max = 64 with its recommended settings
(``recsize.train.default_config``), one thread. The models are the baselines of the head-to-head grid at equal
seed: ES, MDE and MR widths (``recsize.search.baselines.baseline_sizes``, MR's roles seeded as ``run_baseline``
does) at densities 0.5, 0.2 and 0.1, initialised and sampled from seed 0, as ``run_baseline`` builds them; the
first K of them for K = 1, 2, 4, 8 (``--ks``). Every training runs ``--epochs`` epochs (early stopping cannot
trigger: patience = epochs) with validation NDCG@20 after each epoch and no test evaluation.

* one by one: each of the first K models built, then trained by ``recsize.train.train`` with every column
  propagated (``LightGCN.trim_dead_columns = False``, how LightGCN trained before it skipped dead columns); the
  figure for K is the sum over them (measured again for every K, right before its stacked runs, so that both
  sides see the same load on a shared machine); the reference of every speed-up;
* one by one, live columns: the same with ``LightGCN.propagate``'s default, which propagates only the
  columns some row's mask keeps (``recsize.backbones.live_columns``);
* stacked: the first K models built the same way, then trained together by
  ``recsize.stacked.train_models_stacked(..., trim=False)`` (one wide propagation of all K x d_max columns per
  layer, in blocks of at most 256 columns on a CPU; per-model losses, Adam, early stopping and validation);
* trimmed: the same with ``trim=True`` (the default): each model propagates only its live columns, up to its
  widest row (ES at density 0.1: 7 of 64), the rest padded back as the zeros they would be.

Wall time (``time.perf_counter``) and process CPU time (``time.process_time``; with one thread the run's own
work, whatever else a loaded machine does) of each training call, divided by the epochs; they include the
trainer's one-off costs (the validation that checks the metric name, building the optimizers), the same on
both sides, after one untimed warm-up epoch. The speed-up is one-by-one / stacked. Each stacked model is also
compared with its one-by-one twin: ``bit_identical`` (weights and history, wall times aside) and the largest
weight difference.

    python benchmarks/stacked.py                 # 5 epochs, K = 1 2 4 8 (a few minutes on one CPU thread)
    python benchmarks/stacked.py --epochs 3 --device cuda

Writes ``benchmarks/out/stacked.json`` (atomically, ``recsize.files.write_json``).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from common import machine  # noqa: E402
from recsize.backbones import LightGCN, build_backbone, defaults_for  # noqa: E402
from recsize.data import prepare  # noqa: E402
from recsize.embedding import masked_factory  # noqa: E402
from recsize.files import write_json  # noqa: E402
from recsize.search.baselines import baseline_sizes, role_counts  # noqa: E402
from recsize.stacked import live_columns, train_models_stacked  # noqa: E402
from recsize.train import default_config, resolve_device, seed_everything, train  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "stacked.json"
MODELS = (("es", 0.5), ("mde", 0.5), ("mr", 0.5), ("es", 0.2), ("mde", 0.2), ("mr", 0.2), ("es", 0.1), ("mde", 0.1))
KS = (1, 2, 4, 8)


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr (no usage block, no traceback), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def widths_for(split, method: str, density: float, d_max: int, seed: int) -> dict:
    """The user and item widths ``run_baseline`` gives ``method`` at ``density`` (MR: role i seeded seed + i)."""
    return {role: baseline_sizes(method, counts, d_max, density, seed=seed + i)
            for i, (role, counts) in enumerate(role_counts(split).items()) if role in ("user", "item")}


def build(split, widths: dict, d_max: int, seed: int):
    """The masked LightGCN that ``fit`` builds for these widths (seeded, the backbone's settings and init)."""
    seed_everything(seed)
    model_kwargs, _ = defaults_for("lightgcn")
    return build_backbone("lightgcn", split, d_max, embedding=masked_factory(widths, d_max, init="normal"),
                          **model_kwargs)


def timed(fn, device):
    """(result, wall seconds, process CPU seconds) of ``fn()``, the device synchronised at both ends."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def compare(a, b) -> tuple[bool, float]:
    """(bit-identical?, largest absolute weight difference) of two results of the same model."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    diff = max(float((sa[n].double() - sb[n].double()).abs().max()) for n in sa if sa[n].is_floating_point())
    strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in r.history] for r in (a, b)]
    same = (all(torch.equal(sa[n], sb[n]) for n in sa) and strip[0] == strip[1] and a.valid == b.valid
            and a.best_epoch == b.best_epoch)
    return same, diff


def main(argv=None) -> int:
    p = OneLineParser(prog="stacked.py", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=5, help="epochs of every training (default 5)")
    p.add_argument("--ks", type=int, nargs="+", default=list(KS), help="numbers of stacked models (default 1 2 4 8)")
    p.add_argument("--dim", type=int, default=64, help="d_max (default 64)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if any(not 1 <= k <= len(MODELS) for k in args.ks):
        p.error(f"--ks values must lie in [1, {len(MODELS)}] (the models of the grid), got {args.ks}")
    if args.dim * min(d for _, d in MODELS) < 1:
        p.error(f"--dim must be >= 10 (the baselines keep at least one dimension per row at density 0.1), "
                f"got {args.dim}")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        p.error(f"--device: {e}")
    torch.set_num_threads(1)
    ks = sorted(set(args.ks))
    split = prepare("ml-100k", "random-811", seed=0, verbose=False)
    seed = 0
    config = default_config("lightgcn", epochs=args.epochs, patience=args.epochs, seed=seed, progress=False,
                            test=False, device=str(device))
    names = [f"{m}@{d:g}" for m, d in MODELS[:max(ks)]]
    widths = [widths_for(split, m, d, args.dim, seed) for m, d in MODELS[:max(ks)]]
    print(f"stacked LightGCN on ml-100k, d_max = {args.dim}, {args.epochs} epochs, {device}, one thread; "
          f"models {', '.join(names)}", flush=True)

    warm = default_config("lightgcn", epochs=1, seed=seed, progress=False, test=False, device=str(device))
    train(build(split, widths[0], args.dim, seed), split, warm)   # one-off costs (imports, allocator) untimed
    live = [live_columns(build(split, w, args.dim, seed)) for w in widths]
    def per_epoch(wall, cpu):
        return {"wall": wall, "cpu": cpu, "wall_per_epoch": wall / args.epochs, "cpu_per_epoch": cpu / args.epochs}

    rows = []
    for k in ks:   # each K: its one-by-one runs right before its stacked runs, so both see the same machine load
        singles = {}
        try:
            for variant, trim in (("one_by_one", False), ("one_by_one_live", True)):
                LightGCN.trim_dead_columns = trim
                singles[variant] = []
                for name, w in zip(names[:k], widths[:k]):
                    model = build(split, w, args.dim, seed)
                    result, wall, cpu = timed(lambda: train(model, split, config), device)
                    singles[variant].append({"model": name, "wall": wall, "cpu": cpu, "result": result})
        finally:
            LightGCN.trim_dead_columns = True
        single = singles["one_by_one"]
        alone = per_epoch(*(sum(s[t] for s in single) for t in ("wall", "cpu")))
        row = {"k": k, "models": names[:k], "live_columns": live[:k], "one_by_one": alone,
               "one_by_one_models": [{t: v for t, v in s.items() if t != "result"} for s in single]}
        lone = singles["one_by_one_live"]
        wall, cpu = (sum(s[t] for s in lone) for t in ("wall", "cpu"))
        checks = [compare(a["result"], b["result"]) for a, b in zip(lone, single)]
        row["one_by_one_live"] = {**per_epoch(wall, cpu),
                                  "speedup": {"wall": alone["wall"] / wall, "cpu": alone["cpu"] / cpu},
                                  "bit_identical": all(same for same, _ in checks),
                                  "max_abs_diff": max(diff for _, diff in checks)}
        print(f"  K = {k}: one by one {alone['wall_per_epoch']:6.3f} s/epoch wall, "
              f"{alone['cpu_per_epoch']:6.3f} s/epoch CPU; live columns only "
              f"{row['one_by_one_live']['wall_per_epoch']:6.3f} s/epoch wall", flush=True)
        for variant, trim in (("stacked", False), ("trimmed", True)):
            models = [build(split, w, args.dim, seed) for w in widths[:k]]
            results, wall, cpu = timed(lambda: train_models_stacked(models, split, config, trim=trim), device)
            checks = [compare(r, s["result"]) for r, s in zip(results, single)]
            row[variant] = {**per_epoch(wall, cpu),
                            "speedup": {"wall": alone["wall"] / wall, "cpu": alone["cpu"] / cpu},
                            "bit_identical": all(same for same, _ in checks),
                            "max_abs_diff": max(diff for _, diff in checks)}
            print(f"  K = {k}: {variant:10s} {wall / args.epochs:6.3f} s/epoch wall, {cpu / args.epochs:6.3f} s/epoch "
                  f"CPU", flush=True)
        rows.append(row)

    print(f"\nwall seconds per epoch of K models (validation included); speed-up = one by one (every column) / the "
          f"variant; live: one by one, each model's live columns only; stacked: all K x {args.dim} columns in one "
          "pass; trimmed: stacked, live columns only")
    print(f"{'K':>2s} {'one by one':>11s} {'live':>8s} {'speed-up':>9s} {'stacked':>8s} {'speed-up':>9s} "
          f"{'trimmed':>8s} {'speed-up':>9s}  identical")
    for r in rows:
        a, lv, s, t = r["one_by_one"], r["one_by_one_live"], r["stacked"], r["trimmed"]
        same = all(x["bit_identical"] for x in (lv, s, t))
        diff = max(x["max_abs_diff"] for x in (lv, s, t))
        print(f"{r['k']:2d} {a['wall_per_epoch']:11.3f} {lv['wall_per_epoch']:8.3f} {lv['speedup']['wall']:8.2f}x "
              f"{s['wall_per_epoch']:8.3f} {s['speedup']['wall']:8.2f}x {t['wall_per_epoch']:8.3f} "
              f"{t['speedup']['wall']:8.2f}x  {'bit for bit' if same else 'max |diff| %.2g' % diff}")
    write_json({"settings": {"dataset": "ml-100k", "split": "random-811", "seed": seed, "backbone": "lightgcn",
                             "d_max": args.dim, "epochs": args.epochs, "ks": ks, "device": str(device), "threads": 1,
                             "models": names, "live_columns": live},
                "machine": machine(), "runs": rows}, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
