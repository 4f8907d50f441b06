"""The release tables the README and the docs show, rendered from the project's data, never typed: the findings from
suites/expectations.toml, what each release does from the committed scans of the embedded checkpoint.

    python -m cache_conformance.report.tables [--check]

A page holds each table between two markers, `<!-- table: NAME -->` and `<!-- /table -->`; the command rewrites what
lies between them and nothing else. With --check it changes nothing and exits 1 naming every page whose tables
differ from what the data renders now (tests/test_tables.py runs it). Adopting a release renders them again.

Tables (NAME):
    summary           per suite: how many findings, and the releases they are on (the README)
    findings SUITE    the suite's expectation entries, one row per finding: the releases (ranges merged over the
                      scanned releases), the checks, the grade and what happens (the entries' reason), upstream
    releases SUITE    each check of the suite (its target left out) and its grade release by release, from the raw
                      scans (a cell names the targets where they differ)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

from packaging.version import Version

from cache_conformance import ROOT
from cache_conformance.plugin import checkpoint
from cache_conformance.records import expectations, registry
from cache_conformance.releases import replay

COMMAND = "python -m cache_conformance.report.tables"
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))
MARKED = re.compile(r"(<!-- table: (?P<name>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
# the grade a graded check's message starts with (grading/grades.py, grading/coverage.py, user calls' own grades)
GRADES = ("refused misleadingly", "refused clearly", "crashed", "wrong", "substituted", "oversized",
          "precondition not met")
AUTO_REASON = re.compile(r"^test_\w+ \[[^\]]*\] on [\d.]+-[\d.]+: ")  # an entry written from a scan: its own title


class Data:
    """What the tables are rendered from, read once: the expectations, the scanned releases and their records."""

    def __init__(self, expectations_path: Path = expectations.DEFAULT_PATH, evidence=replay.EVIDENCE):
        self.known = expectations.load(expectations_path)
        self.runs = replay.committed_runs(evidence, of_checkpoint=checkpoint.config_digest(checkpoint.EMBEDDED))
        self.releases = sorted(self.runs)
        self.suites = registry.load().suites


def minor(version: Version) -> str:
    return f"{version.major}.{version.minor}"


def ranges(releases: list[Version], chosen: set[Version]) -> str:
    """The chosen releases as runs of consecutive scanned releases: "4.53-4.57, 5.1-5.11"."""
    runs, current = [], []
    for release in releases:
        if release in chosen:
            current.append(release)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return ", ".join(minor(run[0]) if len(run) == 1 else f"{minor(run[0])}-{minor(run[-1])}" for run in runs)


def by_release(releases: list[Version], cells: dict[Version, str]) -> str:
    """One cell per release, consecutive equal ones merged: "4.50-4.52 crashed; 4.53-5.25 correct"."""
    parts, start = [], 0
    for index in range(1, len(releases) + 1):
        if index == len(releases) or cells[releases[index]] != cells[releases[start]]:
            first, last = minor(releases[start]), minor(releases[index - 1])
            parts.append(f"{first if first == last else f'{first}-{last}'} {cells[releases[start]]}")
            start = index
    return "; ".join(parts)


def cell_text(text: str) -> str:
    """Text inside one Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def upstream(reference: str) -> str:
    """An upstream reference with its GitHub address shown as #number."""
    return cell_text(re.sub(r"https://github\.com/huggingface/transformers/(?:pull|issues)/(\d+)",
                            lambda found: f"[#{found.group(1)}]({found.group(0)})", reference)) or "none found"


def entry_grade(entry: expectations.Expectation) -> str:
    pattern = entry.match.pattern.lstrip("^(").replace("\\ ", " ")
    return next((grade for grade in GRADES if pattern.startswith(grade)), f"fails ({', '.join(entry.raises)})")


def check_of(pattern: str) -> str:
    """A test pattern's check: its function, without the file ("every check" for a pattern that names none)."""
    function = pattern.partition("::")[2].partition("[")[0] or pattern
    return "every check" if function == "*" else f"`{function}`"


def suite_of(pattern: str) -> str:
    return Path(pattern.partition("::")[0]).stem.removeprefix("test_")


