"""Every document the code cites is in the repository: `docs/NAME.md` exists and `#anchor` is one of its
headings; nothing cites a design note that only the original authors have."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("attnserve", "models", "export", "serving", "clients", "bench", "tests", "deploy", "docker")
CITATION = re.compile(r"docs/([A-Za-z0-9_\-]+\.md)(?:#([a-z0-9\-]+))?")
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared")


def _sources() -> list[Path]:
    files = [ROOT / "pyproject.toml", ROOT / "Makefile", ROOT / "docker-compose.yml"]
    for folder in SOURCE_FOLDERS:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".toml", ".yml", ".yaml", ".sh"}]
    return [p for p in files if p.is_file() and p != Path(__file__).resolve()]


def _anchors(document: Path) -> set[str]:
    return {
        re.sub(r"[^a-z0-9\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in document.read_text().splitlines()
        if line.startswith("#")
    }


def test_every_cited_document_and_section_exists() -> None:
    missing: list[str] = []
    cited = 0
    for path in _sources():
        text = path.read_text(errors="replace")
        for match in OUTSIDE.finditer(text):
            missing.append(f"{path.relative_to(ROOT)} cites {match.group(0)!r}, which is not in the repository")
        for match in CITATION.finditer(text):
            cited += 1
            document = ROOT / "docs" / match.group(1)
            if not document.is_file():
                missing.append(f"{path.relative_to(ROOT)} cites docs/{match.group(1)}: no such file")
            elif match.group(2) and match.group(2) not in _anchors(document):
                missing.append(
                    f"{path.relative_to(ROOT)} cites docs/{match.group(1)}#{match.group(2)}: no such section"
                )
    assert cited > 5, "the walk found (almost) no citations: is it reading the sources?"
    assert not missing, "\n".join(missing)
