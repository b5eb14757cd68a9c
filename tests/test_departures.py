"""The one list of departures per method (recsize.search.departures) and the chapters that render it."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from recsize.search import ciess, dnis, ihas, prune
from recsize.search.ciess import CIESSConfig
from recsize.search.departures import (AS_THE_AUTHORS, DEPARTURES, NO_PUBLIC_CODE, OURS, Departure, departures,
                                       departures_table)
from recsize.search.dnis import DNISConfig
from recsize.search.magprune_tois import run_magprune_tois
from recsize.search.pep import PEPConfig

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTER_OF = {"pep": "ch04_variable_size", "magprune": "ch04_variable_size", "dnis": "ch05_dnis",
              "magprune-tois": "ch04_variable_size",
              "ciess": "ch06_ciess", "ihas": "ch07_ihas"}
# the repository each method's files were read in (iHAS: none)
AUTHORS = {"dnis": "SJTU-DMTai/AutoSrh", "pep": "ssui-liu/learnable-embed-sizes-for-RecSys",
           "magprune": "chenxing1999/recsys-benchmark", "magprune-tois": "chenxing1999/recsys-benchmark",
           "ciess": "yorkequ98/CIESS"}
FILE = re.compile(r"^([\w.\-/]+\.(py|sh|ipynb|yaml)|main)$")


def test_every_method_has_a_list():
    assert set(DEPARTURES) == {"dnis", "pep", "magprune", "magprune-tois", "ciess", "ihas"}
    for method, rows in DEPARTURES.items():
        assert len(rows) >= 3, method
        assert len({r.point for r in rows}) == len(rows), f"{method}: a design point listed twice"


@pytest.mark.parametrize("method", sorted(DEPARTURES))
def test_every_row_names_the_authors_file_or_says_there_is_none(method):
    for row in departures(method):
        assert row.point and row.paper and row.recsize and row.verdict in (AS_THE_AUTHORS, OURS)
        if method == "ihas":                       # no public implementation exists
            assert row.file is None and row.code == NO_PUBLIC_CODE and row.verdict == OURS
            continue
        assert row.file, f"{method} / {row.point}: the authors' code needs its file"
        for name in row.file.split(", "):
            assert FILE.match(name), f"{method} / {row.point}: {name!r} is not a file of {AUTHORS[method]}"
        if row.verdict == OURS:
            assert row.why, f"{method} / {row.point}: a departure says why"


def test_a_row_cannot_claim_the_authors_without_a_file_or_depart_without_a_reason():
    with pytest.raises(ValueError, match="must name the authors' file"):
        Departure("x", "p", NO_PUBLIC_CODE, None, "r", AS_THE_AUTHORS)
    with pytest.raises(ValueError, match="must say why"):
        Departure("x", "p", "c", "a.py", "r", OURS)
    with pytest.raises(ValueError, match="verdict must be one of"):
        Departure("x", "p", "c", "a.py", "r", "no")
    with pytest.raises(ValueError, match="code cell must say"):
        Departure("x", "p", "something", None, "r", OURS, "why")
    with pytest.raises(ValueError, match="unknown method 'optembed'"):
        departures("optembed")


@pytest.mark.parametrize("method", sorted(DEPARTURES))
def test_table_has_one_row_per_design_point(method):
    lines = departures_table(method).splitlines()
    assert lines[0].startswith("| design point | paper | authors' code | recsize default | departs?")
    assert len(lines) == 2 + len(departures(method))
    for line, row in zip(lines[2:], departures(method)):
        cells = re.split(r"(?<!\\)\|", line)[1:-1]           # escaped pipes stay inside a cell
        assert len(cells) == 5 and cells[0].strip() == row.point
        assert cells[4].strip().startswith("no: as the authors" if row.verdict == AS_THE_AUTHORS else "yes: ours")
        if row.file:
            assert f"(`{row.file}`)" in cells[2]


def test_rows_agree_with_the_defaults_they_name():
    """Where a row quotes a default, it is the code's default."""
    rows = {r.point: r for r in departures("dnis")}
    config = DNISConfig()
    assert config.block_ranking == "per-table" and "ranked per table" in rows["frequency blocks"].recsize
    assert config.alpha_lr == 0.01 and "lr 0.01" in rows["alpha step"].recsize
    assert config.l1 == 1e-5 and rows["L1 on alpha"].recsize == "1e-5"
    assert (config.min_lr, config.search_min_lr) == (1e-6, 1e-5) and "1e-5 search" in rows["lr stop"].recsize
    assert (config.warm_epochs, config.search_epochs) == (300, 300) and "cap 300" in rows["epochs"].recsize
    assert config.alternation == "zip" and config.prune_by == "weight" and config.budget_split == "global"
    assert config.derive == "in-place" and rows["after pruning"].verdict == OURS
    pep_rows = {r.point: r for r in departures("pep")}
    pep = PEPConfig()
    assert (pep.granularity, pep.threshold_init, pep.scale) == ("feature_dim", -15.0, 1.0)
    assert "s0 = -15, scale 1" in pep_rows["threshold"].recsize
    assert pep.threshold_decay == 1e-5 and "1e-5 on the thresholds" in pep_rows["weight decay"].recsize
    tois = {r.point: r for r in departures("magprune-tois")}
    sig = inspect.signature(run_magprune_tois).parameters
    assert sig["accounting"].default == "bytes" and '`accounting="bytes"`' in tois["budget"].recsize
    assert sig["search"].default == "binary" and '`search="binary"`' in tois["min_item search"].recsize
    assert all(r.verdict == AS_THE_AUTHORS for p, r in tois.items() if p in ("threshold", "protected entries",
                                                                          "min_item search", "after pruning"))
    ciess_rows = {r.point: r for r in departures("ciess")}
    c = CIESSConfig()
    for point, name in (("exploration", "exploration"), ("training per iteration", "training"),
                        ("reward", "reward"), ("state", "state"), ("TD3 pace", "pace"), ("selection", "selection")):
        assert f'`{name}="{getattr(c, name)}"`' == ciess_rows[point].recsize, point


@pytest.mark.parametrize("module", [dnis, prune, ciess, ihas])
def test_module_docstrings_point_to_the_list_instead_of_repeating_it(module):
    doc = module.__doc__
    assert "recsize.search.departures" in doc, module.__name__
    assert "Where recsize departs" not in doc and "Where recsize still departs" not in doc


@pytest.mark.parametrize("method", sorted(DEPARTURES))
def test_chapters_render_their_table_from_the_list(method):
    text = (NOTEBOOKS / f"{CHAPTER_OF[method]}.py").read_text()
    if method == "magprune":      # Chapter 4 renders PEP's and MagPrune's tables
        assert 'departures_table("magprune")' in text or 'departures_table("pep")' in text
    else:
        assert f'departures_table("{method}")' in text


@pytest.mark.parametrize("chapter", sorted(set(CHAPTER_OF.values())))
def test_no_hand_written_departures_table_is_left_in_chapters_4_to_7(chapter):
    text = (NOTEBOOKS / f"{chapter}.py").read_text()
    header = re.compile(r"^#\s*\|\s*design point\s*\|", re.IGNORECASE | re.MULTILINE)
    assert not header.search(text), f"{chapter} writes a departures table by hand"