def findings_rows(data: Data, suite: str) -> list[tuple[set[Version], str, str, str, str]]:
    """(releases, checks, grade, what happens, upstream) of each finding of the suite: its entries grouped by grade,
    reason and reference."""
    grouped: dict[tuple[str, str, str], tuple[set, set]] = defaultdict(lambda: (set(), set()))
    for entry in data.known.entries:
        if suite_of(entry.tests[0]) != suite:
            continue
        releases, checks = grouped[(entry_grade(entry), AUTO_REASON.sub("", entry.reason), entry.reference)]
        releases.update(release for release in data.releases if release in entry.releases)
        checks.update(check_of(pattern) for pattern in entry.tests)
    rows = [(releases, ", ".join(sorted(checks)), grade, reason, reference)
            for (grade, reason, reference), (releases, checks) in grouped.items() if releases]
    return sorted(rows, key=lambda row: (min(data.releases.index(r) for r in row[0]), row[1], row[2], row[3]))


def findings_table(data: Data, suite: str) -> str:
    rows = findings_rows(data, suite)
    if not rows:
        return f"No known upstream failure on the scanned releases ({ranges(data.releases, set(data.releases))}).\n"
    lines = ["| releases | checks | grade: what happens | upstream |", "|---|---|---|---|"]
    lines += [f"| {ranges(data.releases, releases)} | {checks} | {grade}: {cell_text(reason)} | {upstream(reference)} |"
              for releases, checks, grade, reason, reference in rows]
    return "\n".join(lines) + "\n"


def record_grade(record: dict) -> str:
    graded = (record.get("metrics") or {}).get("outcome")
    if graded:
        return graded
    if record["outcome"] in ("failed", "error"):
        return f"fails ({record.get('raised') or record['outcome']})"
    return {"passed": "pass"}.get(record["outcome"], record["outcome"])


def target_of(record: dict) -> str:
    return "-".join(str(record["params"][key]) for key in ("dtype", "device", "attn") if key in record["params"])


def releases_table(data: Data, suite: str) -> str:
    grades: dict[str, dict[Version, dict[str, set[str]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(set)))
    for release, records in data.runs.items():
        for record in records:
            if record.get("suite") == suite:
                grades[record["check"].partition("::")[2]][release][record_grade(record)].add(target_of(record))
    lines = ["| check | grade by release |", "|---|---|"]
    for check in sorted(grades):
        cells = {}
        for release in data.releases:
            found = grades[check].get(release, {})
            if len(found) <= 1:
                cells[release] = next(iter(found), "not run")
            else:
                cells[release] = ", ".join(f"{grade} ({', '.join(sorted(targets))})" for grade, targets in sorted(found.items()))
        lines.append(f"| `{cell_text(check)}` | {cell_text(by_release(data.releases, cells))} |")
    return "\n".join(lines) + "\n"


def summary_table(data: Data) -> str:
    lines = [f"| suite | findings | on releases (of {ranges(data.releases, set(data.releases))} scanned) |",
             "|---|---|---|"]
    for name, suite in data.suites.items():
        rows = findings_rows(data, name)
        on = set().union(*(row[0] for row in rows)) if rows else set()
        page = f"docs/suites/{name}.md"
        title = f"[{suite.title}]({page})" if (ROOT / page).exists() else suite.title
        lines.append(f"| {title} | {len(rows)} | {ranges(data.releases, on) or 'none'} |")
    return "\n".join(lines) + "\n"


def render(name: str, data: Data) -> str:
    kind, _, suite = name.partition(" ")
    if kind == "summary" and not suite:
        return summary_table(data)
    if kind in ("findings", "releases") and suite in data.suites:
        return (findings_table if kind == "findings" else releases_table)(data, suite)
    raise ValueError(f"unknown table {name!r} (summary, findings SUITE, releases SUITE; suites: "
                     f"{', '.join(data.suites)})")


def rendered(text: str, data: Data) -> str:
    """The page's text with every marked table rendered again."""
    return MARKED.sub(lambda found: found.group(1) + render(found.group("name"), data) + found.group(4), text)


def stale_pages(data: Data, *, write: bool) -> list[Path]:
    """The pages whose tables differ from what `data` renders now (relative to the project), rendered again when
    `write`."""
    stale = []
    for page in PAGES:
        text = page.read_text()
        new = rendered(text, data)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if write:
                page.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page's tables are stale")
    args = parser.parse_args(argv)
    try:
        stale = stale_pages(Data(), write=not args.check)
    except (ValueError, OSError) as error:  # expectations, results and unknown tables all say what is wrong
        print(f"error: {error}", file=sys.stderr)
        return 2
    for page in stale:
        print(f"{page}: {'stale, run ' + COMMAND if args.check else 'rendered'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
