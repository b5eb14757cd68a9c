"""pyproject.toml, environment.yml, the README's test command and the CI script agree."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(spec: str) -> tuple[str, str]:
    """'numpy>=1.24' -> ('numpy', '>=1.24'); conda's 'numpy >=1.24' and pip's 'numpy>=1.24' alike."""
    m = REQ.match(spec)
    assert m, f"cannot parse requirement {spec!r}"
    return normalise(m.group(1)), m.group(2).replace(" ", "")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in entries:
            if spec.startswith("-"):  # '-e .' and pip options
                continue
            name, bound = parse(spec)
            assert name not in out, f"{name} is listed twice in environment.yml"
            out[name] = bound
    return out


def test_parsers():
    assert parse("scikit-learn>=1.3") == ("scikit-learn", ">=1.3")
    assert parse("scikit_learn >=1.3") == ("scikit-learn", ">=1.3")
    assert parse("pip") == ("pip", "")


@pytest.mark.parametrize("group", ["dependencies", "dev"])
def test_environment_yml_matches_pyproject(group):
    project = pyproject()["project"]
    specs = project["dependencies"] if group == "dependencies" else project["optional-dependencies"]["dev"]
    env = environment()
    assert specs
    for spec in specs:
        name, bound = parse(spec)
        assert name in env, f"{name} ({group} in pyproject.toml) is missing from environment.yml"
        assert env[name] == bound, f"{name}: pyproject.toml says {bound!r}, environment.yml says {env[name]!r}"


def test_python_version_matches():
    requires = pyproject()["project"]["requires-python"].replace(" ", "")
    assert environment()["python"] == requires


def test_environment_installs_the_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip


def test_readme_test_command_matches_ci():
    """.ci/run runs the README's test command (the two must stay in sync)."""
    readme, ci = ROOT / "README.md", ROOT / ".ci" / "run"
    if not readme.exists() or not ci.exists():
        pytest.skip("README.md or .ci/run not present")
    commands = [ln.strip() for ln in readme.read_text().splitlines() if ln.strip().endswith("pytest -q")]
    assert len(commands) == 1, f"expected one test command ending in 'pytest -q' in README.md, got {commands}"
    ci_lines = [ln.strip() for ln in ci.read_text().splitlines() if not ln.strip().startswith("#")]
    assert commands[0] in ci_lines, f".ci/run does not run the README's test command {commands[0]!r}"
