"""Every relative link in the project's Markdown (README.md, docs/**/*.md, fixtures/README.md) resolves: to an
existing file or folder, and where it has a `#anchor` into a Markdown file, to a heading of that file (GitHub's
slug of the heading's text). Absolute URLs (http, https, mailto) are not checked. The positive control feeds the
checker a page with a broken link and a broken anchor, and both must be reported.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "fixtures" / "README.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
ABSOLUTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, without punctuation, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(text):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = found.get(base, 0)
            found[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(text: str):
    """(line number, target) of every inline link, image and reference definition outside code."""
    for number, line in prose_lines(text):
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)
            continue
        for found in INLINE_LINK.finditer(INLINE_CODE.sub("", line)):
            yield number, found.group(1)


def broken_links(page: Path) -> list[str]:
    """One line per relative link of `page` that does not resolve."""
    problems = []
    text = page.read_text(encoding="utf-8")
    for number, target in links(text):
        if not target or ABSOLUTE.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.name}:{number}: {target}"
        if not resolved.exists():
            problems.append(f"{where}: no such file")
        elif (anchor and resolved.suffix == ".md" and resolved.is_file()
              and anchor not in anchors(resolved.read_text(encoding="utf-8"))):
            problems.append(f"{where}: no heading #{anchor} in {resolved.name}")
    return problems


def test_the_pages_exist():
    assert (ROOT / "docs" / "README.md") in PAGES and len(PAGES) > 3


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_the_checker_reports_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, with punctuation!\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n"
        "[fine](other.md) [fine anchor](other.md#a-code-heading-with-punctuation) [here](#title)\n"
        "[web](https://example.org/missing) `[in code](missing-in-code.md)`\n"
        "```\n[in a fence](missing-in-fence.md)\n```\n"
        "[gone](missing.md)\n"
        "[no such heading](other.md#not-a-heading)\n"
    )
    problems = broken_links(page)
    assert problems == [
        "page.md:8: missing.md: no such file",
        "page.md:9: other.md#not-a-heading: no heading #not-a-heading in other.md",
    ]
