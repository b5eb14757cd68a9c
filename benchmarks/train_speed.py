"""Training speed: seconds per epoch of training and of validation, per backbone, on ml-100k (issue 14).

Protocol. Every backbone is built at d = 64 with its recommended settings (``recsize.backbones.DEFAULTS``,
``recsize.train.default_config``) on ``prepare("ml-100k", "random-811", seed=0)`` (top-k: MF, NeuMF,
LightGCN, NGCF) or on ``prepare("ml-100k-ctr")`` (FM, DeepFM), and trained by ``recsize.train.train``
itself for ``--epochs`` epochs (early stopping off) on one thread. Two masked cases follow the prune
benchmark (``recsize.search.prune.run_magprune``): LightGCN and NeuMF fine-tuned with
``ElementMaskedEmbedding`` tables holding global magnitude masks at 20 % density (``masked_model``), and
the same LightGCN model's validation once its tables are converted to CSR (``compact_tables``), which is
how every element-wise run is evaluated at the end.

Timing. The trainer's validation calls (``evaluate_topk`` / ``evaluate_ctr``) are wrapped, so each epoch
splits into *training* (from the end of one validation to the start of the next: sampling, forward,
backward, Adam, checkpoint copy) and *validation* (full-ranking NDCG@20 or AUC). Times are
``time.process_time`` (CPU time of this process): with one thread that is the run's own work, whatever
else a loaded machine is doing; wall time is not. The first epoch is left out (one-off costs, such as
the import that constructing ``torch.optim.Adam`` triggers); the figure is the median over the others.

Before / after. ``--label`` names the measured code; the JSON keeps one entry per label, so that
measuring the committed code first and the changed code second records the speed-up::

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before python benchmarks/train_speed.py --label before
    python benchmarks/train_speed.py --label after
    python benchmarks/train_speed.py --quick        # 3 epochs of MF only: a smoke run

The JSON (``benchmarks/out/train_speed.json``) holds, per label, the seconds and the recsize source it
used; with both labels present it also holds ``speedup`` (before / after, per backbone and part).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from common import machine  # noqa: E402
import recsize  # noqa: E402
import recsize.train as trainer  # noqa: E402
from recsize.backbones import build_backbone, defaults_for  # noqa: E402
from recsize.data import prepare  # noqa: E402
from recsize.files import write_json  # noqa: E402
from recsize.train import default_config, seed_everything  # noqa: E402

OUT = Path(__file__).parent / "out" / "train_speed.json"
CASES = ("mf", "neumf", "lightgcn", "ngcf", "fm", "deepfm", "lightgcn_masked", "neumf_masked")


class Clock:
    """Wraps the trainer's validation functions and records process-time stamps around every call."""

    def __init__(self):
        self.calls: list[tuple[float, float]] = []
        self.saved = {}

    def __enter__(self):
        for name in ("evaluate_topk", "evaluate_ctr"):
            fn = getattr(trainer, name)
            self.saved[name] = fn

            def timed(*args, _fn=fn, **kwargs):
                start = time.process_time()
                try:
                    return _fn(*args, **kwargs)
                finally:
                    self.calls.append((start, time.process_time()))
            setattr(trainer, name, timed)
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(trainer, name, fn)

    def per_epoch(self) -> tuple[list[float], list[float]]:
        """(training seconds, validation seconds) of every epoch: call 0 is the trainer's check of the
        metric before the loop, calls 1..E the epochs' validations, the last one the test evaluation."""
        train, valid = [], []
        for prev, cur in zip(self.calls[:-2], self.calls[1:-1]):
            train.append(cur[0] - prev[1])
            valid.append(cur[1] - cur[0])
        return train, valid


