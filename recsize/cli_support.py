"""The command line's process edges: signals, a reader that went away, argparse errors in one line.

Explained in Chapter 3 (the command line). This module imports only the standard library, so that
:func:`recsize.cli.main` can install its signal handlers before torch is imported (that takes seconds):

* SIGINT (Ctrl-C), SIGTERM and SIGHUP raise :class:`KeyboardInterrupt` (:class:`Terminated` for the last
  two) where the process is, so every write in flight cleans up; the first one also makes the process
  ignore the rest, so that a burst of signals cannot interrupt the cleanup or the one line that reports it.
* A closed stdout (``recsize data info ml-100k | head -1``) ends quietly with exit code 141, 128 + SIGPIPE,
  what a shell reports for a tool the closed pipe stopped (``yes | head -1``).
* :class:`OneLineParser` prints an argparse error as one line with a pointer to ``--help``, exit code 2.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))
CLOSED_PIPE = 128 + getattr(signal, "SIGPIPE", 13)   # 141
INTERRUPTED = 130                                     # 128 + SIGINT, whichever signal stopped the run


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the process is so that every write in flight cleans up."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``PROG: error: MESSAGE (see PROG --help)``, exit code 2,
    instead of the usage text and the message (8 lines for ``recsize train``, 40 for ``recsize search``).
    Subparsers are of this class too. Explained in Chapter 3."""

    def error(self, message: str):
        # unrecognized arguments are reported by the top parser, whatever subcommand they follow
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message, file=None):
        # argparse's own swallows OSError: --help or --version into a closed pipe would end with 0, not 141
        if message:
            (file or sys.stderr).write(message)


class StopSignals:
    """Install the handlers of :data:`STOP_SIGNALS` (``with StopSignals():``); restore the previous ones on
    exit. The first signal raises (:class:`Terminated`, or :class:`KeyboardInterrupt` for SIGINT) and
    ignores every later one until :meth:`restore`; with ``keep_ignoring`` a process that a signal stopped
    keeps ignoring them until it exits (the command line's own process: nothing is left to interrupt).
    A signal that the process ignored when it started (``nohup``, a background job) stays ignored; outside
    the main thread nothing is installed. Explained in Chapter 3."""

    def __init__(self, keep_ignoring: bool = False):
        self.keep_ignoring = keep_ignoring
        self.previous: dict = {}
        self.stopped_by: str | None = None

    def _on_signal(self, signum, frame):
        if self.stopped_by is not None:   # a second signal before the first one's SIG_IGN took: ignore it
            return
        self.stopped_by = signal.Signals(signum).name
        self.ignore()
        if signum == getattr(signal, "SIGINT", None):
            raise KeyboardInterrupt
        raise Terminated(self.stopped_by)

    def ignore(self) -> None:
        """Ignore every stop signal from now on (while reporting, cleaning up and restoring)."""
        for sig in self.previous:
            signal.signal(sig, signal.SIG_IGN)

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            try:
                current = signal.getsignal(sig)
                if current == signal.SIG_IGN:
                    continue
                self.previous[sig] = current
                signal.signal(sig, self._on_signal)
            except (ValueError, OSError):  # not the main thread: leave signals alone
                self.previous.pop(sig, None)
                break
        return self

    def restore(self) -> None:
        self.ignore()                      # a signal while the handlers are restored is ignored, not raised
        if self.stopped_by is not None and self.keep_ignoring:
            return
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def __exit__(self, *exc) -> None:
        self.restore()


def say(line: str) -> None:
    """Print one line on stderr; a closed stderr is not an error of its own."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def flush_stdout() -> None:
    """Flush stdout now, where a closed pipe can still be caught (at exit it would be reported by Python)."""
    if sys.stdout is not None:
        sys.stdout.flush()


def reader_gone() -> int:
    """stdout's reader went away (``| head -1``): point stdout, and stderr if it is closed too, at devnull so
    that nothing more is written or reported (the Python documentation's recipe), and return
    :data:`CLOSED_PIPE`. Explained in Chapter 3."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is sys.stderr:
                    stream.flush()
                    continue       # stderr still works: keep it
            except OSError:
                pass
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError, AttributeError):  # not a real file (an in-process caller's capture)
                pass
    finally:
        os.close(devnull)
    return CLOSED_PIPE
