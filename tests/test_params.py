"""recsize.params.check_parameters: good values pass, a bad one gives one line naming the parameter; every
chapter checks all of its parameters in the cell after its ``parameters`` cell, and its CI and full-run
values pass; through papermill, a bad value stops the chapter in that cell."""
from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest

from recsize.book import NOTEBOOKS, full_parameters
from recsize.params import KINDS, ParameterError, check_parameters

CHAPTERS = sorted(p.stem for p in NOTEBOOKS.glob("ch*.py"))

SPEC = {"dims": ["positive int"], "epochs": "positive int", "seed": "non-negative int",
        "sparsities": ["sparsity"], "density": "density", "alpha": "number in [0, 1]",
        "lr": "positive number", "l1": "non-negative number", "dataset": "dataset", "protocol": "protocol",
        "backbone": "top-k backbone", "ctr_backbones": ["ctr backbone"], "method": "baseline method",
        "out_dir": "path"}
GOOD = {"dims": [2, 8, 32], "epochs": 5, "seed": 0, "sparsities": [0.8, 0.9, 0.95], "density": 1,
        "alpha": 0.0, "lr": 0.01, "l1": 0, "dataset": "ml-100k", "protocol": "random-811",
        "backbone": "lightgcn", "ctr_backbones": ["fm", "deepfm"], "method": "mde", "out_dir": "results/x"}


def _error(**bad) -> ParameterError:
    with pytest.raises(ParameterError) as info:
        check_parameters({**GOOD, **bad}, **SPEC)
    return info.value


def test_good_values_pass():
    check_parameters(GOOD, **SPEC)
    check_parameters({**GOOD, "dims": (1, 2), "seed": 7, "out_dir": Path("results")}, **SPEC)


@pytest.mark.parametrize("name, value, got", [
    ("dims", "[0]", "the string '[0]'"),
    ("dims", [0], "the list [0], whose item 0 is not a positive integer"),
    ("dims", [2, 8.0], "the list [2, 8.0], whose item 8.0 is not a positive integer"),
    ("dims", [], "the empty list []"),
    ("dims", 8, "the integer 8"),
    ("epochs", 0, "the integer 0"),
    ("epochs", "5", "the string '5'"),
    ("epochs", 5.0, "the number 5.0"),
    ("epochs", True, "True"),
    ("epochs", None, "None"),
    ("seed", -1, "the integer -1"),
    ("sparsities", [0.8, 1.0], "the list [0.8, 1.0], whose item 1.0 is not a sparsity in [0, 1)"),
    ("density", 0, "the integer 0"),
    ("alpha", float("nan"), "the number nan"),
    ("lr", 0.0, "the number 0.0"),
    ("l1", -1e-5, "the number -1e-05"),
    ("dataset", "ml-10m", "the string 'ml-10m'"),
    ("protocol", "random", "the string 'random'"),
    ("backbone", "deepfm", "the string 'deepfm'"),
    ("ctr_backbones", "fm", "the string 'fm'"),
    ("method", "MDE", "the string 'MDE'"),
    ("out_dir", "", "the empty string ''"),
])
def test_each_bad_kind_gives_one_line_naming_the_parameter(name, value, got):
    message = str(_error(**{name: value}))
    assert "\n" not in message
    assert message.startswith(f"parameter {name}: expected "), message
    assert f", got {got}" in message, message
    assert "-p " in message or "-y " in message, "the message shows a valid -p (or -y for a list)"


def test_the_issue_message():
    assert str(_error(dims="[0]")) == (
        "parameter dims: expected a list of positive integers such as [2, 8, 32], got the string '[0]' "
        "(papermill -p passes text: use -y 'dims: [2, 8, 32]')")
    assert str(_error(epochs=0)) == ("parameter epochs: expected a positive integer such as 10, got the "
                                     "integer 0 (e.g. -p epochs 10)")
    assert "one of 'mf', 'neumf', 'ngcf', 'lightgcn'" in str(_error(backbone="gcn"))


