"""The command line's edges (issue 29): a closed pipe, a signal at any moment (imports included), argparse's
errors and a missing dataset in one line, checks that need no data made before any is loaded, unknown chapter
parameters refused. The pipe and signal cases run the real command in a subprocess."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import recsize.data.sources as sources
from recsize.cli import main
from recsize.params import ParameterError, check_parameters

from conftest import one_line_error

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["train", "--dataset", "synthetic", "--backbone", "mf", "--dim", "8", "--epochs", "1"]


def _spawn(args: list[str], tmp_path: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "RECSIZE_DATA": str(tmp_path / "cache")}
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "recsize.cli", *args], env=env, cwd=ROOT, **kwargs)


def _caught(pid: int) -> int:
    """The signals process ``pid`` catches (Linux: /proc/PID/status, SigCgt); 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _wait_for_handlers(p: subprocess.Popen, limit: float = 0.6) -> None:
    """Until the process catches SIGTERM (its handlers are installed), at most ``limit`` seconds: either
    way the signal that follows lands while torch is still being imported."""
    deadline = time.time() + limit
    while time.time() < deadline and p.poll() is None and not _caught(p.pid) & (1 << (signal.SIGTERM - 1)):
        time.sleep(0.005)


def _stderr_lines(err: bytes) -> list[str]:
    return [line for line in err.decode().splitlines() if line.strip()]


# --- signals -------------------------------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("sig, needle", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "stopped by SIGTERM")])
def test_a_signal_during_the_imports_is_one_line(sig, needle, tmp_path):
    p = _spawn(["data", "info", "synthetic"], tmp_path)
    _wait_for_handlers(p)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    lines = _stderr_lines(err)
    assert p.returncode == 130, err.decode()
    assert len(lines) == 1 and needle in lines[0] and "nothing was" in lines[0], err.decode()
    assert out == b""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("when", ["imports", "training"])
def test_a_burst_of_sigterms_is_one_line(when, tmp_path):
    """SIGTERMs 10 ms apart, while the command starts or while it trains (the first one stops it, the rest
    arrive while it cleans up): one line, exit 130, no traceback, no half-written file."""
    out = tmp_path / "r.json"
    p = _spawn([*TINY_TRAIN[:-2], "--epochs", "100000", "--patience", "100000", "--quiet", "--out", str(out),
                "--checkpoint", str(tmp_path / "m.pt")], tmp_path)
    if when == "imports":
        _wait_for_handlers(p)
    else:
        deadline = time.time() + 120
        while not (tmp_path / "m.pt").exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
    for _ in range(30):
        if p.poll() is not None:
            break
        p.send_signal(signal.SIGTERM)
        time.sleep(0.01)
    _, err = p.communicate(timeout=120)
    lines = _stderr_lines(err)
    assert p.returncode == 130, err.decode()
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0], err.decode()
    assert not out.exists()
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".part")]


def test_handlers_are_restored_after_an_in_process_call(capsys):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    assert main(["data", "info", "synthetic"]) == 0
    assert {s: signal.getsignal(s) for s in before} == before


# --- pipes ---------------------------------------------------------------------------------------------------

def _closed_pipe() -> int:
    """The write end of a pipe whose reader is already gone (as ``| head -1`` after its line)."""
    r, w = os.pipe()
    os.close(r)
    return w


@pytest.mark.parametrize("args", [["data", "info", "synthetic"], ["train", "--help"], ["--version"]])
def test_a_closed_stdout_exits_141_quietly(args, tmp_path):
    w = _closed_pipe()
    try:
        p = _spawn(args, tmp_path, stdout=w)
    finally:
        os.close(w)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 141, err.decode()  # 128 + SIGPIPE, as a shell reports `yes | head -1`
    assert err == b"", err.decode()


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_train_into_a_closed_pipe_leaves_no_half_written_result(unbuffered, tmp_path, monkeypatch):
    """Buffered stdout (a shell's default): the report is written at the end, after the result, which is
    whole. Unbuffered (PYTHONUNBUFFERED=1): the report's first line stops the run, nothing is written."""
    monkeypatch.setenv("PYTHONUNBUFFERED", unbuffered)
    out = tmp_path / "x.json"
    w = _closed_pipe()
    try:
        p = _spawn([*TINY_TRAIN, "--quiet", "--out", str(out)], tmp_path, stdout=w)
    finally:
        os.close(w)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 141, err.decode()
    assert err == b"", err.decode()
    if unbuffered:
        assert not out.exists()
    else:
        assert json.loads(out.read_text())["dim"] == 8
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".part")]


