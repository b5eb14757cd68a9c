"""The checks of ``recsize`` that run before the work: those that need no data (the device, the data
against the protocol and the backbone, every output path, the budgets and method flags of ``search``,
each before anything is loaded) and those after the data loaded (the exact CSR-index floor, the memory a
run needs). Each raises ``ValueError`` naming the flag and the fix, in the unit the user typed. Explained
in Chapter 3 (the command line); the budgets in Chapter 4."""
from __future__ import annotations

import math
import os
import sys


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
    from ..budget import FLOAT_BYTES, INDEX_BYTES
    from ..search.prune import index_floor
    floor = index_floor(dim, shapes, split)
    if shapes is None and density > floor:
        return
    if shapes is not None:
        from ..search.prune import element_budget
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
    from ..search.prune import table_shapes
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
    from ..files import check_output_dir, check_output_file
    from ..search.prune import PRUNE_METHODS
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
    from ..search.ciess import SCHEDULES
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
        from ..files import exclusive_folder
        from ..search.ciess import CHECKPOINT_NAME, read_checkpoint
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
    from ..backbones import CTR_BACKBONES, TOPK_BACKBONES
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
    from ..files import check_output_dir, check_output_file
    from ..train import resolve_device
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
    from ..budget import format_bytes
    from ..resources import available_memory, check_memory
    from ..train import resolve_device
    batch = train_kwargs.get("batch_size", 2048)
    device = resolve_device(args.device)
    need = check_memory(args.backbone, split, args.dim, batch, device, model_kwargs, copies=copies)
    if need["total"] > 2**30 and not args.quiet:
        free = available_memory(device)
        print(f"[recsize] this run needs about {format_bytes(need['total'])} of memory"
              + (f" ({format_bytes(free)} free on {device.type})" if free else ""), file=sys.stderr)
