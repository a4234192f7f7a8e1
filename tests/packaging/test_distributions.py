"""What users install holds everything the runtime reads.

The wheel and the sdist are compared with the source tree: every Python module and package-data file under the
folders that install as `attnserve.*` (`attnserve/`, `models/`, `export/`, `serving/`, `clients/`) must be in both,
so a new sub-package or shim that `pyproject.toml` forgets fails here, not on a user's machine. `twine check`
validates the metadata as PyPI would render it.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import tomllib
from support.installs import REPOSITORY_ROOT

PYPROJECT = tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DATA_PATTERNS = tuple(SETUPTOOLS["package-data"]["*"])


def _runtime_files() -> set[str]:
    """Installed path (`attnserve/serving/python_models/runner_model.py`) of every runtime file of the tree."""
    files: set[str] = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        root = REPOSITORY_ROOT / folder
        for path in root.rglob("*"):
            relative = path.relative_to(root)
            if not path.is_file() or "__pycache__" in relative.parts or path.suffix == ".pyc":
                continue
            if package == "attnserve" and relative.parts[0] in ("models", "export", "serving", "clients"):
                continue  # the mapped folders are walked on their own
            if path.suffix == ".py" or any(fnmatch.fnmatch(path.name, p) for p in PACKAGE_DATA_PATTERNS):
                files.add("/".join([*package.split("."), *relative.parts]))
    return files


def test_every_folder_holding_python_is_a_declared_package() -> None:
    declared = set(SETUPTOOLS["packages"])
    found = {"/".join(f.split("/")[:-1]).replace("/", ".") for f in _runtime_files() if f.endswith(".py")}
    assert found - declared == set(), "folders with Python files that pyproject.toml does not install"


def test_the_wheel_holds_every_runtime_file_and_nothing_else(distributions: tuple[Path, Path]) -> None:
    _, wheel = distributions
    with zipfile.ZipFile(wheel) as archive:
        names = {name for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
    expected = _runtime_files()
    assert "attnserve/serving/python_models/runner_model.py" in expected
    assert sorted(expected - names) == [], "runtime files missing from the wheel"
    assert sorted(names - expected) == [], "files in the wheel that the source tree does not have"


def test_the_sdist_holds_every_runtime_file(distributions: tuple[Path, Path]) -> None:
    sdist, _ = distributions
    with tarfile.open(sdist) as archive:
        members = {"/".join(name.split("/")[1:]) for name in archive.getnames()}
    mapped = {_source_path(f) for f in _runtime_files()}
    assert sorted(mapped - members) == [], "runtime files missing from the sdist"
    assert {"pyproject.toml", "README.md", "LICENSE"} <= members


def _source_path(installed: str) -> str:
    """`attnserve/serving/x.py` -> `serving/x.py`: the sdist keeps the source layout."""
    parts = installed.split("/")
    for depth in (2, 1):
        folder = SETUPTOOLS["package-dir"].get(".".join(parts[:depth]))
        if folder is not None and (depth == 2 or parts[1] not in ("models", "export", "serving", "clients")):
            return "/".join([folder, *parts[depth:]])
    raise AssertionError(f"{installed} maps to no folder")


def test_twine_accepts_the_metadata(distributions: tuple[Path, Path]) -> None:
    command = [sys.executable, "-m", "twine", "check", "--strict", *map(str, distributions)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