def test_closed_stdout_and_stderr_exit_141(tmp_path):
    """``recsize train ... 2>&1 | head -1``: dataset messages and progress on stderr hit the closed pipe too."""
    w = _closed_pipe()
    try:
        p = _spawn(TINY_TRAIN, tmp_path, stdout=w, stderr=w)
    finally:
        os.close(w)
    p.communicate(timeout=300)
    assert p.returncode == 141


# --- one line ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["train", "--dim", "x"], ["recsize train: error: argument --dim", "recsize train --help"]),
    (["search", "--method", "nope"], ["recsize search: error: argument --method", "recsize search --help"]),
    (["search", "--backbone", "mf"], ["the following arguments are required: --method", "--help"]),
    (["search", "--method", "es", "--dataset", "synthetic"], ["--budget --sparsity is required", "--help"]),
    ([], ["recsize: error: the following arguments are required: COMMAND", "recsize --help"]),
    (["data", "info"], ["recsize data info: error:", "recsize data info --help"]),
    (["train", "--bogus"], ["unrecognized arguments: --bogus", "recsize --help"]),
])
def test_argparse_errors_are_one_line(args, needles, no_work, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    one_line_error(capsys, e.value.code, *needles)


def _no_network(monkeypatch):
    def no_net(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(sources, "_download", no_net)
    monkeypatch.setattr(sources, "_pip_download_recbole", no_net)


def test_a_missing_dataset_is_one_line(monkeypatch, capsys, private_cache):
    _no_network(monkeypatch)
    line = one_line_error(capsys, main([*TINY_TRAIN[:2], "ml-100k", "--quiet"]), "recsize train: error:",
                          "dataset 'ml-100k' is not available", "Fix:", str(private_cache / "ml-100k"),
                          "--verbose")
    assert "official archive" not in line
    one_line_error(capsys, main(["data", "fetch", "ml-100k", "--offline"]), "offline", "local cache", "--verbose")


def test_verbose_lists_every_attempt(monkeypatch, capsys):
    _no_network(monkeypatch)
    assert main(["train", "--dataset", "ml-100k", "--quiet", "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "official archive" in err and "PyPI" in err and "Fix:" in err


# --- checks before any data is loaded ------------------------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["train", "--backbone", "fm", "--dataset", "synthetic"], ["fm is a CTR backbone", "--dataset ml-100k-ctr"]),
    (["train", "--backbone", "mf", "--dataset", "ml-100k-ctr"], ["mf is a top-k backbone", "ml-100k-ctr"]),
    (["search", "--method", "ihas", "--backbone", "deepfm", "--budget", "0.2"],
     ["deepfm is a CTR backbone", "--dataset ml-100k"]),
    (["search", "--method", "ihas", "--backbone", "mf", "--dataset", "ml-100k-ctr", "--budget", "0.2"],
     ["iHAS", "fm or deepfm"]),
    (["search", "--method", "ciess", "--backbone", "fm", "--dataset", "ml-100k-ctr"], ["CIESS", "top-k"]),
    (["search", "--method", "es", "--backbone", "deepfm", "--dataset", "ml-100k", "--budget", "0.2"],
     ["deepfm is a CTR backbone"]),
])
def test_backbone_and_dataset_mismatch_before_loading(args, needles, no_work, capsys):
    one_line_error(capsys, main([*args, "--quiet"]), *needles)


@pytest.mark.parametrize("args", [
    ["train", "--backbone", "fm", "--dataset", "ml-100k-ctr", "--protocol", "temporal-loo", "--quiet"],
    ["search", "--method", "es", "--backbone", "fm", "--dataset", "synthetic-ctr", "--budget", "0.2",
     "--protocol", "ciess-50-25-25", "--quiet"],
    ["data", "info", "ml-100k-ctr", "--protocol", "temporal-loo"],
])
def test_ctr_data_refuses_a_protocol(args, no_work, capsys):
    one_line_error(capsys, main(args), "--protocol", "CTR", "over samples")


def test_ciess_default_budgets_checked_before_the_data(no_work, capsys):
    one_line_error(capsys, main(["search", "--method", "ciess", "--dataset", "synthetic", "--dim", "8"]),
                   "--budgets 0.95 (a default)", "use --budgets <= 0.875")


def test_ctr_data_takes_its_own_protocol(capsys):
    assert main(["data", "info", "synthetic-ctr", "--protocol", "random-811"]) == 0


class _Stop(Exception):
    pass


@pytest.mark.parametrize("args, target", [
    (["train", "--backbone", "mf", "--dataset", "synthetic"], "recsize.train.fit"),
    (["search", "--method", "es", "--backbone", "mf", "--dataset", "synthetic", "--budget", "0.2"],
     "recsize.search.run_baseline"),
    (["search", "--method", "dnis", "--backbone", "mf", "--dataset", "synthetic", "--budget", "0.5"],
     "recsize.search.dnis.run_dnis"),
    (["search", "--method", "ciess", "--backbone", "mf", "--dataset", "synthetic", "--budgets", "0.8"],
     "recsize.search.ciess.run_ciess"),
    (["search", "--method", "ihas", "--backbone", "fm", "--dataset", "synthetic-ctr", "--budget", "0.2"],
     "recsize.search.ihas.run_ihas"),
])
def test_device_auto_is_resolved_once_for_every_method(args, target, monkeypatch, capsys):
    """`--device auto` reaches the run as the device it stands for (iHAS used to crash on "auto")."""
    import importlib
    module, name = target.rsplit(".", 1)
    seen = []

    def record(*a, **k):
        seen.extend(str(getattr(x, "device", x)) for x in (*a, *k.values())
                    if hasattr(x, "device") and isinstance(getattr(x, "device"), str))
        raise _Stop
    monkeypatch.setattr(importlib.import_module(module), name, record)
    with pytest.raises(_Stop):
        main([*args, "--dim", "8", "--quiet", "--device", "auto"])
    import torch
    assert seen and set(seen) == {"cuda" if torch.cuda.is_available() else "cpu"}, seen


# --- chapter parameters --------------------------------------------------------------------------------------

def test_an_unknown_chapter_parameter_is_refused():
    with pytest.raises(ParameterError) as info:
        check_parameters({"seed": 0, "epochs": 3, "sed": 3, "In": [], "Out": {}, "json": json,
                          "check_parameters": check_parameters, "_i1": "x"}, seed="non-negative int",
                         epochs="positive int")
    line = info.value._render_traceback_()
    assert line == ["ParameterError: parameter sed is not a parameter of this chapter (did you mean seed?): "
                    "its parameters are seed, epochs"]


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "afile"
    f.write_text("mine")
    for value in (str(f), str(f / "sub")):
        with pytest.raises(ParameterError, match=r"^parameter out_dir: .* is a file, not a folder"):
            check_parameters({"out_dir": value}, out_dir="path")
    check_parameters({"out_dir": str(tmp_path / "new")}, out_dir="path")
    check_parameters({"benchmark_file": str(f)}, benchmark_file="path")  # an input file is fine
    assert f.read_text() == "mine"


def test_book_run_refuses_unknown_full_run_parameters_before_running(tmp_path):
    from test_book import _fake_notebooks
    nbs = _fake_notebooks(tmp_path / "nbs")
    (nbs / "full_run.json").write_text(json.dumps({"ch02_b": {"sise": 7}}))
    with pytest.raises(ValueError, match=r"ch02_b.*'sise'.*size"):
        from recsize.book import run_book
        run_book(tmp_path / "out", full=True, notebooks=nbs)
    assert not (tmp_path / "out" / "ch01_a.ipynb").exists(), "no chapter ran"


@pytest.mark.notebook
@pytest.mark.parametrize("params, line", [
    ({"sed": 3}, "ParameterError: parameter sed is not a parameter of this chapter (did you mean seed?): its "
                 "parameters are dataset, topk_backbones, ctr_backbones, dim, ctr_dim, epochs, seed, out_dir"),
    ({"out_dir": "AFILE"}, "ParameterError: parameter out_dir: 'AFILE' is a file, not a folder: give a folder "
                           "for the chapter's outputs, e.g. -p out_dir results/run1"),
])
def test_papermill_refuses_a_misspelt_parameter_or_a_file_as_out_dir(params, line, tmp_path, monkeypatch):
    """`papermill notebooks/ch03_backbones.ipynb out.ipynb -p sed 3` used to run the chapter on its defaults."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from recsize.book import NOTEBOOKS
    monkeypatch.setenv("RECSIZE_DATA", str(tmp_path / "cache"))
    afile = tmp_path / "afile"
    afile.write_text("mine")
    params = {k: str(afile) if v == "AFILE" else v for k, v in params.items()}
    with pytest.raises(PapermillExecutionError) as info:
        pm.execute_notebook(str(NOTEBOOKS / "ch03_backbones.ipynb"), str(tmp_path / "out.ipynb"),
                            cwd=str(NOTEBOOKS), parameters=params, progress_bar=False, kernel_name="python3")
    assert info.value.traceback == [line.replace("AFILE", str(afile))]
    assert afile.read_text() == "mine"
