"""The compatibility report: every results file of a folder merged into one static page (no server needed).

    python -m cache_conformance.report --results reports/results --output reports/site     (or: tox -e report)

writes reports/site/index.html and reports/site/assets/. Exit status 0; 1 when a results file or an entry of one
could not be used (each such problem is one line on stderr and in a banner on the page; the rest is still built).

Functions for other tools (e.g. drafting a regression issue from two runs):

    load_results(folder: Path) -> tuple[list[Run], list[str]]
        every results file in the folder (reports/results/transformers-<version>.json, stand-ins written by
        cache_conformance.releases.matrix for releases that crashed, selftest-transformers-<version>.json), sorted by
        release, and one error line per file or entry left out.
    changes(previous_run: Run, new_run: Run) -> list[Change]
        every (check, target) whose outcome differs; Change is the named tuple
        (check: str, params: dict (dtype, device, attn), old_outcome: str, new_outcome: str).
        Outcomes: passed, failed, xfailed, xpassed (a strict unexpected pass), error, skipped, not run,
        crashed (the release has no results).
    direction(old_outcome, new_outcome) -> "newly failing" | "newly passing" | "other"
        xfailed counts as failing: the property does not hold, even though the failure is known.

Run: path, release (installed transformers version), info (run_info), tests {(check, target id): record},
crashed (reason, or None), selftest (dict, or None).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cache_conformance.report.changes import Change, changes, direction
from cache_conformance.report.load import Run, load_results

__all__ = ["Change", "Run", "changes", "direction", "load_results", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache_conformance.report",
                                     description="Build the static HTML compatibility report from results files.")
    parser.add_argument("--results", type=Path, default=Path("reports/results"),
                        help="folder of results files (default reports/results)")
    parser.add_argument("--output", type=Path, default=Path("reports/site"),
                        help="folder of the site (default reports/site)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.exit(2, f"error: {args.results} is not a folder of results files\n")

    from cache_conformance.report.page import write_site  # jinja2 is needed for writing only

    runs, errors = load_results(args.results)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    page = write_site(runs, errors, args.output)
    print(f"report: {page} ({len(runs)} releases: {' '.join(run.release for run in runs) or 'none'})")
    return 1 if errors else 0
