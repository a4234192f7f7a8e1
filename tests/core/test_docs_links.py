"""The README stays a five-minute read, and every relative link of the README and docs/ leads somewhere.

A link to a file must name a file of the checkout; a link to `page.md#anchor` must name a heading of that page,
spelled as GitHub spells heading anchors. The README keeps the results block that `attnserve demo --update-readme`
rewrites.
"""

from __future__ import annotations

import re
from pathlib import Path

from attnserve.demo_report import README_END, README_START

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 160
PAGES = (README, ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md")))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (where `#` starts a comment, not a heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not `-` or `_`), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of `page`, repeated headings numbered as GitHub numbers them (`name-1`, ...)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(page.read_text()):
        if match := HEADING.match(line):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """`page`: TARGET (why) for each relative link of `page` that leads nowhere."""
    broken = []
    for line in prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            if not linked.exists():
                broken.append(f"{page.relative_to(root)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(root)}: {target} (no heading with that anchor)")
    return broken


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}: move detail to docs/"


def test_readme_keeps_the_generated_results_block() -> None:
    text = README.read_text()
    assert text.count(README_START) == 1 and text.count(README_END) == 1
    assert text.index(README_START) < text.index(README_END)
    assert text.index("make demo") < text.index(README_START), "the commands come before the results"


def test_every_relative_link_resolves() -> None:
    broken = [entry for page in PAGES for entry in broken_links(page)]
    assert len(PAGES) > 5, "docs/ pages not found"
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {target.partition("#")[0] for target in LINK.findall(README.read_text())}
    unlinked = [page.name for page in sorted((ROOT / "docs").glob("*.md")) if f"docs/{page.name}" not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_slug_and_link_checks_catch_what_they_should(tmp_path: Path) -> None:
    assert slug("HPA replay (`python -m bench.hpa_replay`)") == "hpa-replay-python--m-benchhpa_replay"
    assert slug("The benchmarks: `make bench`") == "the-benchmarks-make-bench"
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n## Same\n## Same\n```\n# not a heading\n```\n"
        "[ok](#same-1) [bad](#not-a-heading) [file](page.md#title) [gone](missing.md) [web](https://example.org)\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "page.md: #not-a-heading (no heading with that anchor)",
        "page.md: missing.md (no such file)",
    ]
