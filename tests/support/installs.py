"""The package as users get it: an sdist and a wheel built by the standard front end, installed (not editable)
into fresh virtual environments outside the checkout.

`build_distributions` copies the files git would commit (tracked and new, not ignored) to a temporary folder and
runs `python -m build` there: the sdist, then the wheel built *from that sdist*, so a file the sdist forgets fails
the wheel too. The copy matters: setuptools reuses the checkout's `*.egg-info/SOURCES.txt` and `build/` from
earlier installs, which put files into the wheel that a clean clone's build leaves out. `--no-isolation`
uses this environment's setuptools instead of downloading one per build: the same backend, seconds instead of
a pip resolve. `fresh_venv` makes a virtual environment in a temporary folder and installs the wheel into it
with pip, never `-e`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SERVING_IMAGE_REQUIREMENTS = REPOSITORY_ROOT / "docker" / "triton-python-requirements.txt"


def clean_source_copy(target: Path) -> Path:
    """Copy the checkout's files that git would commit (tracked and new, not ignored) into `target`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        source = REPOSITORY_ROOT / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    return target


def build_distributions(out_dir: Path) -> tuple[Path, Path]:
    """Build the sdist and the wheel of a clean copy of the checkout into `out_dir`; returns `(sdist, wheel)`."""
    source = clean_source_copy(out_dir / "source")
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out_dir), str(source)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if completed.returncode != 0:
        raise AssertionError(f"python -m build failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    (sdist,) = out_dir.glob("attnserve-*.tar.gz")
    (wheel,) = out_dir.glob("attnserve-*.whl")
    return sdist, wheel


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def pip_install(venv: Path, *arguments: str) -> None:
    """`pip install` into `venv` with this environment's pip (`pip --python`), using pip's cache."""
    command = [sys.executable, "-m", "pip", "--python", str(venv_python(venv)), "install", "-q", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if completed.returncode != 0:
        raise AssertionError(f"pip install {' '.join(arguments)} failed:\n{completed.stderr[-4000:]}")


def fresh_venv(
    venv: Path, wheel: Path, *, requirements: tuple[str, ...] = (), borrow_dependencies: bool = False
) -> Path:
    """A new virtual environment at `venv` holding the wheel (not editable) and `requirements`.

    Args:
        venv: where to create it (outside the checkout).
        wheel: the built wheel, installed with `--no-deps`.
        requirements: pip arguments installed for real first (e.g. `-r FILE`).
        borrow_dependencies: add this test environment's site-packages *after* the venv's own, through a
            path file, so the wheel's third-party dependencies (torch, tritonclient, ...) need not be unpacked
            again (a full install takes minutes here). Only plain directories are borrowed: Python processes
            path files of site directories only, so the checkout's editable finder is never installed and
            `attnserve` comes from the wheel alone (the tests check where it was imported from).
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    if requirements:
        pip_install(venv, *requirements)
    pip_install(venv, "--no-deps", str(wheel))
    if borrow_dependencies:
        borrowed = sysconfig.get_paths()["purelib"]
        (venv_site_packages(venv) / "_borrowed_dependencies.pth").write_text(borrowed + "\n")
    return venv


def venv_environment(venv: Path) -> dict[str, str]:
    """Environment for commands run from `venv`: its `bin` first on PATH, no PYTHONPATH, no project settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "ATTNSERVE_"))}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv)
    return env
