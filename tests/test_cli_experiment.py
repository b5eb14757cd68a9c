"""``recsize experiment list / run / report``: the command line over recsize.experiments (Chapter 8)."""
from __future__ import annotations

from pathlib import Path

import pytest

from recsize.cli import main
from recsize.experiments import list_experiments

EVIDENCE = Path(__file__).resolve().parents[1] / "evidence"


def test_list_names_every_declared_experiment_with_its_stored_cells(capsys):
    assert main(["experiment", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == [e.name for e in list_experiments()]
    assert all(" cells stored" in line for line in out)


def test_report_names_its_experiment_and_prints_the_paired_table(capsys):
    assert main(["experiment", "report", "prune_deepfm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("experiment prune_deepfm, ") and "140 cells migrated" in out
    assert "| 50 % | es-bytes | 0.7848 | 0.7914 | 0.7967 | 0.7909 |  |" in out


def test_run_of_a_complete_experiment_computes_nothing_and_leaves_its_file_alone(capsys):
    path = EVIDENCE / "prune_planted1m.jsonl"
    before = path.read_bytes()
    assert main(["experiment", "run", "prune_planted1m"]) == 0
    assert "0 cells computed" in capsys.readouterr().out
    assert path.read_bytes() == before


@pytest.mark.parametrize("argv, says", [
    (["experiment", "run", "nope"], "unknown experiment 'nope'"),
    (["experiment", "report", "nope"], "unknown experiment 'nope'"),
    (["experiment", "run", "prune_deepfm", "--methods", "xx"], "unknown method xx"),
])
def test_a_mistake_is_one_line_and_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]


def test_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["experiment", "run", "prune_deepfm", "--jobs", "0"])
    assert stop.value.code == 2 and "--jobs" in capsys.readouterr().err
