"""The ``recsize`` command line. Explained in Chapter 3 (and in the README).

    recsize data fetch ml-100k
    recsize data info ml-100k --protocol random-811
    recsize train --backbone lightgcn --dataset ml-100k --dim 64 --out results/lightgcn.json
    recsize search --method mde --budget 0.1 --backbone lightgcn --dataset ml-100k   (Chapter 4)
    recsize search --method dnis --backbone lightgcn --dataset ml-100k --budget 0.1   (Chapter 5)
    recsize search --method ciess --backbone lightgcn --dataset ml-100k --budgets 0.8 0.9 0.95  (Chapter 6)
    recsize search --method ihas --backbone deepfm --dataset ml-100k-ctr --budget 0.2 --clusters 4  (Chapter 7)
    recsize search --method magprune --backbone lightgcn --dataset ml-100k --sparsity 0.9   (Chapter 4)
    recsize search --method pep --backbone lightgcn --dataset ml-100k --budget 0.1   (Chapter 4)
    recsize export --format torchrec --out export.pt user=user.pt item=item.pt   (Appendix A)
    recsize book run --out results/book       (README: every chapter through papermill)
    recsize book build                        (README: the HTML book in book/_build/html)
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from . import __version__
from .cli_support import INTERRUPTED, OneLineParser, StopSignals, Terminated, flush_stdout, reader_gone, say
from .files import write_json


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _positive_float(text: str) -> float:
    v = _number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return v


def _nonneg_float(text: str) -> float:
    v = _number(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {text!r}") from None
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"a seed is an integer in [0, 2**32) (NumPy's range), got {v}")
    return v


def _number(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return v


def _density(text: str) -> float:
    from .budget import check_budget
    try:
        return check_budget(_number(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _sparsity(text: str) -> float:
    from .budget import density_from_sparsity
    try:
        return density_from_sparsity(_number(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _searched_sparsity(text: str) -> float:
    """A sparsity c for a search, which must prune something: c in (0, 1). Kept as c (the user's unit)."""
    c = _number(text)
    if not 0 < c < 1:
        raise argparse.ArgumentTypeError(
            f"a sparsity c is the pruned fraction, strictly between 0 and 1 for a search, got {text} "
            "(c = 0.9 prunes 90 % and keeps 10 %; c = 0 would keep the full tables: train them with "
            "`recsize train`)")
    return c


def _unit_float(text: str) -> float:
    v = _number(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return v


def _progress(args):
    """How a command shows progress: bars on a terminal, plain lines every 30 s when stderr is a log or a
    pipe (a long run is never silent), nothing with --quiet (:func:`recsize.train.progress_bar`)."""
    return False if args.quiet else (None if sys.stderr.isatty() else "log")


def metrics_table(rows: dict[str, dict], keys=None) -> str:
    """A small fixed-width table: one line per row name, one column per metric."""
    keys = keys or sorted({k for r in rows.values() for k in r if isinstance(r[k], float)})
    head = f"{'':10s}" + "".join(f"{k:>12s}" for k in keys)
    lines = [head]
    for name, r in rows.items():
        lines.append(f"{name:10s}" + "".join(f"{r[k]:12.4f}" if k in r else f"{'-':>12s}" for k in keys))
    return "\n".join(lines)


PROTOCOL = "split protocol of top-k data (default random-811; CTR data: random 8:1:1 over samples)"
VERBOSE = "errors in full: e.g. every source tried for a missing dataset"


def build_parser() -> argparse.ArgumentParser:
    from .backbones import BACKBONES
    from .data import DATASET_CHOICES, DATASETS, PROTOCOLS

    p = OneLineParser(prog="recsize", description="Embedding-size search for recommender systems.")
    p.add_argument("--version", action="version", version=f"recsize {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="fetch datasets and show their statistics")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="download (or find in the cache) and verify a dataset")
    f.add_argument("name", choices=[d for d in DATASETS if d != "synthetic"])
    f.add_argument("--offline", action="store_true", help="only look in the local cache")
    f.add_argument("--verbose", action="store_true", help=VERBOSE)
    i = dsub.add_parser("info", help="print dataset and split statistics")
    i.add_argument("name", choices=DATASET_CHOICES)
    i.add_argument("--protocol", choices=list(PROTOCOLS), help=PROTOCOL)
    i.add_argument("--seed", type=_seed, default=0)
    i.add_argument("--verbose", action="store_true", help=VERBOSE)

    t = sub.add_parser("train", help="train one backbone and report test metrics")
    t.add_argument("--backbone", choices=list(BACKBONES), default="lightgcn")
    t.add_argument("--dataset", choices=DATASET_CHOICES, default="ml-100k")
    t.add_argument("--protocol", choices=list(PROTOCOLS), help=PROTOCOL)
    t.add_argument("--dim", type=_positive_int, default=64, help="embedding width d (default 64)")
    t.add_argument("--epochs", type=_positive_int, default=300, help="maximum epochs (default 300)")
    t.add_argument("--batch-size", type=_positive_int, help="mini-batch size (backbone default)")
    t.add_argument("--lr", type=_positive_float, help="Adam learning rate (backbone default)")
    t.add_argument("--weight-decay", type=_nonneg_float, help="Adam weight decay (default 0)")
    t.add_argument("--reg", type=_nonneg_float, help="L2 weight on the batch embeddings (backbone default)")
    t.add_argument("--patience", type=_nonneg_int, default=10, help="epochs without improvement before stopping")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    t.add_argument("--out", help="write metrics and history as JSON here")
    t.add_argument("--checkpoint", help="save the best weights here")
    t.add_argument("--quiet", action="store_true", help="no progress bars or dataset messages")
    t.add_argument("--verbose", action="store_true", help=VERBOSE)

    from .search import METHODS
    from .search.prune import PEP_GRANULARITIES, PRUNE_METHODS, PRUNE_SPLITS
    s = sub.add_parser("search", help="train with searched or baseline embedding sizes under a budget",
                       description="Give every embedding row a width under a memory budget, train, then "
                                   "report quality, parameters and bytes (dense vs compact). Chapter 4 "
                                   "(also MagPrune and PEP); DNIS: Chapter 5; CIESS: Chapter 6; iHAS: Chapter 7.")
    s.add_argument("--method", choices=[*METHODS, "dnis", "ciess", "ihas", *PRUNE_METHODS], required=True,
                   help="es: equal sizes, mr: mixed random sizes, mde: width ~ frequency^alpha, "
                        "dnis: differentiable search with a soft selection layer, "
                        "ciess: reinforcement-learning search (one search serves every --budgets value), "
                        "ihas: instance-wise gates, K-means clusters, one model per cluster (CTR backbones), "
                        "magprune: train full width, keep the largest entries, fine-tune (CSR storage), "
                        "magprune-tois: the TOIS'25 benchmark's MagPrune (per table, a floor of min_item "
                        "entries per row chosen on validation, no fine-tuning), "
                        "pep: learnable soft thresholds, then retrain from the initial weights (CSR storage); "
                        "for magprune and pep the budget is a fraction of the dense bytes, CSR index included")
    budget = s.add_mutually_exclusive_group()  # required for es / mr / mde, checked in main()
    budget.add_argument("--budget", type=_density, metavar="DENSITY",
                        help="kept fraction of the d_max-wide tables, in (0, 1] (0.1 keeps 10 %%)")
    budget.add_argument("--sparsity", type=_sparsity, dest="sparsity_density", metavar="C",
                        help="the papers' pruned fraction c, in [0, 1) (0.9 keeps 10 %%)")
    s.add_argument("--alpha", type=_unit_float, default=0.3, help="MDE temperature in [0, 1] (default 0.3)")
    c = s.add_argument_group("CIESS (--method ciess, Chapter 6)")
    c.add_argument("--budgets", type=_searched_sparsity, nargs="+", metavar="C",
                   help="the papers' sparsities c (pruned fractions in (0, 1)) to select masks for; converted "
                        "to densities 1 - c (default: 0.8 0.9 0.95, i.e. keep 20/10/5 %%)")
    c.add_argument("--reward", choices=["code", "paper"], default="code",
                   help="code: raw quality - lambda ((d - 1) / d_max)^2, the authors' code; paper: "
                        "q - lambda (d / d_max)^2, the paper's text (default code)")
    c.add_argument("--lambda", type=_nonneg_float, dest="lam",
                   help="width penalty lambda of the reward, >= 0 (default 0.01 with --reward code, 0.4 with "
                        "--reward paper)")
    c.add_argument("--schedule", choices=["reduced", "paper"], default="reduced",
                   help="reduced: 6 episodes x 5 iterations, 3 epochs each (--training epochs), l = 1, "
                        "reference and retraining capped at 100 epochs (a 2-core CPU); paper: 30 x 10, the "
                        "authors' per-iteration batches (--training official), l = 3, 300 epochs "
                        "(default reduced)")
    c.add_argument("--episodes", type=_positive_int, help="episodes M (overrides the schedule)")
    c.add_argument("--iterations", type=_positive_int, help="iterations per episode T (overrides the schedule)")
    c.add_argument("--training", choices=["official", "epochs"],
                   help="per-iteration training: official = the authors' batches of 10,000 users, lr 0.03 "
                        "decayed x0.9 to a floor; epochs = recsize's trainer for --epochs-per-iteration "
                        "(default: the schedule's)")
    c.add_argument("--epochs-per-iteration", type=_positive_int,
                   help="recommender epochs per iteration (--training epochs)")
    c.add_argument("--iteration-batches", type=_positive_int,
                   help="batches per iteration (--training official; default the authors' per backbone: "
                        "LightGCN and MF 2000, NGCF 3000, NeuMF 1500)")
    c.add_argument("--top-l", type=_positive_int, help="masks retrained per budget (overrides the schedule)")
    c.add_argument("--selection", choices=["official", "ndcg", "recsize"], default="official",
                   help="masks per budget: official = top-l by mean raw user quality in the budget's band "
                        "[next budget, budget); ndcg = same bands by validation NDCG@20; recsize = top-l by "
                        "mean q anywhere under the budget (default official)")
    c.add_argument("--exploration", choices=["official", "per-entity"], default="official",
                   help="official: one noise scalar per iteration added after the critic's pick; per-entity: "
                        "an independent draw per user and item before the walk (default official)")
    c.add_argument("--noise", choices=["gaussian", "ou", "uniform"], default="gaussian",
                   help="exploration noise (default gaussian, sigma 6 at d_max 128, scaled by d_max / 128)")
    c.add_argument("--no-rescale", action="store_true",
                   help="keep sigma 6, walk t 5 and the TD3 target noise as at d_max 128 whatever --dim")
    c.add_argument("--state", choices=["official", "recsize"], default="official",
                   help="official: state features in [-1, 1] as the authors' code; recsize: f / f_max, "
                        "d / d_max, q (default official)")
    c.add_argument("--pace", choices=["official", "recsize"], default="official",
                   help="TD3 pace: official = 1 update of 4096 per iteration, critic lr 3e-3, gradient clip "
                        "0.01; recsize = 32 updates of 256, no clip (default official)")
    c.add_argument("--no-random-walk", action="store_true", help="ablation: play the noisy width, no walk")
    c.add_argument("--checkpoint-dir", type=Path, help="checkpoint the search here after every iteration")
    c.add_argument("--resume", action="store_true", help="continue the search in --checkpoint-dir")
    d = s.add_argument_group("DNIS (--method dnis, Chapter 5)")
    d.add_argument("--blocks", type=_positive_int, default=10,
                   help="frequency blocks per table, each with its own row of alpha (default 10 of 10 %%)")
    d.add_argument("--warm-epochs", type=_nonneg_int, default=300,
                   help="cap of the warm start with alpha = 1 (early stopping, lr decay; default 300)")
    d.add_argument("--search-epochs", type=_nonneg_int, default=None,
                   help="cap of the alternating embedding / alpha epochs (early stopping, lr decay; default 300; "
                        "iHAS: epochs of the gate search, default 20)")
    d.add_argument("--derive", choices=["in-place", "prefix-retrain"], default="in-place",
                   help="in-place: prune the trained tables to the budget's bytes (CSR, index included) and "
                        "fine-tune, as the authors; prefix-retrain: widths only, a fresh model retrained to "
                        "the budget's parameters (default in-place)")
    d.add_argument("--prune-by", choices=["weight", "alpha-weight"], default="weight",
                   help="importance of an entry: |E| (the authors' notebook) or |alpha x E| (Hetu) "
                        "(default weight)")
    d.add_argument("--alternation", choices=["zip", "every-batch"], default="zip",
                   help="zip: (training, validation) batch pairs, an epoch ends with the shorter loader, as "
                        "the authors; every-batch: an alpha step after every training batch (default zip)")
    d.add_argument("--lr-decay", type=_positive_float, default=0.1,
                   help="learning-rate factor on a validation plateau, the authors' ReduceLROnPlateau; 1 keeps "
                        "it constant (default 0.1)")
    d.add_argument("--alpha-lr", type=_positive_float, default=0.01, help="SGD learning rate of alpha (default 0.01)")
    d.add_argument("--l1", type=_nonneg_float, default=1e-5, help="lambda of the L1 term on alpha (default 1e-5)")
    d.add_argument("--second-order", action="store_true", help="unrolled (DARTS-style) hypergradient")
    d.add_argument("--min-size", type=_nonneg_int, default=1, help="smallest width of a row (default 1)")
    d.add_argument("--granularity", choices=["row", "block"], default="row",
                   help="widths from the magnitude of every alpha-scaled entry (row, the paper) or one width "
                        "per frequency block (block) (default row)")
    h = s.add_argument_group("iHAS (--method ihas, Chapter 7; --search-epochs counts the gate search)")
    h.add_argument("--clusters", type=_positive_int, default=4, help="K, the number of clusters (default 4)")
    h.add_argument("--gate-blocks", type=_positive_int, default=4,
                   help="gate blocks per field; must divide --dim (default 4)")
    h.add_argument("--route-dim", type=_positive_int, default=2,
                   help="embedding dimensions per field the gate network reads (default 2)")
    h.add_argument("--sparsity-weight", type=_nonneg_float, default=0.0,
                   help="initial Lagrange multiplier lambda_s of the budget (default 0)")
    h.add_argument("--dual-lr", type=_nonneg_float, default=0.002,
                   help="dual ascent step of lambda_s per batch (default 0.002)")
    h.add_argument("--polarisation-weight", type=_nonneg_float, default=0.01,
                   help="final weight lambda_p of the polarisation term (default 0.01)")
    h.add_argument("--cluster-init", choices=["scratch", "search"], default="scratch",
                   help="cluster models start from scratch (recsize's choice) or from the search model's weights "
                        "(default scratch)")
    h.add_argument("--charge", choices=["routing+linear", "embeddings", "routing"], default="routing+linear",
                   help="what the budget counts beyond the cluster tables: the router and the K - 1 extra "
                        "first-order tables (default), nothing, or the router only (inconsistent, to compare)")
    h.add_argument("--layout", choices=["per-cluster", "shared"], default="per-cluster",
                   help="one model per cluster on its own samples (default, the paper) or one shared table that "
                        "each cluster reads through its own widths, trained on every sample")
    h.add_argument("--ctr-file", type=Path, help="a Criteo or Avazu file to use instead of --dataset")
    h.add_argument("--ctr-format", choices=["criteo", "avazu"], default="criteo", help="format of --ctr-file")
    h.add_argument("--max-rows", type=_positive_int, help="read at most this many samples of --ctr-file")
    h.add_argument("--min-count", type=_positive_int, default=1,
                   help="values of --ctr-file seen fewer times share one rare value per field (default 1)")
    m = s.add_argument_group("MagPrune and PEP (--method magprune / pep, Chapter 4; element-wise masks, CSR storage)")
    m.add_argument("--prune-split", choices=list(PRUNE_SPLITS), default="global",
                   help="magprune and dnis: one threshold over all tables (global) or the same fraction of every "
                        "table's budget (per-table) (default global)")
    m.add_argument("--min-item-search", choices=["binary", "all"], default="binary",
                   help="magprune-tois: min_item by the benchmark's binary search on validation (default) or by "
                        "trying every value")
    m.add_argument("--pep-granularity", choices=list(PEP_GRANULARITIES), default="feature_dim",
                   help="pep: one learnable threshold per entry (feature_dim, the authors' default), per row "
                        "(feature), per dimension (dimension) or per table (global)")
    m.add_argument("--pep-init", type=_number, default=-15.0, metavar="S",
                   help="pep: initial threshold logit s, g(s) = sigmoid(s) (default -15, the authors' code)")
    m.add_argument("--pep-scale", type=_positive_float, default=1.0, metavar="G",
                   help="pep: threshold g(s) = G * sigmoid(s), so thresholds stay below G (default 1, the authors' "
                        "code); raise it when the trained |E| outgrow G / 2 and the budget is not reached")
    m.add_argument("--pep-epochs", type=_positive_int, default=300,
                   help="pep: cap on the thresholded training; it stops once the budget is reached (default 300)")
    s.add_argument("--backbone", choices=list(BACKBONES), default="lightgcn")
    s.add_argument("--dataset", choices=DATASET_CHOICES, default="ml-100k")
    s.add_argument("--protocol", choices=list(PROTOCOLS), help=PROTOCOL)
    s.add_argument("--dim", type=_positive_int, default=64, help="full width d_max (default 64)")
    s.add_argument("--epochs", type=_positive_int,
                   help="maximum epochs (default 300; ciess: of the reference and retraining, schedule default)")
    s.add_argument("--batch-size", type=_positive_int, help="mini-batch size (backbone default)")
    s.add_argument("--lr", type=_positive_float, help="Adam learning rate (backbone default)")
    s.add_argument("--weight-decay", type=_nonneg_float, help="Adam weight decay (default 0)")
    s.add_argument("--reg", type=_nonneg_float, help="L2 weight on the batch embeddings (backbone default)")
    s.add_argument("--patience", type=_nonneg_int,
                   help="epochs without improvement before stopping (default 10; ciess: schedule default)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--out", help="write sizes, metrics, memory and history as JSON here")
    s.add_argument("--quiet", action="store_true", help="no progress bars or dataset messages")
    s.add_argument("--verbose", action="store_true", help=VERBOSE)
    p.search_parser = s  # main() checks the budget flags per method with this parser's error()

    e = sub.add_parser("export", help="export saved compact tables for a production library (TorchRec)",
                       description="Turn compact tables saved by CompactEmbedding.save (Appendix A) into one "
                                   "TorchRec table per (role, width bucket), widths rounded up to a multiple of "
                                   "4, with the id -> (bucket, row) index; every row is checked against the "
                                   "compact lookup before the file is written. Serve it sharded with: torchrun "
                                   "--nproc-per-node 2 -m recsize.torchrec_shard OUT. Explained in Appendix A.")
    e.add_argument("--format", choices=["torchrec"], required=True, help="the target library")
    e.add_argument("--out", required=True, help="the export file to write (never overwritten)")
    e.add_argument("--round-to", type=_positive_int, default=4,
                   help="round widths up to a multiple of this (a multiple of 4; default 4)")
    e.add_argument("tables", nargs="+", metavar="ROLE=FILE",
                   help="a saved compact table per embedding role, e.g. user=results/chA1/user.pt")

    book = sub.add_parser("book", help="run the book's chapters, or build the book as HTML")
    bsub = book.add_subparsers(dest="book_command", required=True, metavar="ACTION")
    r = bsub.add_parser("run", help="execute every chapter through papermill and summarise wall times")
    r.add_argument("--full", action="store_true", help="full-run parameters (notebooks/full_run.json)")
    r.add_argument("--out", type=Path, default=Path("results/book"), help="output folder (default results/book)")
    r.add_argument("--chapters", nargs="+", metavar="NAME", help="only these chapters (e.g. ch01_why_size)")
    r.add_argument("--in-place", action="store_true",
                   help="after editing a chapter's text form: sync the pair and store its CI outputs in its .ipynb")
    r.add_argument("--publish", action="store_true",
                   help="with --full: store each chapter's run as the one the book shows (book/published/)")
    b = bsub.add_parser("build", help="build the HTML book (Jupyter Book 1.x) from the chapters in book/_toc.yml",
                        description="Build the HTML book from the chapters of book/_toc.yml without "
                                    "executing them: each page shows the chapter's published full run "
                                    "(book/published/) where it matches the chapter's code, otherwise its "
                                    "stored CI outputs, with a note saying which; warnings are errors. Open "
                                    "OUT/_build/html/index.html. Explained in the README.")
    b.add_argument("--out", type=Path, default=None,
                   help="output folder; the HTML goes to OUT/_build/html (default: book/ of the checkout)")
    b.add_argument("--quiet", action="store_true", help="only warnings and errors from jupyter-book")
    return p


def _cmd_data(args) -> int:
    from .data import fetch, prepare
    if args.data_command == "fetch":
        got = fetch(args.name, offline=args.offline)
        print(f"{args.name}: ready in {got.path} (served by {got.source})")
        return 0
    prepare(args.name, args.protocol, seed=args.seed, verbose=True)
    return 0


def _cmd_train(args) -> int:
    from .backbones import defaults_for
    from .data import prepare
    from .train import TrainConfig, fit
    model_kwargs, train_kwargs = defaults_for(args.backbone)
    for arg, key in (("batch_size", "batch_size"), ("lr", "lr"), ("weight_decay", "weight_decay")):
        if getattr(args, arg) is not None:
            train_kwargs[key] = getattr(args, arg)
    if args.reg is not None:
        model_kwargs["reg"] = args.reg
    config = TrainConfig(epochs=args.epochs, patience=args.patience, seed=args.seed, device=args.device,
                         progress=_progress(args),
                         checkpoint=str(args.checkpoint) if args.checkpoint else None, **train_kwargs)
    split = prepare(args.dataset, args.protocol, seed=args.seed, verbose=not args.quiet)
    _check_memory(args, split, model_kwargs, train_kwargs)
    result = fit(args.backbone, split, args.dim, config, **model_kwargs)
    out = {"backbone": args.backbone, "dataset": args.dataset,
           "protocol": "random-811 over samples" if args.dataset.endswith("-ctr") else args.protocol,
           "dim": args.dim, **result.to_dict()}
    keys = ["recall@20", "ndcg@20", "recall@5", "ndcg@5"] if result.test and "ndcg@20" in result.test \
        else ["auc", "logloss"]
    print(f"{args.backbone} on {args.dataset} ({out['protocol']}, d={args.dim}, seed {args.seed}): "
          f"best epoch {result.best_epoch}, {result.seconds:.1f} s")
    print(metrics_table({"valid": result.valid, "test": result.test}, keys))
    if args.out:
        write_json(out, args.out, "result")
        print(f"metrics written to {args.out}")
    return 0


def _check_floor(flag: str, shown: str, density: float, dim: int, min_size: int, why: str) -> None:
    """A budget must keep ``min_size`` dimensions per row; the message speaks the unit the user typed."""
    if min_size > 0 and density * dim < min_size * (1 - 1e-12):
        lo = min_size / dim
        fix = (f"use --budget >= {math.ceil(lo * 1e4) / 1e4:g}" if flag == "--budget"
               else f"use {flag} <= {math.floor((1 - lo) * 1e4) / 1e4:g}")
        raise ValueError(f"{flag} {shown} keeps {density * dim:.3g} dimensions per row on average at --dim {dim}, "
                         f"fewer than {why}: {fix} (or raise --dim)")


def _floor_fix(flag: str, floor: float) -> str:
    """The smallest budget above ``floor`` (a density) in the user's unit, rounded to 4 decimals."""
    if flag == "--budget":
        return f"use --budget >= {(math.floor(floor * 1e4) + 1) / 1e4:g}"
    return f"use {flag} <= {(math.ceil((1 - floor) * 1e4) - 1) / 1e4:g}"


def _check_index_floor(flag: str, shown: str, density: float, dim: int, shapes=None, split: str = "global") -> None:
    """magprune / pep: every row may keep 0 entries, but the budget must hold the CSR index (one int64 row
    offset per row). Without ``shapes`` (before the data loads) the bound for many rows; with them, exact.
    The message speaks the unit the user typed."""
    from .budget import FLOAT_BYTES, INDEX_BYTES
    from .search.prune import index_floor
    floor = index_floor(dim, shapes, split)
    if shapes is None and density > floor:
        return
    if shapes is not None:
        from .search.prune import element_budget
        try:
            element_budget(shapes, density, split)
            return
        except ValueError:
            pass
    raise ValueError(f"{flag} {shown} leaves {density * dim * FLOAT_BYTES:.3g} B per row at --dim {dim}, not enough "
                     f"for the CSR index ({INDEX_BYTES} B of row offset per row, kept entries or not, "
                     f"{FLOAT_BYTES * dim} B per dense row): {_floor_fix(flag, floor)} (or raise --dim)")


def _check_exact_index_floor(args, split, prune_split: str) -> None:
    """After the data loaded, for element-wise budgets (magprune, pep, dnis in place): the exact CSR-index
    floor of this backbone's tables, in the unit the user typed."""
    from .search.prune import table_shapes
    shown = f"{args.density:g}" if args.budget_flag == "--budget" else f"{1 - args.density:g}"
    _check_index_floor(args.budget_flag, shown, args.density, args.dim,
                       table_shapes(args.backbone, split, args.dim), prune_split)


_METHOD_FLAGS = {  # flags that only one method reads, with their defaults: anything else is a mistake
    "ciess": {"budgets": None, "lam": None, "reward": "code", "schedule": "reduced", "episodes": None,
              "iterations": None, "training": None, "epochs_per_iteration": None, "iteration_batches": None,
              "top_l": None, "selection": "official", "exploration": "official", "noise": "gaussian",
              "no_rescale": False, "state": "official", "pace": "official", "no_random_walk": False,
              "checkpoint_dir": None, "resume": False},
    "dnis": {"blocks": 10, "warm_epochs": 300, "alpha_lr": 0.01, "l1": 1e-5, "second_order": False,
             "derive": "in-place", "prune_by": "weight", "alternation": "zip", "lr_decay": 0.1,
             "prune_split": "global",
             "min_size": 1, "granularity": "row"},
    "ihas": {"clusters": 4, "gate_blocks": 4, "route_dim": 2, "sparsity_weight": 0.0, "dual_lr": 0.002,
             "polarisation_weight": 0.01, "ctr_file": None, "ctr_format": "criteo", "max_rows": None,
             "min_count": 1, "cluster_init": "scratch", "charge": "routing+linear", "layout": "per-cluster"},
    "mde": {"alpha": 0.3},
    "magprune": {"prune_split": "global"},
    "magprune-tois": {"min_item_search": "binary"},
    "pep": {"pep_granularity": "feature_dim", "pep_init": -15.0, "pep_scale": 1.0, "pep_epochs": 300},
}


def _check_search_args(parser, args) -> None:
    """Everything about ``recsize search`` that needs no data, checked before any is loaded: the budget
    flags per method (es / mr / mde / dnis / ihas / magprune / pep need one --budget or --sparsity; ciess
    takes --budgets or one of them), each budget against the smallest width (magprune / pep: against the
    CSR index), flags of other methods, the CTR file and the CIESS checkpoint folder."""
    from .files import check_output_dir, check_output_file
    from .search.prune import PRUNE_METHODS
    for method, flags in _METHOD_FLAGS.items():
        if method == args.method:
            continue
        for name, default in flags.items():
            if name in _METHOD_FLAGS.get(args.method, {}):
                continue                                       # shared by two methods (--prune-split)
            if getattr(args, name) != default:
                owners = " or ".join(m for m, f in _METHOD_FLAGS.items() if name in f)
                raise ValueError(f"--{name.replace('_', '-')} is for --method {owners}, not {args.method}: "
                                 "drop it, or choose that method")
    if args.budget is not None:
        args.density, args.budget_flag, shown = args.budget, "--budget", f"{args.budget:g}"
    elif args.sparsity_density is not None:
        args.density, args.budget_flag, shown = args.sparsity_density, "--sparsity", f"{1 - args.sparsity_density:g}"
    else:
        args.density, args.budget_flag, shown = None, None, None
    if args.method != "ciess":
        if args.density is None:
            parser.error("one of the arguments --budget --sparsity is required")
        min_size, why = ((args.min_size, f"--min-size {args.min_size}") if args.method == "dnis"
                         else (1, "one (every row keeps at least one dimension)"))
        if args.method == "dnis" and args.lr_decay > 1:
            raise ValueError(f"--lr-decay {args.lr_decay:g} would raise the learning rate on a plateau: use a "
                             "factor in (0, 1], e.g. 0.1 (1 keeps it constant)")
        if args.method == "dnis" and args.min_size > args.dim:
            raise ValueError(f"--min-size {args.min_size} exceeds --dim {args.dim}: lower --min-size")
        if args.method in PRUNE_METHODS or (args.method == "dnis" and args.derive == "in-place"):
            _check_index_floor(args.budget_flag, shown, args.density, args.dim)
        elif args.method != "ihas":
            _check_floor(args.budget_flag, shown, args.density, args.dim, min_size, why)
    if args.method == "ihas":
        if args.dim % args.gate_blocks:
            raise ValueError(f"--gate-blocks {args.gate_blocks} must divide --dim {args.dim}: e.g. --gate-blocks "
                             f"{max(d for d in range(1, min(args.dim, 8) + 1) if args.dim % d == 0)}")
        if args.route_dim > args.dim:
            raise ValueError(f"--route-dim {args.route_dim} exceeds --dim {args.dim}: lower --route-dim")
        if args.ctr_file is not None:
            f = args.ctr_file.expanduser()
            if not f.exists():
                raise ValueError(f"--ctr-file {f} does not exist: give the path of a Criteo or Avazu file")
            if not f.is_file() or not os.access(f, os.R_OK):
                raise ValueError(f"--ctr-file {f} is not a readable file: give the path of a Criteo or Avazu file")
            if f.stat().st_size == 0:
                raise ValueError(f"--ctr-file {f} is empty: give a Criteo or Avazu file with samples")
    if args.method != "ciess":
        return
    from .search.ciess import SCHEDULES
    training = args.training or SCHEDULES[args.schedule]["training"]
    if training == "official" and args.epochs_per_iteration is not None:
        raise ValueError("--epochs-per-iteration is for --training epochs; the official training counts "
                         "batches: use --iteration-batches N, or add --training epochs")
    if training == "epochs" and args.iteration_batches is not None:
        raise ValueError(f"--iteration-batches is for --training official (the schedule {args.schedule} trains "
                         "epochs): add --training official, or use --epochs-per-iteration N")
    if args.density is not None and args.budgets is not None:
        parser.error("give --budgets or a single --budget / --sparsity, not both")
    if args.density is not None and args.density >= 1:
        raise ValueError(f"{args.budget_flag} {shown} keeps the full tables: CIESS needs a budget that prunes "
                         f"something, e.g. {'--budget 0.1' if args.budget_flag == '--budget' else '--sparsity 0.9'}")
    if args.budgets is not None:
        seen = set()
        for c in args.budgets:
            if c in seen:
                raise ValueError(f"--budgets repeats {c:g}: give each sparsity once, e.g. --budgets 0.8 0.9 0.95")
            seen.add(c)
            _check_floor("--budgets", f"{c:g}", 1 - c, args.dim, 1, "one (CIESS widths are at least 1)")
        args.ciess_densities = [1 - c for c in args.budgets]
    elif args.density is not None:
        _check_floor(args.budget_flag, shown, args.density, args.dim, 1, "one (CIESS widths are at least 1)")
        args.ciess_densities = [args.density]
    else:
        args.ciess_densities = [0.2, 0.1, 0.05]
    if args.resume and args.checkpoint_dir is None:
        raise ValueError("--resume continues the search saved in --checkpoint-dir: give --checkpoint-dir DIR "
                         "(the folder of the interrupted search)")
    if args.checkpoint_dir is not None:
        from .files import exclusive_folder
        from .search.ciess import CHECKPOINT_NAME, read_checkpoint
        folder = check_output_dir(args.checkpoint_dir, "--checkpoint-dir")
        with exclusive_folder(folder, "--checkpoint-dir"):  # busy with another search: say so now
            pass
        ckpt = folder / CHECKPOINT_NAME
        check_output_file(ckpt, "--checkpoint-dir")  # a FIFO, a symlink, a folder: refused
        if ckpt.exists() and not args.resume:
            raise ValueError(f"{ckpt} holds an earlier search: add --resume to continue it, or use another "
                             "--checkpoint-dir (or delete that file to start over)")
        if ckpt.exists():
            read_checkpoint(ckpt)  # truncated or foreign: say so now, not after the data loaded
            check_output_file(ckpt, "--checkpoint-dir", "zip")  # it will be replaced: recsize's own only
    if args.budgets is None and args.density is None:
        _check_floor("--budgets", "0.95 (a default)", 0.05, args.dim, 1, "one (CIESS widths are at least 1)")


def _check_data_args(args) -> None:
    """``train``, ``search``, ``data info``: CTR data takes no --protocol (it is split 8:1:1 over samples)
    and a CTR backbone, a top-k dataset a top-k backbone; iHAS needs a CTR backbone, CIESS a top-k one.
    Sets the default protocol."""
    from .backbones import CTR_BACKBONES, TOPK_BACKBONES
    name = args.name if args.command == "data" else args.dataset
    ctr_file = getattr(args, "ctr_file", None)
    data = f"--ctr-file {ctr_file}" if ctr_file is not None else name
    ctr = ctr_file is not None or name.endswith("-ctr")
    if ctr and args.protocol not in (None, "random-811"):
        raise ValueError(f"--protocol {args.protocol} splits top-k data; CTR data ({data}) is split random 8:1:1 "
                         "over samples: drop --protocol")
    args.protocol = args.protocol or "random-811"
    if args.command == "data":
        return
    method, backbone = getattr(args, "method", None), args.backbone
    if method == "ihas" and backbone not in CTR_BACKBONES:
        raise ValueError(f"iHAS searches field embeddings of a CTR model: choose --backbone "
                         f"{' or '.join(CTR_BACKBONES)}, not {backbone}")
    if method == "ciess" and backbone not in TOPK_BACKBONES:
        raise ValueError(f"CIESS searches user and item widths of a top-k model: choose --backbone "
                         f"{', '.join(TOPK_BACKBONES)}, not {backbone}")
    if backbone in CTR_BACKBONES and not ctr:
        raise ValueError(f"{backbone} is a CTR backbone: it needs CTR data, e.g. --dataset ml-100k-ctr or "
                         f"synthetic-ctr, not {data}")
    if backbone not in CTR_BACKBONES and ctr:
        topk = name[: -len("-ctr")] if name.endswith("-ctr") and ctr_file is None else "ml-100k"
        raise ValueError(f"{backbone} is a top-k backbone: it needs top-k data, e.g. --dataset {topk}, not {data}")


def _preflight(parser, args) -> None:
    """The checks that need no data, before anything is loaded, built or trained: the device (resolved),
    the data against the protocol and the backbone, every output path, and (``search``) the budgets and
    method flags. Each raises ``ValueError`` naming the flag and the fix."""
    from .files import check_output_dir, check_output_file
    from .train import resolve_device
    if getattr(args, "device", None) is not None:
        try:  # resolved once, here: every method gets the device "auto" stands for
            args.device = str(resolve_device(args.device))
        except ValueError as e:
            raise ValueError(f"--device: {e}") from None
    if args.command in ("train", "search") or getattr(args, "data_command", None) == "info":
        _check_data_args(args)
    if args.command == "book":
        if args.out is not None:
            check_output_dir(args.out, "--out")
        return
    if args.command in ("train", "search") and args.out is not None:
        args.out = check_output_file(args.out, "--out", "json")
    if args.command == "train" and args.checkpoint is not None:
        args.checkpoint = check_output_file(args.checkpoint, "--checkpoint", "zip")
        if args.out is not None and args.checkpoint.resolve() == args.out.resolve():
            raise ValueError("--out and --checkpoint name the same file: give them different names")
    if args.command == "search":
        _check_search_args(parser.search_parser, args)
        if args.method == "dnis" and args.out is not None:
            if args.out.suffix == ".npz":
                raise ValueError(f"--out {args.out}: DNIS writes its arrays to OUT with the suffix .npz, so OUT "
                                 "must not end in .npz: use e.g. --out results/dnis.json")
            check_output_file(args.out.with_suffix(".npz"), "--out (its .npz)", "zip")


def _check_memory(args, split, model_kwargs: dict, train_kwargs: dict, copies: int = 1) -> None:
    """After the data loaded, before any model is built: refuse a run that cannot fit in memory."""
    from .budget import format_bytes
    from .resources import available_memory, check_memory
    from .train import resolve_device
    batch = train_kwargs.get("batch_size", 2048)
    device = resolve_device(args.device)
    need = check_memory(args.backbone, split, args.dim, batch, device, model_kwargs, copies=copies)
    if need["total"] > 2**30 and not args.quiet:
        free = available_memory(device)
        print(f"[recsize] this run needs about {format_bytes(need['total'])} of memory"
              + (f" ({format_bytes(free)} free on {device.type})" if free else ""), file=sys.stderr)


def _cmd_ciess(args, split) -> int:
    from .budget import format_bytes
    from .search.ciess import CIESSConfig, run_ciess
    densities = args.ciess_densities
    overrides = {k: getattr(args, k) for k in ("episodes", "iterations", "training", "epochs_per_iteration",
                                               "iteration_batches", "top_l", "patience")
                 if getattr(args, k) is not None}
    if args.epochs is not None:
        overrides.update(full_epochs=args.epochs, retrain_epochs=args.epochs)
    train_overrides = {k: getattr(args, k) for k in ("batch_size", "lr", "weight_decay") if getattr(args, k) is not None}
    config = CIESSConfig.schedule(args.schedule, budgets=tuple(densities), reward=args.reward, lam=args.lam,
                                  d_max=args.dim, selection=args.selection, exploration=args.exploration,
                                  noise=args.noise, rescale=not args.no_rescale, state=args.state,
                                  pace=args.pace, random_walk=not args.no_random_walk, seed=args.seed,
                                  device=args.device, progress=_progress(args),
                                  train_overrides=train_overrides, **overrides)
    model_kwargs = {"reg": args.reg} if args.reg is not None else {}
    result = run_ciess(args.backbone, split, config, args.checkpoint_dir, args.resume, model_kwargs)
    c = config
    t = result.config["resolved"]["iteration_training"]
    per_iteration = (f"{t['epochs']} epochs" if t["training"] == "epochs"
                     else f"{t['batches']} batches of {t['batch_size']}")
    print(f"CIESS on {args.backbone}, {args.dataset} ({args.protocol}, seed {args.seed}), d_max = {args.dim}, "
          f"reward {c.reward}, lambda = {c.lam}: {c.episodes} episodes x {c.iterations} iterations x "
          f"{per_iteration}, {'random walk' if c.random_walk else 'no walk'}, {c.exploration} {c.noise} noise, "
          f"{c.state} state, {c.pace} TD3 pace, {c.selection} selection; {result.seconds['total']:.0f} s")
    print(f"{'budget':14s}{'Recall@20':>10s}{'NDCG@20':>10s}{'parameters':>12s}{'density':>9s}"
          f"{'compact':>12s}{'dense':>12s}")
    for b in result.budgets.values():
        best = b["best"]
        print(f"{'c = %.1f %%' % (100 * b['sparsity']):14s}{best['test']['recall@20']:>10.4f}"
              f"{best['test']['ndcg@20']:>10.4f}{best['parameters']:>12,}{best['density']:>9.3f}"
              f"{format_bytes(best['compact_bytes']):>12s}{format_bytes(best['dense_bytes']):>12s}"
              f"{'  (projected)' if best['projected'] else ''}")
    print("(test split, best retrained mask per budget chosen on validation; compact: bytes of the compact "
          "tables; projected: no searched mask met the budget, the thinnest one was scaled down to it)")
    if args.out:
        write_json({"dataset": args.dataset, "protocol": args.protocol, **result.to_dict()}, args.out, "result")
        print(f"search, sizes, metrics and memory written to {args.out}")
    return 0


def _cmd_ihas(args) -> int:
    from .backbones import defaults_for
    from .budget import format_bytes
    from .data import prepare, split_ctr
    from .data.ctr_files import read_ctr_file
    from .search.ihas import IHASConfig, run_ihas
    from .train import TrainConfig
    model_kwargs, train_kwargs = defaults_for(args.backbone)
    for arg, key in (("batch_size", "batch_size"), ("lr", "lr"), ("weight_decay", "weight_decay")):
        if getattr(args, arg) is not None:
            train_kwargs[key] = getattr(args, arg)
    if args.reg is not None:
        model_kwargs["reg"] = args.reg
    config = TrainConfig(epochs=args.epochs, patience=args.patience, seed=args.seed, device=args.device,
                         progress=_progress(args), **train_kwargs)
    ihas = IHASConfig(clusters=args.clusters, n_blocks=args.gate_blocks, route_dim=args.route_dim,
                      search_epochs=20 if args.search_epochs is None else args.search_epochs,
                      sparsity_weight=args.sparsity_weight,
                      dual_lr=args.dual_lr, polarisation_weight=args.polarisation_weight,
                      lr=train_kwargs.get("lr", 1e-3), batch_size=train_kwargs.get("batch_size", 2048),
                      cluster_init=args.cluster_init, charge=args.charge, layout=args.layout)
    if args.ctr_file:
        data = read_ctr_file(args.ctr_file, args.ctr_format, args.max_rows, args.min_count)
        split = split_ctr(data, seed=args.seed)
        dataset = f"{args.ctr_file} ({args.ctr_format})"
        if not args.quiet:
            print(split.data)
    else:
        split, dataset = prepare(args.dataset, args.protocol, seed=args.seed, verbose=not args.quiet), args.dataset
    _check_memory(args, split, model_kwargs, train_kwargs, copies=args.clusters + 1)
    run = run_ihas(args.backbone, split, args.density, args.dim, ihas, config, seed=args.seed,
                   progress=_progress(args), **model_kwargs)
    b = run.budget
    shared, K = args.layout == "shared", len(run.sizes)
    print(f"iHAS, K = {args.clusters} ({K} used), density {run.density:.3f} (sparsity c = "
          f"{100 * (1 - run.density):.1f} %), d_max = {args.dim}: {args.backbone} on {dataset} "
          f"(random 8:1:1 over samples, seed {args.seed})")
    print(metrics_table({"valid": run.valid, "test": run.test}, ["auc", "logloss"]))
    print("(every sample routed to its cluster's " + ("widths of the shared table)" if shared else "model)"))
    print(f"\n{'cluster':10s}{'train':>9s}{'test':>8s}{'parameters':>12s}{'compact':>12s}   mean width per field")
    widths = run.field_sizes()
    for k in range(K):
        print(f"{k:<10d}{run.cluster_sizes['train'][k]:>9,}{run.cluster_sizes['test'][k]:>8,}"
              f"{b['cluster_parameters'][k]:>12,}"
              f"{'(reads)' if shared else format_bytes(b['cluster_bytes'][k]):>12s}   "
              + " ".join(f"{w:.0f}" for w in widths[k]))
    if shared:
        print(f"{'shared':10s}{'':17s}{b['stored_parameters']:>12,}{format_bytes(b['cluster_bytes'][0]):>12s}   "
              "one table, every row as wide as its widest cluster")
    r = b["routing_parameters"]
    free = " (not charged)"
    print(f"{'routing':10s}{'':17s}{r['total']:>12,}{format_bytes(b['routing_bytes']):>12s}   "
          f"router table {r['router_table']:,}, gate network {r['gate_network']:,}, centroids {r['centroids']:,}"
          + (f", cluster widths {r['cluster_widths']:,}" if shared else "")
          + ("" if b["charge"] != "embeddings" else free))
    print(f"{'1st order':10s}{'':17s}{r['first_order']:>12,}{format_bytes(b['first_order_bytes']):>12s}   "
          + ("one model, one first-order table (as ES)" if shared
             else f"first-order weights of the {len(run.models) - 1} cluster models beyond one")
          + ("" if b["charge"] == "routing+linear" or shared else free))
    print(f"{'total':10s}{'':17s}{b['total_parameters']:>12,}{format_bytes(b['total_bytes']):>12s}   "
          f"= the budget's {b['target_parameters']:,} (non-embedding parameters, {'one copy' if shared else 'K copies'}: "
          f"{b['non_embedding_parameters']:,})")
    if args.out:
        write_json({"backbone": args.backbone, "dataset": dataset, **run.to_dict()}, args.out, "result")
        print(f"sizes, metrics and budget written to {args.out}")
    return 0


def _cmd_search(args) -> int:
    from .backbones import defaults_for
    from .budget import format_bytes
    from .data import prepare
    from .search import run_baseline
    from .train import TrainConfig
    if args.method == "ciess":
        split = prepare(args.dataset, args.protocol, seed=args.seed, verbose=not args.quiet)
        model_kwargs, train_kwargs = defaults_for(args.backbone)
        if args.reg is not None:
            model_kwargs["reg"] = args.reg
        if args.batch_size is not None:
            train_kwargs["batch_size"] = args.batch_size
        _check_memory(args, split, model_kwargs, train_kwargs, copies=2)  # reference + candidate
        return _cmd_ciess(args, split)
    args.epochs = 300 if args.epochs is None else args.epochs
    args.patience = 10 if args.patience is None else args.patience
    if args.method == "ihas":
        return _cmd_ihas(args)
    model_kwargs, train_kwargs = defaults_for(args.backbone)
    for arg, key in (("batch_size", "batch_size"), ("lr", "lr"), ("weight_decay", "weight_decay")):
        if getattr(args, arg) is not None:
            train_kwargs[key] = getattr(args, arg)
    if args.reg is not None:
        model_kwargs["reg"] = args.reg
    config = TrainConfig(epochs=args.epochs, patience=args.patience, seed=args.seed, device=args.device,
                         progress=_progress(args), **train_kwargs)
    split = prepare(args.dataset, args.protocol, seed=args.seed, verbose=not args.quiet)
    if args.method in ("magprune", "pep", "magprune-tois"):
        return _cmd_prune(args, split, config, model_kwargs, train_kwargs)
    _check_memory(args, split, model_kwargs, train_kwargs, copies=2 if args.method == "dnis" else 1)
    if args.method == "dnis":
        if args.derive == "in-place":
            _check_exact_index_floor(args, split, args.prune_split)
        dnis = _run_dnis(args, split, model_kwargs)
        run = dnis.run
        if args.derive == "in-place":
            return _report_element_run(args, run, f"DNIS in place, by {args.prune_by}, {args.prune_split} split",
                                       _dnis_stages(dnis), dnis)
    else:
        run = run_baseline(args.backbone, split, args.method, args.density, args.dim, config, seed=args.seed,
                           alpha=args.alpha, **model_kwargs)
    result = run.result
    protocol = "random-811 over samples" if args.dataset.endswith("-ctr") else args.protocol
    out = {"backbone": args.backbone, "dataset": args.dataset, "protocol": protocol,
           **(dnis.to_dict() if args.method == "dnis" else run.to_dict())}
    keys = ["recall@20", "ndcg@20", "recall@5", "ndcg@5"] if "ndcg@20" in result.valid else ["auc", "logloss"]
    print(f"{args.method} sizes, density {run.density:.3f} (sparsity c = {100 * (1 - run.density):.1f} %), "
          f"d_max = {args.dim}: {args.backbone} on {args.dataset} ({protocol}, seed {args.seed}): "
          f"best epoch {result.best_epoch}, {result.seconds:.1f} s")
    print(metrics_table({"valid": result.valid, "test": result.test, "compact": run.test_compact}, keys))
    print("(compact: the test split again, with the trained tables converted to compact storage)")
    print(f"\n{'table':10s}{'rows':>9s}{'parameters':>12s}{'mean width':>11s}"
          f"{'dense':>12s}{'masked':>12s}{'compact':>12s}{'compact/dense':>15s}")
    for role, m in run.memory.items():
        print(f"{role:10s}{m['rows']:>9,}{m['parameters']:>12,}{m['density'] * args.dim:>11.1f}"
              f"{format_bytes(m['dense']):>12s}{format_bytes(m['masked']):>12s}{format_bytes(m['compact']):>12s}"
              f"{m['compact'] / m['dense']:>15.3f}")
    if args.method == "dnis":
        print(f"\n{_dnis_stages(dnis)}")
    if args.out:
        write_json(out, args.out, "result")
        print(f"sizes, metrics and memory written to {args.out}")
        if args.method == "dnis":
            dnis.save_arrays(args.out.with_suffix(".npz"))
            print(f"alpha, frequency blocks and widths written to {args.out.with_suffix('.npz')}")
    return 0


def _cmd_prune(args, split, config, model_kwargs: dict, train_kwargs: dict) -> int:
    """magprune / pep after the data loaded: the exact CSR-index floor (in the user's unit), the memory
    estimate, the run, its table and JSON."""
    from .search.prune import PEPConfig, run_magprune, run_pep
    prune_split = {"magprune": args.prune_split, "magprune-tois": "per-table"}.get(args.method, "global")
    _check_exact_index_floor(args, split, prune_split)
    _check_memory(args, split, model_kwargs, train_kwargs, copies=2)  # dense + masked; PEP: V and thresholds
    if args.method == "magprune":
        run = run_magprune(args.backbone, split, args.density, args.dim, config, prune_split, **model_kwargs)
        stages = (f"dense best epoch {run.info['dense']['best_epoch']} ({run.seconds['dense']:.1f} s), fine-tuning "
                  f"best epoch {run.result.best_epoch} ({run.seconds['finetune']:.1f} s)")
        what = f"{prune_split} split"
    elif args.method == "magprune-tois":
        from .search.magprune_tois import run_magprune_tois, tois_stages
        run = run_magprune_tois(args.backbone, split, args.density, args.dim, config, "bytes",
                                args.min_item_search, **model_kwargs)
        stages, what = tois_stages(run), "per table, each row's min_item largest entries kept"
    else:
        pep = PEPConfig(granularity=args.pep_granularity, threshold_init=args.pep_init, scale=args.pep_scale,
                        search_epochs=args.pep_epochs)
        run = run_pep(args.backbone, split, args.density, args.dim, config, pep, **model_kwargs)
        snap = run.info["snapshot"]
        stages = (f"PEP training {run.info['search']['epochs']} epochs ({run.seconds['search']:.1f} s), mask at "
                  f"epoch {snap['epoch']} step {snap['step']}"
                  + ("" if snap["reached"] else " (budget NOT reached: the last state was cut to it by magnitude; "
                     "raise --pep-epochs, --pep-init or --pep-scale)")
                  + f", retraining best epoch {run.result.best_epoch} ({run.seconds['retrain']:.1f} s)")
        what = f"thresholds per {args.pep_granularity}"
    return _report_element_run(args, run, what, stages)


def _dnis_stages(dnis) -> str:
    searched = dnis.search
    return (f"DNIS search {dnis.seconds['search']:.1f} s (warm start {searched.warm['epochs'] if searched.warm else 0} "
            f"epochs, {searched.seconds['warm']:.1f} s; {len(searched.history)} alternating epochs, best "
            f"{searched.best_epoch}), {'fine-tuning' if dnis.derivation['derive'] == 'in-place' else 'retraining'} "
            f"best epoch {dnis.run.result.best_epoch} ({dnis.seconds['retrain']:.1f} s)")


def _report_element_run(args, run, what: str, stages: str, dnis=None) -> int:
    """The table and JSON of an element-wise run (magprune, pep, dnis in place): metrics, CSR bytes."""
    from .budget import format_bytes
    result = run.result
    protocol = "random-811 over samples" if args.dataset.endswith("-ctr") else args.protocol
    keys = ["recall@20", "ndcg@20", "recall@5", "ndcg@5"] if "ndcg@20" in result.valid else ["auc", "logloss"]
    print(f"{args.method} ({what}), {args.density:g} of the dense bytes "
          f"(sparsity c = {100 * (1 - args.density):.1f} %), d_max = {args.dim}: {args.backbone} on {args.dataset} "
          f"({protocol}, seed {args.seed}): {stages}")
    print(metrics_table({"valid": result.valid, "test": result.test, "csr": run.test_compact}, keys))
    print("(csr: the test split again, with the trained tables converted to CSR storage)")
    print(f"\n{'table':10s}{'rows':>9s}{'kept':>10s}{'density':>9s}{'dense':>12s}{'budget':>12s}{'CSR':>12s}"
          f"{'int32 CSR':>12s}{'CSR/dense':>11s}")
    for role, m in run.memory.items():
        print(f"{role:10s}{m['rows']:>9,}{m['parameters']:>10,}{m['density']:>9.3f}{format_bytes(m['dense']):>12s}"
              f"{format_bytes(m['budget_bytes']):>12s}{format_bytes(m['csr']):>12s}"
              f"{format_bytes(m['csr_int32']):>12s}{m['csr'] / m['dense']:>11.3f}")
    print(f"(kept: entries kept, {run.memory['total']['parameters']:,} = what the budget's "
          f"{run.budget['budget_bytes']:,.0f} B hold in CSR form; CSR: {run.memory['total']['csr']:,} B exactly, "
          f"measured {run.memory['total']['csr_measured']:,} B; int32 CSR: the VLDB'24 accounting)")
    if args.out:
        write_json({"backbone": args.backbone, "dataset": args.dataset, "protocol": protocol,
                    **(dnis.to_dict() if dnis is not None else run.to_dict())}, args.out, "result")
        print(f"sizes, metrics and memory written to {args.out}")
        if dnis is not None:
            dnis.save_arrays(args.out.with_suffix(".npz"))
            print(f"alpha, frequency blocks, masks and kept entries written to {args.out.with_suffix('.npz')}")
    return 0


def _run_dnis(args, split, model_kwargs):
    from .search.dnis import DNISConfig, run_dnis
    train_overrides = {k: getattr(args, k) for k in ("batch_size", "lr", "weight_decay") if getattr(args, k) is not None}
    config = DNISConfig(d_max=args.dim, blocks=args.blocks, warm_epochs=args.warm_epochs,
                        search_epochs=300 if args.search_epochs is None else args.search_epochs,
                        alpha_lr=args.alpha_lr, l1=args.l1, second_order=args.second_order,
                        min_size=args.min_size, granularity=args.granularity, derive=args.derive,
                        prune_by=args.prune_by, budget_split=args.prune_split, alternation=args.alternation,
                        lr_decay=args.lr_decay, retrain_epochs=args.epochs,
                        patience=args.patience, seed=args.seed, device=args.device,
                        progress=_progress(args), train_overrides=train_overrides)
    return run_dnis(args.backbone, split, args.density, config, **model_kwargs)


def _export_inputs(specs: list[str], out: Path) -> dict[str, Path]:
    """ROLE=FILE arguments of ``recsize export``, checked before anything is read."""
    files = {}
    for spec in specs:
        role, sep, name = spec.partition("=")
        if not sep or not role.isidentifier() or not name:
            raise ValueError(f"{spec!r}: give each table as ROLE=FILE, e.g. user=results/chA1/user.pt")
        if role in files:
            raise ValueError(f"role {role!r} is given twice")
        files[role] = Path(name).expanduser()
        if files[role].resolve() == out.resolve():
            raise ValueError(f"--out {out} is also the input of role {role!r}: give another --out")
    return files


def _cmd_export(args) -> int:
    from .budget import format_bytes
    from .embedding import CompactEmbedding
    from .torchrec_export import KERNEL_MULTIPLE, export_tables, require_torchrec
    from .files import check_output_file
    out = check_output_file(args.out, "--out", "none")
    if args.round_to % KERNEL_MULTIPLE:
        raise ValueError(f"--round-to {args.round_to}: TorchRec's kernels want widths divisible by "
                         f"{KERNEL_MULTIPLE}; use a multiple of {KERNEL_MULTIPLE}")
    files = _export_inputs(args.tables, out)
    require_torchrec()  # the check below runs every row through TorchRec's collection
    import torch

    from .torchrec_lookup import BucketLookup
    tables = {}
    for role, path in files.items():
        try:
            tables[role] = CompactEmbedding.load(path)
        except ValueError as e:  # torch.load's own reasons run over many lines: one is enough here
            if "\n" not in str(e):
                raise
            raise ValueError(f"{path} is not a compact embedding file (CompactEmbedding.save writes them): "
                             "it could not be read as one") from None
    export = export_tables(tables, round_to=args.round_to)
    with torch.no_grad():
        ids = {role: torch.arange(t.num_rows) for role, t in tables.items()}
        rows = BucketLookup(export)(ids)
        bad = [role for role, t in tables.items() if not torch.equal(rows[role], t(ids[role]))]
    if bad:
        raise RuntimeError(f"the TorchRec lookups of {bad} differ from the compact lookups")
    export.save(out)
    print(f"{'table':16s}{'rows':>10s}{'width':>7s}{'bytes':>12s}")
    for name, weight in export.weights.items():
        print(f"{name:16s}{weight.shape[0]:>10,}{weight.shape[1]:>7d}"
              f"{format_bytes(weight.numel() * weight.element_size()):>12s}")
    compact = sum(t.num_bytes() for t in tables.values())
    print(f"{len(export.weights)} TorchRec tables, {format_bytes(export.num_bytes())} with the index "
          f"(compact: {format_bytes(compact)}); every row equals the compact lookup")
    print(f"written to {out}; serve it sharded: torchrun --nproc-per-node 2 -m recsize.torchrec_shard {out}")
    return 0


def _cmd_book_build(args) -> int:
    from .book import BOOK, BookBuildFailed, build_book
    try:
        index = build_book(args.out or BOOK, quiet=args.quiet)
    except BookBuildFailed as e:
        print(f"recsize book build: {e}", file=sys.stderr)
        return 1
    except (RuntimeError, FileNotFoundError) as e:  # no dev extras, no source checkout
        raise ValueError(str(e)) from None
    print(f"the book is built: open {index}\n(or serve it: python -m http.server -d {index.parent} 8000, "
          f"then http://localhost:8000)")
    return 0


def _interrupted(args, e: KeyboardInterrupt) -> str:
    what = f"stopped by {e.args[0]}" if isinstance(e, Terminated) and e.args else "interrupted"
    if args is None:
        return f"{what} while starting; nothing was done"
    if getattr(args, "checkpoint_dir", None) is not None:
        return (f"{what}; the search in {args.checkpoint_dir} keeps its progress: run the same command with "
                "--resume to continue")
    if getattr(args, "checkpoint", None) is not None:
        return f"{what}; {args.checkpoint} holds the best weights so far (if an epoch finished)"
    if args.command == "book":
        from .book import interrupted_book
        return f"{what}; {interrupted_book(args)}"
    return f"{what}; nothing was written"


def _error_line(args, e: Exception) -> str | None:
    """The one line that reports ``e`` (a user's mistake or a missing resource), or None: a programming
    error keeps its traceback."""
    from .data import CorruptFile, DatasetUnavailable
    if isinstance(e, DatasetUnavailable):
        if getattr(args, "verbose", False) or e.summary == str(e):
            return str(e)
        return f"{e.summary} (run with --verbose to see every attempt)"
    if isinstance(e, (CorruptFile, ValueError, FloatingPointError)):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory: lower --dim or --batch-size, or use a machine with more memory"
    if isinstance(e, OSError) and e.filename is not None:  # else not about a path the user gave
        return f"{e.filename}: {e.strerror}: check the path and its permissions"
    if isinstance(e, RuntimeError) and "out of memory" in str(e).lower():
        return "the device ran out of memory: lower --dim or --batch-size"
    return None


def _run(parser, args) -> int:
    _preflight(parser, args)
    if args.command == "data":
        return _cmd_data(args)
    if args.command == "train":
        return _cmd_train(args)
    if args.command == "search":
        return _cmd_search(args)
    if args.command == "export":
        return _cmd_export(args)
    if args.command == "book" and args.book_command == "build":
        return _cmd_book_build(args)
    from .book import run_book
    try:
        rows = run_book(args.out, full=args.full, only=args.chapters, in_place=args.in_place,
                        publish=args.publish)
    except (RuntimeError, FileNotFoundError) as e:  # no dev extras, no source checkout
        raise ValueError(str(e)) from None
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    """The command line's boundary: a user's mistake (bad value, missing or unwritable file, a device
    this machine lacks, no memory) ends in one line on stderr and exit code 2, before any work where the
    input allows; Ctrl-C, SIGTERM and SIGHUP, from the first instant (torch is imported after the handlers
    are installed), in one line and exit code 130; a closed stdout quietly with 141
    (:mod:`recsize.cli_support`); a programming error keeps its traceback. Explained in Chapter 3."""
    args = None
    with StopSignals(keep_ignoring=argv is None) as stop:
        try:
            try:
                parser = build_parser()                      # imports torch: seconds
                args = parser.parse_args(argv)
                rc = _run(parser, args)
            except SystemExit:                               # argparse: --help, --version, a bad argument
                flush_stdout()
                raise
            except Exception as e:
                line = _error_line(args, e) if args is not None else None
                if line is None:
                    raise
                stop.ignore()
                say(f"recsize {args.command}: error: {line}")
                return 2
            flush_stdout()
            return rc
        except KeyboardInterrupt as e:
            stop.ignore()
            say(f"recsize{'' if args is None else ' ' + args.command}: {_interrupted(args, e)}")
            return INTERRUPTED
        except BrokenPipeError:
            stop.ignore()
            return reader_gone()


if __name__ == "__main__":
    sys.exit(main())
