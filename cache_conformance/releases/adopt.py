"""Adopt a new transformers release: extend the expectations that held on it and list what needs a person.

    python -m cache_conformance.releases.adopt RESULTS_FILE [RESULTS_FILE ...] [--pins-from PYTHON]
                                      [--expectations suites/expectations.toml] [--dry-run]

RESULTS_FILE: the results of one release newer than the adopted one (e.g. its CPU and CUDA runs), from a run with
or without expectations: every record is judged again here from what the test itself did (its raw outcome, the
type of the exception it raised and the exception's message), exactly as the run judges it.

For each entry carried forward from the adopted release (its range includes the adopted release, not this one):
- extended (its upper bound becomes `<=RELEASE`) when at least one test it names failed and every test it names
  that ran failed the way it says;
- left as it is otherwise: none of its tests ran here (say, CUDA-only entries on a CPU run), or some passed or
  failed another way.
Then `adopted` becomes RELEASE. The file is edited in place with comments and layout kept (tomlkit). With
--pins-from, the project's own tests move to RELEASE too: constraints/project-tests.txt is rewritten from the
packages of that interpreter's environment (the one that ran the release, e.g.
.tox/py311-transformers-latest/bin/python), which must have RELEASE installed.

Needs a person, printed with the messages:
- changed failure: a test an entry names failed, but not the way the entry says (another exception, or a
  message its `match` does not explain), or erred in setup;
- new failure: a test no entry names failed or erred;
- new pass: a test an entry names passed (the defect may be fixed: end the entry's range, or split it).

Exit status 0 once the file is written (or would be, with --dry-run), whatever needs a person; 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import tomlkit
from packaging.version import InvalidVersion, Version

from cache_conformance.records import expectations, results
from cache_conformance.releases import pins, replay
from cache_conformance.report import tables

MESSAGE_SHOWN = 400


class AdoptionError(ValueError):
    """Results that cannot be adopted; the message is one line."""


@dataclass
class Finding:
    kind: str  # "changed failure", "new failure" or "new pass"
    test: str
    message: str  # what the test raised (or "passed"), and what the entry expected


@dataclass
class EntryVerdict:
    index: int  # position in the file's [[expected_failure]] list
    entry: expectations.Expectation
    held: list[str] = field(default_factory=list)  # tests that failed the way it says
    broken: list[str] = field(default_factory=list)  # tests that passed or failed another way

    @property
    def extended(self) -> bool:
        return bool(self.held) and not self.broken


@dataclass
class Adoption:
    release: Version
    adopted: Version  # the release adopted before this one
    carried: list[EntryVerdict]
    findings: list[Finding]  # what needs a person


def release_of(files: list[dict]) -> Version:
    """The one transformers release all the results files ran on."""
    found = {part["run_info"]["transformers"] for part in files}
    if len(found) != 1:
        raise AdoptionError(f"the results files are of several releases ({', '.join(sorted(found))}); adopt one at a time")
    text = found.pop()
    try:
        version = Version(text)
    except InvalidVersion:
        raise AdoptionError(f"run_info.transformers {text!r} is not a release version") from None
    if results.unreleased(text):
        raise AdoptionError(f"transformers {text} is a development build (unreleased): it is never adopted")
    return version


def judge(known: expectations.ExpectationsFile, records: list[dict], release: Version) -> Adoption:
    """What adopting `release` does to the expectations, from its results records."""
    if not known.provisional(release):
        raise AdoptionError(f"transformers {release} is not newer than {known.adopted}, the adopted release: "
                            "nothing to adopt")
    carried = {id(entry): EntryVerdict(index, entry) for index, entry in enumerate(known.entries)
               if (applied := known.reaches(entry, release)) is not None and applied.carried_from}
    findings = []
    for record in records:
        raw = record.get("raw_outcome")
        if not record.get("suite") or raw == "skipped":
            continue  # not a conformance check, or not judged here
        applied = known.find(record["id"], release)
        if applied is None:
            if raw in results.RAW_FAILURES:
                findings.append(Finding("new failure", record["id"], results.failure_line(record, MESSAGE_SHOWN)))
            continue
        entry = applied.entry
        verdict = carried.get(id(entry))
        if entry.explains_record(record):
            if verdict is not None:
                verdict.held.append(record["id"])
            continue
        if verdict is not None:
            verdict.broken.append(record["id"])
        expected = f"expected {entry.describe()}"
        if raw == "passed" and record.get("checkpoint") not in entry.checkpoints:
            continue  # a checkpoint the entry does not name: its shape does not reach the defect, a pass is a pass
        if raw == "passed":
            findings.append(Finding("new pass", record["id"], f"passed; {expected}"))
        else:
            findings.append(Finding("changed failure", record["id"],
                                    f"{results.failure_line(record, MESSAGE_SHOWN)}; {expected}"))
    return Adoption(release, known.adopted, list(carried.values()), findings)


def write(adoption: Adoption, path: Path) -> None:
    """Extend the ranges that held and move `adopted`, keeping the file's comments and layout."""
    document = tomlkit.parse(path.read_text())
    entries = document["expected_failure"]
    for verdict in adoption.carried:
        if verdict.extended:
            table = entries[verdict.index]
            table["releases"] = expectations.extended_to(str(table["releases"]), adoption.release)
    document["adopted"] = str(adoption.release)
    path.write_text(tomlkit.dumps(document))


