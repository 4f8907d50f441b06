"""What changed between two runs, test by test (totals would let a regression hide behind a fix)."""

from __future__ import annotations

from typing import NamedTuple

from cache_conformance.report.load import Run

PASSING = {"passed", "xpassed"}
FAILING = {"failed", "xfailed", "error"}
# Worst first: what one cell shows when it stands for several targets.
SEVERITY = ["crashed", "error", "failed", "xpassed", "xfailed", "passed", "skipped", "not run"]


class Change(NamedTuple):
    check: str
    params: dict
    old_outcome: str
    new_outcome: str


def outcome(record: dict) -> str:
    """The test's outcome, with a strict unexpected pass told apart from a failure: "xpassed"."""
    if record["outcome"] == "failed" and record.get("raw_outcome") == "passed":
        return "xpassed"
    return record["outcome"]


def outcome_in(run: Run, key: tuple[str, str]) -> str:
    """Outcome of (check, target id) in a run: one of SEVERITY."""
    if run.crashed:
        return "crashed"
    record = run.tests.get(key)
    return outcome(record) if record else "not run"


def changes(previous_run: Run, new_run: Run) -> list[Change]:
    """Every (check, target) whose outcome differs between the two runs, in check order."""
    found = []
    for key in sorted(previous_run.tests.keys() | new_run.tests.keys()):
        old, new = outcome_in(previous_run, key), outcome_in(new_run, key)
        if old != new:
            record = new_run.tests.get(key) or previous_run.tests[key]
            found.append(Change(key[0], record["params"], old, new))
    return found


def direction(old_outcome: str, new_outcome: str) -> str:
    """"newly failing", "newly passing" or "other" (skipped, not run, crashed, or failing differently)."""
    if old_outcome in PASSING and new_outcome in FAILING:
        return "newly failing"
    if old_outcome in FAILING and new_outcome in PASSING:
        return "newly passing"
    return "other"
