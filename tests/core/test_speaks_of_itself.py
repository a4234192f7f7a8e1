"""The project speaks only of itself: no tracked file cites issue or session numbers, a tracker's notes, or people
("as the user asked"). Upstream trackers are cited with their project and `#` (`TensorRT issues #4333`). A comment says why; a measurement lives in docs/ with the command that reproduces it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HISTORY = re.compile(
    r"\b(issue|session|ticket|sprint)s? [0-9]+\b|\bissue note\b|\bthe note\b|\(STYLE\)|\bas the user asked\b",
    re.IGNORECASE,
)
SKIPPED_SUFFIXES = {".png", ".jpg", ".onnx", ".safetensors", ".whl", ".gz"}


def _tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
    paths = [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    return [p for p in paths if p.is_file() and p.suffix not in SKIPPED_SUFFIXES and p != Path(__file__).resolve()]


def test_no_file_cites_issues_sessions_or_people() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}"
        for path in _tracked_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
        if HISTORY.search(line)
    ]
    assert found == [], "history words in the product:\n" + "\n".join(found)
