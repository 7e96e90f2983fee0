"""Packaging: the dependency ranges, the constraints files, the CI entry point, ``python -m a3d``,
``a3d --version`` and a light ``import a3d``.

Expectations come from the files themselves (pyproject.toml, constraints.txt,
.ci/constraints-oldest.txt, README.md, .ci/run), read independently of the code under test.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PAIR = ("torch", "torchvision")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(extras: bool = True) -> list[Requirement]:
    """The package's own requirements (core, and every extra's), self-references (a3d[export]) left out."""
    project = PYPROJECT["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    if extras:
        reqs += [Requirement(r) for group in project["optional-dependencies"].values() for r in group]
    return [r for r in reqs if _norm(r.name) != "a3d"]


def _pins(path: Path) -> dict[str, Version]:
    """name -> exact version of a constraints file; every non-comment line must be ``name==version``."""
    pins = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", line)
        assert m, f"{path.name}:{i}: {line!r} is not an exact pin (name==version)"
        assert _norm(m[1]) not in pins, f"{path.name}:{i}: {m[1]} pinned twice"
        pins[_norm(m[1])] = Version(m[2])
    return pins


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------------------
# ranges and constraints


def test_torch_and_torchvision_are_open_ranges():
    """Fails if torch or torchvision is pinned (==, ~=, ===) or capped (<, <=) in the package metadata."""
    reqs = {_norm(r.name): r for r in _requirements(extras=False)}
    for name in PAIR:
        ops = {s.operator for s in reqs[name].specifier}
        assert ops == {">="}, f"{name}: declare a lower bound only, got {reqs[name].specifier}"


def test_no_exact_pins_in_package_metadata():
    """Fails if any declared dependency (core or extra) uses == or ===: exact versions belong in constraints.txt."""
    pinned = [str(r) for r in _requirements() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned


def test_constraints_pin_every_dependency_within_its_range():
    """Fails if constraints.txt misses a declared dependency, pins one loosely, or pins it outside its range."""
    pins = _pins(REPO / "constraints.txt")
    assert "a3d" not in pins
    for r in _requirements():
        assert _norm(r.name) in pins, f"constraints.txt does not pin {r.name}"
        assert r.specifier.contains(pins[_norm(r.name)], prereleases=True), \
            f"constraints.txt pins {r.name}=={pins[_norm(r.name)]}, outside the declared {r.specifier}"


def test_lower_bounds_are_the_oldest_tested_versions():
    """Fails if a lower bound is not the version in .ci/constraints-oldest.txt (the oldest set the suite
    passed with), e.g. a bound lowered without testing or a bound raised past the tested version."""
    oldest = _pins(REPO / ".ci" / "constraints-oldest.txt")
    for r in _requirements():
        lows = [Version(s.version) for s in r.specifier if s.operator == ">="]
        assert len(lows) == 1, f"{r.name}: one >= lower bound expected, got {r.specifier}"
        tested = oldest.get(_norm(r.name))
        assert tested is not None, f".ci/constraints-oldest.txt does not pin {r.name}"
        assert tested.release[:len(lows[0].release)] == lows[0].release, \
            f"{r.name}: lower bound {lows[0]} but the oldest tested version is {tested}"


def test_installed_pair_is_within_the_declared_ranges():
    """Fails if this environment's torch/torchvision fall outside the ranges (local labels such as +cpu ignored)."""
    reqs = {_norm(r.name): r for r in _requirements(extras=False)}
    for name in PAIR:
        assert reqs[name].specifier.contains(Version(metadata.version(name)), prereleases=True)


def test_readme_states_the_declared_lower_bounds():
    """Fails if the README's supported-versions statement disagrees with pyproject's bounds."""
    readme = (REPO / "README.md").read_text()
    for r in _requirements(extras=False):
        if _norm(r.name) in PAIR:
            bound = next(s.version for s in r.specifier)
            assert f"{r.name} >= {bound}" in readme, f"README should state '{r.name} >= {bound}'"
    assert f"Python {PYPROJECT['project']['requires-python'].removeprefix('>=')}+" in readme


# ------------------------------------------------------------------------------------------------
# the README's commands and CI


def _readme_top_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)[1]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_install_commands_use_the_constraints_file():
    """Fails if one of the README's first commands installs without -c constraints.txt."""
    commands = _readme_top_commands()
    installs = [c for c in commands if "pip install" in c]
    assert len(installs) == 2
    assert all("pip install -q -c constraints.txt " in c or "pip install -c constraints.txt " in c for c in installs)


def test_ci_runs_the_readme_test_command_exactly():
    """Fails if .ci/run does not contain, as one line, the README's test command."""
    test_command = [c for c in _readme_top_commands() if "pytest" in c]
    assert len(test_command) == 1
    assert test_command[0] in (REPO / ".ci" / "run").read_text().splitlines()


# ------------------------------------------------------------------------------------------------
# entry points


def test_version_flag_prints_the_package_version(tmp_path):
    """Fails if ``a3d --version`` is missing or prints anything but ``a3d <version of src/a3d/__init__.py>``."""
    init = (REPO / "src" / "a3d" / "__init__.py").read_text()
    version = re.search(r'^__version__ = "([^"]+)"$', init, flags=re.M)[1]
    res = _run("-m", "a3d", "--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == f"a3d {version}\n"
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "a3d.__version__"}


@pytest.mark.parametrize("args", [["--help"], []], ids=["help", "no-args"])
def test_python_m_a3d_is_the_a3d_command(args, tmp_path):
    """Fails if ``python -m a3d`` differs from the ``a3d`` console script (pyproject's [project.scripts])
    in output or exit code, or is missing."""
    module, func = PYPROJECT["project"]["scripts"]["a3d"].split(":")
    script = _run("-c", f"import sys; from {module} import {func}; sys.exit({func}())", *args, cwd=tmp_path)
    as_module = _run("-m", "a3d", *args, cwd=tmp_path)
    assert (as_module.returncode, as_module.stdout, as_module.stderr) == \
        (script.returncode, script.stdout, script.stderr)
    assert as_module.returncode == (2 if not args else 0)
    assert (as_module.stdout + as_module.stderr).startswith("usage: a3d ")


def test_import_is_light_and_subpackages_are_attributes(tmp_path):
    """Fails if ``import a3d`` imports torch, or if ``a3d.models`` / ``a3d.convert`` are unreachable
    after a bare ``import a3d`` (the README's quick tour), or if unknown names stop raising AttributeError."""
    code = ("import sys, a3d\n"
            "assert 'torch' not in sys.modules, 'import a3d imported torch'\n"
            "assert callable(a3d.models.densenet121_3d) and callable(a3d.convert)\n"
            "assert 'models' in dir(a3d) and 'torch' in sys.modules\n"
            "try:\n    a3d.no_such_thing\nexcept AttributeError:\n    pass\n"
            "else:\n    raise SystemExit('a3d.no_such_thing did not raise')\n")
    res = _run("-c", code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr


def test_dicom_reading_works_beside_a_folder_named_dl(tmp_path):
    """Fails if a folder ``dl/`` (or ``DLFCN/``) in the working directory breaks ``import pydicom`` under
    ``python -m``: python-gdcm's gdcm.py tries those Python 2 modules and a namespace package of that
    name has no RTLD_NOW (a3d/__init__.py blocks both names)."""
    (tmp_path / "dl").mkdir()
    (tmp_path / "DLFCN").mkdir()
    code = "import a3d.data.scans.dicom, pydicom, gdcm; print('ok')"
    res = _run("-c", code, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr[-500:]
