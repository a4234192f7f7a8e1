"""The sdist and wheel of the checkout, built once per session with the standard front end (`python -m build`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.installs import build_distributions


@pytest.fixture(scope="session")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`(sdist, wheel)` built from the checkout into a temporary folder."""
    return build_distributions(tmp_path_factory.mktemp("dist"))
