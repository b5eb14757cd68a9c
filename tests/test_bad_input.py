"""A user's mistakes end in one line on stderr and exit code 2, before any work, with no traceback; a
user's files are never touched (issue 13)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recsize.cli import main
from recsize.files import atomic_save, atomic_write_bytes, file_mode, write_json

from conftest import one_line_error  # noqa: E402  (the no_work / no_model fixtures live there too)

ROOT = Path(__file__).resolve().parents[1]


TRAIN = ["train", "--dataset", "synthetic", "--backbone", "mf", "--dim", "8", "--epochs", "1", "--quiet"]
SEARCH = ["search", "--dataset", "synthetic", "--backbone", "mf", "--dim", "8", "--epochs", "1", "--quiet"]


@pytest.mark.parametrize("device, needle", [
    ("tpu", "'tpu' is not a device name"),
    ("cuda:abc", "'cuda:abc' is not a device name"),
    ("mps", "MPS is not available"),
    ("meta", "not supported"),
])
def test_unknown_or_missing_device(device, needle, no_work, capsys):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    line = one_line_error(capsys, main([*TRAIN, "--device", device]), "--device", needle)
    assert "this machine has cpu" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda(no_work, capsys):
    one_line_error(capsys, main([*TRAIN, "--device", "cuda:1"]), "CUDA is not available")


def test_out_is_a_directory(tmp_path, no_work, capsys):
    one_line_error(capsys, main([*TRAIN, "--out", str(tmp_path)]), "--out", "is a directory")


def test_out_under_a_file(tmp_path, no_work, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    one_line_error(capsys, main([*TRAIN, "--out", str(f / "r.json")]), "--out", "is a file, not a folder")
    assert f.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_out_not_writable(tmp_path, no_work, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_line_error(capsys, main([*TRAIN, "--out", str(ro / "r.json")]), "--out", "not writable")
    finally:
        ro.chmod(0o700)


def test_out_not_writable_is_checked_by_trying(tmp_path, no_work, capsys, monkeypatch):
    """A folder the permission bits allow but the file system refuses (read-only mount) is caught too."""
    import recsize.files as files
    real = files.tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == tmp_path:
            raise PermissionError(13, "Read-only file system")
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    one_line_error(capsys, main([*TRAIN, "--out", str(tmp_path / "r.json")]), "--out", "not writable")


def test_checkpoint_and_out_the_same(tmp_path, no_work, capsys):
    p = str(tmp_path / "x")
    one_line_error(capsys, main([*TRAIN, "--out", p, "--checkpoint", p]), "same file")


def test_ctr_file_missing(tmp_path, no_work, capsys):
    one_line_error(capsys, main(["search", "--method", "ihas", "--backbone", "fm", "--budget", "0.2", "--quiet",
                                 "--ctr-file", str(tmp_path / "nope.txt")]), "--ctr-file", "does not exist")


def test_ctr_file_empty_or_a_folder(tmp_path, no_work, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    base = ["search", "--method", "ihas", "--backbone", "fm", "--budget", "0.2", "--quiet", "--ctr-file"]
    one_line_error(capsys, main([*base, str(empty)]), "is empty")
    one_line_error(capsys, main([*base, str(tmp_path)]), "not a readable file")


@pytest.mark.parametrize("args, needles", [
    (["--budgets", "0.999"], ["--budgets 0.999", "use --budgets <= 0.875"]),
    (["--budgets", "0.5", "0.5"], ["--budgets repeats 0.5"]),
    (["--sparsity", "0"], ["--sparsity 0 keeps the full tables", "--sparsity 0.9"]),
    (["--budget", "1"], ["--budget 1 keeps the full tables", "--budget 0.1"]),
    (["--budget", "0.01"], ["--budget 0.01", "use --budget >= 0.125"]),
    (["--resume"], ["--resume", "--checkpoint-dir"]),
])
def test_ciess_budgets_in_the_users_unit(args, needles, no_work, capsys):
    line = one_line_error(capsys, main([*SEARCH, "--method", "ciess", *args]), *needles)
    assert "density" not in line or "--budget " in line


def test_ciess_budgets_zero_rejected_by_argparse(no_work, capsys):
    with pytest.raises(SystemExit) as e:
        main([*SEARCH, "--method", "ciess", "--budgets", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --budgets" in err and "strictly between 0 and 1" in err and "%%" not in err


@pytest.mark.parametrize("method, args, needles", [
    ("dnis", ["--budget", "0.05", "--derive", "prefix-retrain"],
     ["--budget 0.05", "--min-size 1", "use --budget >= 0.125"]),
    ("dnis", ["--sparsity", "0.95", "--min-size", "2", "--derive", "prefix-retrain"],
     ["--sparsity 0.95", "use --sparsity <= 0.75"]),
    ("dnis", ["--budget", "0.05"], ["--budget 0.05", "CSR index", "use --budget >= 0.2501"]),
    ("dnis", ["--budget", "0.5", "--lr-decay", "2"], ["--lr-decay 2", "(0, 1]"]),
    ("dnis", ["--budget", "0.5", "--min-size", "9"], ["--min-size 9 exceeds --dim 8"]),
    ("es", ["--sparsity", "0.999"], ["--sparsity 0.999", "use --sparsity <= 0.875"]),
    ("mde", ["--budget", "0.001"], ["--budget 0.001"]),
    ("es", ["--budget", "0.5", "--checkpoint-dir", "x"], ["--checkpoint-dir is for --method ciess"]),
    ("mde", ["--budget", "0.5", "--clusters", "3"], ["--clusters is for --method ihas"]),
    ("es", ["--budget", "0.5", "--alpha", "0.5"], ["--alpha is for --method mde"]),
])
def test_search_budgets_and_flags_checked_before_the_data(method, args, needles, no_work, capsys):
    one_line_error(capsys, main([*SEARCH, "--method", method, *args]), *needles)


def test_ihas_gate_blocks_checked_before_the_data(no_work, capsys):
    one_line_error(capsys, main(["search", "--method", "ihas", "--backbone", "fm", "--dataset", "ml-100k-ctr",
                                 "--budget", "0.2", "--gate-blocks", "3", "--quiet"]),
                   "--gate-blocks 3 must divide --dim 64")


def test_dnis_out_must_not_be_npz(tmp_path, no_work, capsys):
    one_line_error(capsys, main([*SEARCH, "--method", "dnis", "--budget", "0.5", "--out", str(tmp_path / "r.npz")]),
                   "must not end in .npz")


def test_seed_out_of_range_names_the_flag(capsys):
    for seed in ("-1", str(2**32)):
        with pytest.raises(SystemExit) as e:
            main([*TRAIN, "--seed", seed])
        assert e.value.code == 2
        assert "argument --seed" in capsys.readouterr().err


def test_memory_estimate_refuses_before_a_model_is_built(no_model, capsys, monkeypatch):
    import recsize.resources as resources
    monkeypatch.setattr(resources, "available_memory", lambda device="cpu": 2 * 2**30)
    line = one_line_error(capsys, main(["train", "--dataset", "synthetic", "--backbone", "lightgcn",
                                        "--dim", "100000", "--quiet"]), "--dim 100000", "needs about")
    assert "2.0 GiB free" in line and "lower --dim" in line


def test_memory_estimate_grows_with_width_and_batch(tiny_split):
    from recsize.resources import training_memory
    small = training_memory("lightgcn", tiny_split, 8, 1024)
    wide = training_memory("lightgcn", tiny_split, 800, 1024)
    assert wide["parameters"] == 100 * small["parameters"]
    assert wide["total"] > 50 * small["total"]
    # a batch larger than the training set is one batch: no bigger than the whole set
    n = int(tiny_split.train.nnz)
    assert training_memory("mf", tiny_split, 8, 10**9) == training_memory("mf", tiny_split, 8, n)
    assert training_memory("mf", tiny_split, 8, n)["activations"] > training_memory("mf", tiny_split, 8, 1)[
        "activations"]


def test_memory_estimate_is_refused_for_a_huge_batch_of_a_ctr_model(no_model, capsys, monkeypatch):
    import recsize.resources as resources
    monkeypatch.setattr(resources, "available_memory", lambda device="cpu": 2**20)
    line = one_line_error(capsys, main(["train", "--dataset", "synthetic-ctr", "--backbone", "deepfm",
                                        "--dim", "64", "--batch-size", "1000000", "--quiet"]), "needs about")
    assert "--batch-size" in line


# -- the CIESS checkpoint --------------------------------------------------------------------------------
CIESS_TINY = [*SEARCH, "--method", "ciess", "--budgets", "0.5", "--episodes", "1", "--iterations", "2",
              "--epochs-per-iteration", "1", "--top-l", "1"]


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint", b"PK\x03\x04truncated zip"])
def test_resume_from_a_truncated_or_garbage_checkpoint(tmp_path, content, no_work, capsys):
    (tmp_path / "ciess.pt").write_bytes(content)
    line = one_line_error(capsys, main([*CIESS_TINY, "--checkpoint-dir", str(tmp_path), "--resume"]),
                          str(tmp_path / "ciess.pt"), "not a readable CIESS checkpoint", "delete it")
    assert "UnpicklingError" not in line or "truncated" in line
    assert (tmp_path / "ciess.pt").read_bytes() == content


def test_resume_from_a_foreign_torch_file(tmp_path, no_work, capsys):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "ciess.pt")
    one_line_error(capsys, main([*CIESS_TINY, "--checkpoint-dir", str(tmp_path), "--resume"]),
                   "not a CIESS checkpoint")


def test_checkpoint_with_pickled_code_is_refused(tmp_path, no_work, capsys):
    """weights_only=True: a checkpoint that would run code on load is not read."""
    torch.save({"identity": {}, "state": {}, "agents": {}, "buffers": {}, "rng": {"f": len}},
               tmp_path / "ciess.pt")
    one_line_error(capsys, main([*CIESS_TINY, "--checkpoint-dir", str(tmp_path), "--resume"]),
                   "not a readable CIESS checkpoint")


def test_existing_checkpoint_without_resume(tmp_path, no_work, capsys):
    (tmp_path / "ciess.pt").write_bytes(b"x")
    one_line_error(capsys, main([*CIESS_TINY, "--checkpoint-dir", str(tmp_path)]), "add --resume")


def test_checkpoint_dir_is_a_file(tmp_path, no_work, capsys):
    f = tmp_path / "f"
    f.write_text("mine")
    one_line_error(capsys, main([*CIESS_TINY, "--checkpoint-dir", str(f)]), "--checkpoint-dir", "is a file")
    assert f.read_text() == "mine"


def test_two_processes_on_one_checkpoint_dir(tmp_path):
    from recsize.files import exclusive_folder
    with exclusive_folder(tmp_path, "--checkpoint-dir"):
        code = ("import sys; from recsize.files import exclusive_folder\n"
                "try:\n"
                f"    with exclusive_folder({str(tmp_path)!r}, '--checkpoint-dir'): sys.exit(0)\n"
                "except ValueError as e: print(e); sys.exit(3)")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert p.returncode == 3, p.stderr
        assert f"pid {os.getpid()}" in p.stdout and "another recsize process" in p.stdout
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ciess_checkpoint_loads_with_weights_only(tmp_path, capsys):
    assert main([*CIESS_TINY, "--checkpoint-dir", str(tmp_path)]) == 0
    saved = torch.load(tmp_path / "ciess.pt", weights_only=True)
    assert saved["state"]["done"] == 2
    capsys.readouterr()
    assert main([*CIESS_TINY, "--checkpoint-dir", str(tmp_path), "--resume"]) == 0


# -- files: permissions, atomicity, best-so-far checkpoints ----------------------------------------------
def test_written_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json({"a": 1}, tmp_path / "a.json")
        atomic_write_bytes(tmp_path / "b.bin", b"x")
        atomic_save({"t": torch.zeros(1)}, tmp_path / "c.pt")
        for name in ("a.json", "b.bin", "c.pt"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
        os.umask(0o077)
        write_json({"a": 1}, tmp_path / "d.json")
        assert (tmp_path / "d.json").stat().st_mode & 0o777 == 0o600
        assert file_mode() == 0o600
    finally:
        os.umask(old)


def test_cli_results_are_group_readable(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out, ckpt = tmp_path / "r.json", tmp_path / "m.pt"
        assert main([*TRAIN, "--out", str(out), "--checkpoint", str(ckpt)]) == 0
        assert out.stat().st_mode & 0o777 == 0o644 and ckpt.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_train_checkpoint_keeps_the_best_so_far_during_training(tmp_path, monkeypatch, capsys):
    """Interrupted after the second epoch: the checkpoint already holds the best weights so far."""
    import recsize.train as train_module
    ckpt = tmp_path / "m.pt"
    seen = []
    real = train_module.evaluate_topk

    def evaluate_then_stop(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(ckpt.exists())
        if len(seen) == 3:
            raise KeyboardInterrupt
        return out
    monkeypatch.setattr(train_module, "evaluate_topk", evaluate_then_stop)
    rc = main(["train", "--dataset", "synthetic", "--backbone", "mf", "--dim", "8", "--epochs", "5", "--quiet",
               "--checkpoint", str(ckpt)])
    assert rc == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and str(ckpt) in err and "Traceback" not in err
    # calls: the metric check before training, epoch 1, epoch 2 (interrupted there)
    assert seen == [False, False, True]  # written after epoch 1's validation, long before the end
    saved = torch.load(ckpt, weights_only=False)
    assert saved["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_sigterm_cleans_up_and_says_one_line(tmp_path):
    """SIGTERM in the middle of a run: one line, exit 130, no half-written file."""
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "recsize.cli", "train", "--dataset", "synthetic", "--backbone",
                          "lightgcn", "--dim", "8", "--epochs", "100000", "--patience", "100000", "--quiet",
                          "--out", str(out), "--checkpoint", str(tmp_path / "m.pt")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 120
    while not (tmp_path / "m.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not out.exists()
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".part")]


def test_a_users_out_file_survives_a_failed_run(tmp_path, capsys):
    out = tmp_path / "mine.json"
    out.write_text(json.dumps({"mine": True}))
    rc = main([*TRAIN, "--device", "tpu", "--out", str(out)])
    assert rc == 2
    assert json.loads(out.read_text()) == {"mine": True}


# -- more bad inputs, found by trying (issue 13's "twenty more") -------------------------------------------
@pytest.mark.parametrize("args", [["--lr", "inf"], ["--lr", "nan"], ["--weight-decay", "inf"], ["--reg", "nan"]])
def test_non_finite_numbers(args, no_work, capsys):
    with pytest.raises(SystemExit) as e:
        main([*TRAIN, *args])
    assert e.value.code == 2
    assert f"argument {args[0]}: expected a finite number" in capsys.readouterr().err


def test_non_finite_lambda(no_work, capsys):
    with pytest.raises(SystemExit):
        main([*SEARCH, "--method", "ciess", "--lambda", "inf"])
    assert "argument --lambda: expected a finite number" in capsys.readouterr().err


def test_data_root_is_a_file(tmp_path, monkeypatch, capsys):
    f = tmp_path / "data"
    f.write_text("mine")
    monkeypatch.setenv("RECSIZE_DATA", str(f))
    one_line_error(capsys, main(["data", "fetch", "ml-100k", "--offline"]), str(f), "is a file, not a folder")
    assert f.read_text() == "mine"


def test_out_that_is_not_a_result_is_never_overwritten(tmp_path, no_work, capsys):
    mine = tmp_path / "notes.md"
    mine.write_text("# my notes\n")
    one_line_error(capsys, main([*TRAIN, "--out", str(mine)]), "not written by recsize", "does not overwrite")
    pt = tmp_path / "weights.pt"
    pt.write_text("not a checkpoint")
    one_line_error(capsys, main([*TRAIN, "--checkpoint", str(pt)]), "--checkpoint", "does not overwrite")
    npz = tmp_path / "r.npz"
    npz.write_text("mine")
    one_line_error(capsys, main([*SEARCH, "--method", "dnis", "--budget", "0.5", "--out", str(tmp_path / "r.json")]),
                   "--out (its .npz)", "does not overwrite")
    assert mine.read_text() == "# my notes\n" and pt.read_text() == "not a checkpoint" and npz.read_text() == "mine"


def test_an_earlier_result_is_replaced(tmp_path, capsys):
    out = tmp_path / "r.json"
    write_json({"old": True}, out, "result")          # an earlier result: it carries recsize's marker
    assert main([*TRAIN, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["backbone"] == "mf"


def test_ctr_file_with_one_label_is_refused_before_training(tmp_path, no_model, capsys):
    rows = ["\t".join(["1"] + ["3"] * 13 + ["a"] * 26) for _ in range(50)]
    f = tmp_path / "clicks.txt"
    f.write_text("\n".join(rows) + "\n")
    one_line_error(capsys, main(["search", "--method", "ihas", "--backbone", "fm", "--budget", "0.2", "--quiet",
                                 "--ctr-file", str(f)]), "have label 1", "--max-rows")


def test_auc_message_says_what_to_do():
    from recsize.metrics import auc
    with pytest.raises(ValueError, match="only label 1 in 3 samples: evaluate on more samples"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    import errno
    import recsize.files as files

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.json, "dump", full)
    with pytest.raises(OSError) as e:
        write_json({"a": 1}, tmp_path / "r.json")
    assert e.value.filename == str(tmp_path / "r.json") and e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_os_errors_at_the_boundary_are_one_line(tmp_path, monkeypatch, capsys):
    import errno
    import recsize.cli.commands as commands  # where `recsize train` writes its result

    def full(obj, path, *kind):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(commands, "write_json", full)
    line = one_line_error(capsys, main([*TRAIN, "--out", str(tmp_path / "r.json")]), "No space left on device")
    assert str(tmp_path / "r.json") in line


def test_a_second_search_on_a_busy_checkpoint_dir_is_refused(tmp_path, capsys):
    """Another process holds the folder (simulated by a lock held here): the CLI refuses before the data."""
    from recsize.files import exclusive_folder
    with exclusive_folder(tmp_path, "--checkpoint-dir"):
        rc = main([*CIESS_TINY, "--checkpoint-dir", str(tmp_path)])
    one_line_error(capsys, rc, "another recsize process", f"pid {os.getpid()}", str(tmp_path))
    assert not (tmp_path / "ciess.pt").exists()