def summary(adoption: Adoption, path: Path) -> str:
    """What adopting did and what needs a person, as Markdown (the release workflow's pull request body)."""
    extended = [v for v in adoption.carried if v.extended]
    left = [v for v in adoption.carried if not v.extended]
    headline = f"## transformers {adoption.release}: same as {adoption.adopted} except {len(adoption.findings)} check(s)"
    edits = (f"`{path.name}`: adopted {adoption.adopted} -> {adoption.release}; {len(extended)} carried entries "
             f"extended to `<={adoption.release}`, {len(left)} left as they were.")
    lines = [headline, "", edits, ""]
    if extended:
        lines += ["### Extended (every test they name failed the same way)", ""]
        lines += [f"- `{_title(v.entry)}`: held on {len(v.held)} test(s)" for v in extended]
        lines.append("")
    if left:
        lines += ["### Left as they were", ""]
        for verdict in left:
            why = (f"{len(verdict.broken)} of {len(verdict.broken) + len(verdict.held)} test(s) passed or failed "
                   "another way (below)") if verdict.broken else "none of its tests ran in these results"
            lines.append(f"- `{_title(verdict.entry)}` ({verdict.entry.releases}): {why}")
        lines.append("")
    lines += [f"### Needs a person ({len(adoption.findings)})", ""]
    by_kind = defaultdict(list)
    for finding in adoption.findings:
        by_kind[finding.kind].append(finding)
    for kind in ("changed failure", "new failure", "new pass"):
        for finding in by_kind[kind]:
            lines.append(f"- {kind}: `{finding.test}`: {finding.message}")
    if not adoption.findings:
        lines.append("- nothing")
    return "\n".join(lines) + "\n"


def _title(entry: expectations.Expectation) -> str:
    first = entry.tests[0]
    return first + (f" (+{len(entry.tests) - 1} more)" if len(entry.tests) > 1 else "")


def _read(path: Path) -> dict:
    try:
        data = results.read_run(path)
    except results.ResultsError as error:
        raise AdoptionError(str(error)) from None
    if data["run_info"].get("crashed"):
        raise AdoptionError(f"{path}: the run crashed ({data['run_info']['crashed']}); nothing to adopt")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache_conformance.releases.adopt", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="results files of the release to adopt")
    parser.add_argument("--expectations", type=Path, default=expectations.DEFAULT_PATH,
                        help="the expectations file to edit (default suites/expectations.toml)")
    parser.add_argument("--pins-from", type=Path, metavar="PYTHON",
                        help="also pin the project's own tests to the packages of this interpreter's environment")
    parser.add_argument("--dry-run", action="store_true", help="print what adopting would do; change nothing")
    args = parser.parse_args(argv)
    try:
        known = expectations.load(args.expectations)
        files = [_read(path) for path in args.results]
        records = [record | {"checkpoint": replay.checkpoint_name(part["run_info"])}
                   for part in files for record in part["tests"]]
        adoption = judge(known, records, release_of(files))
    except (AdoptionError, expectations.ExpectationsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.dry_run:
        if args.pins_from:  # first, so that a wrong environment leaves both files as they were
            before = pins.PROJECT_PINS.read_text()
            try:
                pins.refreeze(args.pins_from, pins.PROJECT_PINS)
                pinned = pins.pinned("transformers", pins.PROJECT_PINS)
                if pinned != str(adoption.release):
                    raise pins.PinsError(f"{args.pins_from} has transformers {pinned}, not {adoption.release}")
            except pins.PinsError as error:
                pins.PROJECT_PINS.write_text(before)
                print(f"error: {error}", file=sys.stderr)
                return 2
        write(adoption, args.expectations)
        if args.expectations.resolve() == expectations.DEFAULT_PATH.resolve():
            # The README's and the docs' release tables, from the expectations just written; quietly, since what
            # adopt prints is the adoption pull request's body.
            try:
                tables.stale_pages(tables.Data(), write=True)
            except (ValueError, OSError) as error:
                print(f"error: the expectations are adopted, but the tables could not be rendered: {error}",
                      file=sys.stderr)
                return 2
    print(summary(adoption, args.expectations), end="")
    if not args.pins_from:
        print(f"\nThe project's own tests still pin transformers {pins.pinned('transformers')}: move them with "
              "--pins-from <the python of the environment that ran the release>.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
