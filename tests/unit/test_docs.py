"""The documentation's links resolve, and the README opens with the quick start.

Every markdown link `[text](target)` and image `![alt](target)` outside fenced code blocks in README.md,
ARCHITECTURE.md and docs/*.md whose target is not a web or mail address points at a file or folder that exists
relative to the linking file; a `#anchor` names a heading of the target file (or of the linking file itself) by
its GitHub-style slug.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, ROOT / "ARCHITECTURE.md", *DOCS]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"#{1,6} +(.+?)[ #]*$")


def prose(page: Path) -> list[str]:
    """The page's lines outside ``` fences."""
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor: lowercase; only letters, digits, spaces, hyphens, underscores kept; spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for line in prose(page) if (m := HEADING.match(line))}


def broken_links(page: Path) -> list[str]:
    broken = []
    for line in prose(page):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"(https?|mailto):", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists():
                broken.append(f"{target}: no such file or folder")
            elif anchor and (linked.is_dir() or anchor not in anchors(linked)):
                broken.append(f"{target}: no heading with the anchor #{anchor}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_and_image_resolves(page):
    assert broken_links(page) == []


def test_a_missing_file_or_heading_is_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("# Benchmarks (`make bench`)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "## Seen here\n[ok](other.md#benchmarks-make-bench) [ok](#seen-here) `[code](gone.md)`\n"
        "```\n[fenced](gone.md)\n```\n[bad](gone.md) ![bad](other.md#gone) [bad](#gone) [web](https://x.org/a)\n"
    )
    assert broken_links(page) == [
        "gone.md: no such file or folder",
        "other.md#gone: no heading with the anchor #gone",
        "#gone: no heading with the anchor #gone",
    ]


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert DOCS and [page for page in DOCS if page.resolve() not in linked] == []


def test_the_readme_opens_with_the_quick_start():
    opening = "\n".join(README.read_text(encoding="utf-8").splitlines()[:40])
    assert "make run" in opening and "make test" in opening