def test_examples_in_messages_pass_the_check():
    for kind_name, kind in KINDS.items():
        check_parameters({"x": kind.example, "xs": kind.examples}, x=kind_name, xs=[kind_name])


def test_render_traceback_is_one_line():
    lines = _error(seed=-1)._render_traceback_()
    assert lines == ["ParameterError: parameter seed: expected a non-negative integer such as 0, got the "
                     "integer -1 (e.g. -p seed 0)"]


def test_a_bad_spec_is_the_chapters_bug():
    with pytest.raises(ValueError, match="unknown kind 'positive integer'") as info:
        check_parameters({"epochs": 5}, epochs="positive integer")
    assert not isinstance(info.value, ParameterError)
    with pytest.raises(ValueError, match="list of one kind"):
        check_parameters({"dims": [1]}, dims=["positive int", "sparsity"])
    with pytest.raises(ValueError, match="epochs is not defined"):
        check_parameters({}, epochs="positive int")


# --- the chapters -------------------------------------------------------------------------------------------

def _parameters_and_check(chapter: str) -> tuple[dict, dict]:
    """The defaults of the chapter's parameters cell, and the spec its next cell passes to check_parameters."""
    nb = jupytext.read(NOTEBOOKS / f"{chapter}.py")
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    defaults: dict = {}
    exec(nb.cells[index].source, {}, defaults)  # plain literal assignments
    nxt = nb.cells[index + 1]
    assert nxt.cell_type == "code", f"{chapter}: the cell after the parameters cell checks them"
    calls = [node for node in ast.walk(ast.parse(nxt.source)) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "check_parameters"]
    assert len(calls) == 1, f"{chapter}: the cell after the parameters cell calls check_parameters once"
    call = calls[0]
    assert [ast.unparse(a) for a in call.args] == ["globals()"], chapter
    spec = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return defaults, spec


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_checks_every_parameter_first(chapter):
    defaults, spec = _parameters_and_check(chapter)
    assert list(spec) == list(defaults), f"{chapter}: check every parameter of the parameters cell, in order"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_ci_and_full_run_values_pass(chapter):
    defaults, spec = _parameters_and_check(chapter)
    check_parameters(defaults, **spec)
    full = full_parameters().get(chapter, {})
    assert set(full) <= set(spec), f"{chapter}: full_run.json sets parameters its check cell does not name"
    check_parameters({**defaults, **full}, **spec)


@pytest.mark.notebook
def test_papermill_stops_in_the_check_cell(tmp_path, monkeypatch):
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    monkeypatch.setenv("RECSIZE_DATA", str(tmp_path / "cache"))  # never read: the chapter stops first
    chapter, out_nb, out_dir = "ch01_why_size", tmp_path / "out.ipynb", tmp_path / "results"
    line = ("ParameterError: parameter dims: expected a list of positive integers such as [2, 8, 32], got the "
            "string '[0]' (papermill -p passes text: use -y 'dims: [2, 8, 32]')")
    with pytest.raises(PapermillExecutionError) as info:
        pm.execute_notebook(str(NOTEBOOKS / f"{chapter}.ipynb"), str(out_nb), cwd=str(NOTEBOOKS),
                            parameters={"dims": "[0]", "out_dir": str(out_dir)}, progress_bar=False,
                            kernel_name="python3")
    assert info.value.ename == "ParameterError"
    assert info.value.traceback == [line]
    nb = nbformat.read(out_nb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tags = [c.metadata.get("tags", []) for c in code]
    check = next(i for i, t in enumerate(tags) if "injected-parameters" in t) + 1
    assert "check_parameters(" in code[check].source
    errors = [o for o in code[check].outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].traceback == [line]
    assert all(c.execution_count is None and not c.outputs for c in code[check + 1:]), "no later cell ran"
    assert not out_dir.exists(), "the chapter wrote nothing"
