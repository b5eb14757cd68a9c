"""The ``recsize`` parser: every command, flag and help text, and the argparse types that check a value
where it is typed (a positive integer, a seed, a finite number, a budget in the unit the user typed).
Explained in Chapter 3 (the command line)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from .. import __version__
from ..cli_support import OneLineParser


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
    from ..budget import check_budget
    try:
        return check_budget(_number(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _sparsity(text: str) -> float:
    from ..budget import density_from_sparsity
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


PROTOCOL = "split protocol of top-k data (default random-811; CTR data: random 8:1:1 over samples)"
VERBOSE = "errors in full: e.g. every source tried for a missing dataset"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``recsize`` (every parser a :class:`~recsize.cli_support.OneLineParser`); ``search``'s
    own is kept as ``search_parser`` for the budget checks. Explained in Chapter 3."""
    from ..backbones import BACKBONES
    from ..data import DATASET_CHOICES, DATASETS, PROTOCOLS

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

    from ..search import METHODS
    from ..search.pep import PEP_GRANULARITIES
    from ..search.prune import PRUNE_METHODS, PRUNE_SPLITS
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

    x = sub.add_parser("experiment", help="the experiments the book quotes: list, compute, report",
                       description="Every grid the book and the READMEs quote is an experiment declared once "
                                   "(recsize.experiments.EXPERIMENTS) whose cells are stored one per line in "
                                   "evidence/NAME.jsonl. Explained in Chapter 8.")
    xsub = x.add_subparsers(dest="experiment_command", required=True, metavar="ACTION")
    xsub.add_parser("list", help="every declared experiment and how many of its cells are stored")
    xr = xsub.add_parser("run", help="compute the cells of an experiment still missing from its evidence file "
                                     "(resumable: stop and run again)")
    xr.add_argument("name", metavar="NAME", help="an experiment of `recsize experiment list`")
    xr.add_argument("--seeds", nargs="+", type=_seed, help="only these of its seeds (default: every one)")
    xr.add_argument("--methods", nargs="+", help="only these of its methods (default: every one)")
    xr.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    xr.add_argument("--jobs", type=_positive_int, default=1, help="seeds computed at once, one process each")
    xr.add_argument("--quiet", action="store_true", help="no line per cell")
    xp = xsub.add_parser("report", help="the tables of an experiment's stored cells (every experiment without NAME)")
    xp.add_argument("name", metavar="NAME", nargs="?", help="an experiment of `recsize experiment list`")
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
