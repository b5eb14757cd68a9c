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
    recsize experiment list / run NAME / report NAME   (Chapter 8: the stored grids, evidence/NAME.jsonl)
    recsize book run --out results/book       (README: every chapter through papermill)
    recsize book build                        (README: the HTML book in book/_build/html)

The package, by command (each module imports only those below it):

    __init__.py   main: the boundary (one-line errors, signals, closed pipes) and the dispatch
    search.py     recsize search: every method's run and table (Chapters 4 to 7)
    commands.py   recsize data, train, export, experiment, book
    checks.py     the checks before the work: devices, data, outputs, budgets, method flags, memory
    parser.py     build_parser: every command, flag and help text; the argparse types
    report.py     progress and the metrics tables

At the top its modules import only the standard library, :mod:`recsize.cli_support` and :mod:`recsize.files`
(``import recsize.cli`` does not import torch), so that :func:`main` installs its signal handlers before
torch is imported (:mod:`recsize.cli_support`); the rest is imported inside the functions that need it.
"""
from __future__ import annotations

from ..cli_support import INTERRUPTED, StopSignals, Terminated, flush_stdout, reader_gone, say
from .checks import _preflight
from .commands import _cmd_book_build, _cmd_book_run, _cmd_data, _cmd_experiment, _cmd_export, _cmd_train
from .parser import build_parser
from .report import metrics_table
from .search import _cmd_search

__all__ = ["Terminated", "build_parser", "main", "metrics_table"]


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
        from ..book import interrupted_book
        return f"{what}; {interrupted_book(args)}"
    return f"{what}; nothing was written"


def _error_line(args, e: Exception) -> str | None:
    """The one line that reports ``e`` (a user's mistake or a missing resource), or None: a programming
    error keeps its traceback."""
    from ..data import CorruptFile, DatasetUnavailable
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
    if args.command == "experiment":
        return _cmd_experiment(args)
    if args.command == "book" and args.book_command == "build":
        return _cmd_book_build(args)
    return _cmd_book_run(args)


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
