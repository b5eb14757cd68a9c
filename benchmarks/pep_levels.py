"""Where PEP's learned thresholds leave the kept fraction: does the search itself reach the budgets?

Chapter 4. PEP (Liu et al., ICLR 2021) prunes while it trains: an entry v survives while |v| > g(s) =
scale * sigmoid(s), the thresholds s learned with the loss (``recsize.search.pep.pep_search``). Its mask
for a budget is meant to be the one the training reaches when the kept count first falls to it. This
benchmark runs PEP's training alone (no retraining) for ``--epochs`` epochs and records, per epoch, the
kept fraction of all table entries and the mean threshold g(s), for every backbone (ml-100k 8:1:1 for the
top-k ones, ml-100k-ctr for DeepFM) and threshold scale: scale 1 with s_0 = -15 is the authors' default.
The budgets' entry fractions (1 - c of the dense bytes in CSR form, index included: on LightGCN 37.5 / 13.5 /
5.5 / 1.5 % of the entries at c = 50 / 80 / 90 / 95 %) are drawn on the plot, so a reader sees which ones PEP reaches by itself; the
others are met by cutting PEP's last state by magnitude (``reached = False`` in benchmarks/prune.py).

    python benchmarks/pep_levels.py                            # lightgcn, neumf, deepfm x scale 1, 4 (~30 min)
    python benchmarks/pep_levels.py --backbones lightgcn --scales 1 --epochs 20 --out /tmp/pep_levels.json

Writes benchmarks/out/pep_levels.json (atomically, after every run; an interrupted run resumes) and
benchmarks/out/pep_levels.png. One thread.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from common import machine

from recsize.data import prepare
from recsize.files import write_json
from recsize.search import element_budget, table_shapes
from recsize.search.pep import PEPConfig, pep_search
from recsize.train import default_config

OUT = Path(__file__).resolve().parent / "out" / "pep_levels.json"
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
DATASET = {"deepfm": "ml-100k-ctr", "fm": "ml-100k-ctr"}


def budget_fractions(backbone: str, split, d_max: int) -> dict[float, float]:
    """The kept fraction of all entries at each sparsity's byte budget (global split, CSR form)."""
    shapes = table_shapes(backbone, split, d_max)
    total = sum(rows * dim for rows, dim in shapes.values())
    return {c: element_budget(shapes, round(1 - c, 6), "global")["entries"] / total for c in SPARSITIES}


def plot(data: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    backbones = list(dict.fromkeys(r["backbone"] for r in data["runs"]))
    fig, axes = plt.subplots(1, len(backbones), figsize=(4.2 * len(backbones), 3.6), squeeze=False)
    for ax, backbone in zip(axes[0], backbones):
        mine = [r for r in data["runs"] if r["backbone"] == backbone]
        for r in mine:
            h = r["history"]
            ax.plot([e["epoch"] for e in h], [e["density"] for e in h], label=f"scale {r['scale']:g}")
        for c, f in mine[0]["budgets"].items():
            ax.axhline(f, color="0.6", lw=0.8, ls="--")
            ax.text(1.01, f, f"c = {float(c):.0%}", transform=ax.get_yaxis_transform(), va="center",
                    fontsize=7, color="0.4")
        ax.set_yscale("log")
        ax.set_ylim(0.5 * min(mine[0]["budgets"].values()), 1.2)
        ax.set_title(backbone)
        ax.set_xlabel("PEP training epoch")
        ax.legend(loc="lower left", fontsize=8)
    axes[0][0].set_ylabel("kept fraction of the entries")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["lightgcn", "neumf", "deepfm"],
                   choices=["lightgcn", "mf", "neumf", "ngcf", "fm", "deepfm"])
    p.add_argument("--scales", nargs="+", type=float, default=[1.0, 4.0],
                   help="threshold scales g(s) = scale * sigmoid(s) (default 1, the authors', and 4)")
    p.add_argument("--epochs", type=int, default=300, help="PEP training epochs (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if any(not s > 0 for s in args.scales):
        p.error(f"every --scales value must be > 0, got {args.scales}")
    torch.set_num_threads(1)
    settings = {"epochs": args.epochs, "seed": args.seed, "dim": args.dim}
    data = {"settings": settings, "machine": machine(), "device": args.device, "runs": []}
    if args.out.exists():
        old = json.loads(args.out.read_text())
        if old.get("settings") != settings:
            raise SystemExit(f"{args.out} holds runs with other settings ({old.get('settings')}): use another "
                             "--out, or the same settings to resume")
        data["runs"] = old["runs"]
    done = {(r["backbone"], r["scale"]) for r in data["runs"]}
    for backbone in args.backbones:
        split = prepare(DATASET.get(backbone, "ml-100k"), "random-811", seed=args.seed, verbose=False)
        config = default_config(backbone, seed=args.seed, progress=False, device=args.device)
        fractions = budget_fractions(backbone, split, args.dim)
        for scale in args.scales:
            if (backbone, scale) in done:
                continue
            pep = PEPConfig(scale=scale, search_epochs=args.epochs)
            # the smallest budget keeps the training going to the cap unless PEP reaches it
            searched = pep_search(backbone, split, [round(1 - max(SPARSITIES), 6)], args.dim, config, pep)
            h = searched.history
            reached = {str(c): next((e["epoch"] for e in h if e["density"] <= f), None)
                       for c, f in fractions.items()}
            data["runs"].append({"backbone": backbone, "scale": scale, "threshold_init": pep.threshold_init,
                                 "budgets": {str(c): f for c, f in fractions.items()}, "reached": reached,
                                 "final_density": h[-1]["density"], "final_threshold": h[-1]["threshold"],
                                 "seconds": searched.seconds,
                                 "history": [{k: e[k] for k in ("epoch", "density", "threshold", "loss")}
                                             for e in h]})
            print(f"{backbone} scale {scale:g}: kept {h[-1]['density']:.1%} of the entries after {len(h)} epochs "
                  f"(mean threshold {h[-1]['threshold']:.3g}); budgets reached at epoch "
                  + ", ".join(f"c = {float(c):.0%}: {e if e else 'never'}" for c, e in reached.items())
                  + f" ({searched.seconds:.0f} s)", flush=True)
            write_json(data, args.out)
    plot(data, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