def masked(backbone: str, split, dim: int, density: float = 0.2):
    """The prune benchmark's fine-tuning model: global magnitude masks of a freshly built dense model."""
    from recsize.search.prune import element_budget, magnitude_masks, masked_model, table_shapes
    seed_everything(0)
    dense = build_backbone(backbone, split, dim, **defaults_for(backbone)[0])
    budget = element_budget(table_shapes(backbone, split, dim), density, "global")
    tables = {r: t.table().detach() for r, t in dense.embedding_tables().items()}
    masks, _ = magnitude_masks(tables, budget)
    state = {k: v.detach().clone() for k, v in dense.state_dict().items()}
    return masked_model(backbone, split, dim, masks, state, 0)


def csr_valid(model, split, repeats: int) -> float:
    """Median process seconds of one validation pass after converting the tables to CSR."""
    from recsize.embedding import compact_tables
    from recsize.evaluate import evaluate_topk
    compact_tables(model)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        evaluate_topk(model, split, "valid", ks=(5, 10, 20))
        times.append(time.process_time() - start)
    return statistics.median(times)


def run_case(case: str, splits: dict, dim: int, epochs: int) -> dict:
    backbone = case.split("_")[0]
    split = splits["ctr" if backbone in ("fm", "deepfm") else "topk"]
    config = default_config(backbone, epochs=epochs, patience=epochs, progress=False)
    if case.endswith("_masked"):
        model = masked(backbone, split, dim)
    else:
        seed_everything(config.seed)
        model = build_backbone(backbone, split, dim, **defaults_for(backbone)[0])
    with Clock() as clock:
        result = trainer.train(model, split, config)
    train_s, valid_s = clock.per_epoch()
    row = {"epochs": epochs, "batch_size": config.batch_size,
           "train_s": statistics.median(train_s[1:]), "valid_s": statistics.median(valid_s[1:]),
           "train_s_all": train_s, "valid_s_all": valid_s,
           "final_loss": result.history[-1]["loss"], "best_epoch": result.best_epoch,
           "valid": result.valid}
    if case == "lightgcn_masked":
        row["csr_valid_s"] = csr_valid(result.model, split, max(epochs - 1, 1))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", default="after", help="name of the measured code (before / after)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="3 epochs of MF, nothing written")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.cases = 3, ["mf"]
    splits = {"topk": prepare("ml-100k", "random-811", seed=0), "ctr": prepare("ml-100k-ctr", seed=0)}
    rows = {}
    for case in args.cases:
        rows[case] = run_case(case, splits, args.dim, args.epochs)
        r = rows[case]
        extra = f"  csr valid {r['csr_valid_s']:.3f} s" if "csr_valid_s" in r else ""
        print(f"{args.label:>7} {case:16s} train {r['train_s']:.3f} s/epoch  valid {r['valid_s']:.3f} s/epoch"
              f"{extra}  loss {r['final_loss']:.6f}  best epoch {r['best_epoch']}", flush=True)
    if args.quick:
        return
    out = Path(args.out)
    import json
    data = json.loads(out.read_text()) if out.exists() else {}
    earlier = data.setdefault("runs", {}).get(args.label, {}).get("cases", {})  # a rerun of some cases
    data["runs"][args.label] = {                                               # replaces only those
        "machine": machine(), "threads": args.threads, "dim": args.dim, "epochs": args.epochs,
        "timer": "time.process_time, median over epochs 2..E", "recsize": str(Path(recsize.__file__).parent),
        "cases": {**earlier, **rows}}
    data["protocol"] = __doc__.split("\n\n")[1].replace("\n", " ")
    runs = data["runs"]
    if "before" in runs and "after" in runs:
        speed = {}
        for case, a in runs["after"]["cases"].items():
            b = runs["before"]["cases"].get(case)
            if b is None:
                continue
            speed[case] = {k: b[k] / a[k] for k in ("train_s", "valid_s", "csr_valid_s") if k in a and k in b}
            speed[case]["identical"] = (b["final_loss"] == a["final_loss"] and b["valid"] == a["valid"]
                                        and b["best_epoch"] == a["best_epoch"])
        data["speedup"] = speed
    write_json(data, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
