"""Real tools the tests run (installed by `.ci/run` from Debian packages)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def require_binary(name: str, package: str) -> str:
    """Path of `name`; skip when missing, but fail under CI (where `.ci/run` installs `package`)."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).is_file()), None
    )
    if found is None:
        message = f"`{name}` is not installed (Debian package `{package}`: apt-get install -y {package})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}; CI must install it (.ci/run does)")
        pytest.skip(message)
    return found
