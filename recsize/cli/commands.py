"""The commands of ``recsize`` besides ``search``: ``data fetch`` / ``data info``, ``train``, ``export``
(Appendix A) and ``book run`` / ``book build`` (the README). Explained in Chapter 3 (the command line)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..files import write_json
from .checks import _check_memory
from .report import _progress, _settings, metrics_table


def _cmd_data(args) -> int:
    from ..data import fetch, prepare
    if args.data_command == "fetch":
        got = fetch(args.name, offline=args.offline)
        print(f"{args.name}: ready in {got.path} (served by {got.source})")
        return 0
    prepare(args.name, args.protocol, seed=args.seed, verbose=True)
    return 0


def _cmd_train(args) -> int:
    from ..data import prepare
    from ..train import TrainConfig, fit
    model_kwargs, train_kwargs = _settings(args)
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
    from ..budget import format_bytes
    from ..embedding import CompactEmbedding
    from ..torchrec_export import KERNEL_MULTIPLE, export_tables, require_torchrec
    from ..files import check_output_file
    out = check_output_file(args.out, "--out", "none")
    if args.round_to % KERNEL_MULTIPLE:
        raise ValueError(f"--round-to {args.round_to}: TorchRec's kernels want widths divisible by "
                         f"{KERNEL_MULTIPLE}; use a multiple of {KERNEL_MULTIPLE}")
    files = _export_inputs(args.tables, out)
    require_torchrec()  # the check below runs every row through TorchRec's collection
    import torch

    from ..torchrec_lookup import BucketLookup
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
    from ..book import BOOK, BookBuildFailed, build_book
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


def _cmd_book_run(args) -> int:
    from ..book import run_book
    try:
        rows = run_book(args.out, full=args.full, only=args.chapters, in_place=args.in_place,
                        publish=args.publish)
    except (RuntimeError, FileNotFoundError) as e:  # no dev extras, no source checkout
        raise ValueError(str(e)) from None
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _cmd_experiment(args) -> int:
    """``recsize experiment list / run / report`` (:mod:`recsize.experiments.commands`). Explained in
    Chapter 8."""
    from ..experiments import commands
    if args.experiment_command == "list":
        print(commands.cli_list())
        return 0
    if args.experiment_command == "report":
        print(commands.cli_report(args.name))
        return 0
    return commands.cli_run(args.name, seeds=args.seeds, device=args.device, jobs=args.jobs, quiet=args.quiet,
                            methods=args.methods)
