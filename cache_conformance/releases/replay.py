"""The committed evidence behind suites/expectations.toml, replayed against it.

    python -m cache_conformance.releases.replay [--expectations suites/expectations.toml] [--evidence FOLDER ...]

Evidence is every raw results file committed under reports/scans/ (runs with --no-expectations on every minor
release; a subfolder holds reruns of some tests, which replace the records above them) and reports/device-runs/
(runs on lent GPU machines). Replaying them checks three things:
- every raw failure is explained: the entry that judges the test on that release (as a run would find it) names
  the exception type and message the test raised;
- every entry explains at least one committed failure on each scanned release its range claims;
- no raw pass is claimed: an entry that judges a test that passed on a checkpoint it names would turn a run of
  that release red (strict).
It also lists the full versions an entry's evidence text names that no committed run ran.
Exit status 0 when all hold, 1 otherwise (each problem one line), 2 on bad input.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from cache_conformance import ROOT
from cache_conformance.plugin import checkpoint
from cache_conformance.records import expectations, results

EVIDENCE = (ROOT / "reports" / "scans", ROOT / "reports" / "device-runs")


@dataclass
class Replay:
    unexplained: list[str]  # raw failures no entry explains
    unproven: list[str]  # (entry, release) pairs with no committed failure the entry explains
    claimed_passes: list[str]  # raw passes an entry judges as expected failures (a run would be red: XPASS)
    unscanned: list[str]  # versions named in evidence texts that no committed run ran


def committed_runs(folders=EVIDENCE, *, of_checkpoint: str | None = None) -> dict[Version, list[dict]]:
    """Every committed raw record, by the transformers release it ran on. A run in a subfolder is a rerun of some
    tests (its README says why): its records replace those of the same tests on the same checkpoint from the folder
    above. Scans of other checkpoints (another window, other shapes) stand beside each other: a defect shows
    different symptoms on them, and the entries must name every one. Each record gets the checkpoint it ran on
    (`checkpoint`: an embedded checkpoint's folder name, else its config digest); `of_checkpoint` (a config
    digest, checkpoint.config_digest) keeps one checkpoint's runs only."""
    runs: dict[Version, dict[tuple[str, str], dict]] = defaultdict(dict)
    for folder in folders:
        for path in sorted(folder.rglob("transformers-*.json"), key=lambda path: (len(path.parts), path)):
            data = results.read_run(path)
            digest = checkpoint_config(data["run_info"])
            if of_checkpoint is not None and digest != of_checkpoint:
                continue
            runs[Version(data["run_info"]["transformers"])].update(
                ((digest, record["id"]), record | {"checkpoint": checkpoint_name(data["run_info"])})
                for record in data["tests"])
    return {release: list(records.values()) for release, records in runs.items()}


def checkpoint_name(run_info: dict) -> str:
    """The checkpoint a run used as expectation entries name it: an embedded checkpoint's folder name, else its
    config digest."""
    digest = checkpoint_config(run_info)
    return checkpoint.embedded_name_of_digest(digest) or digest


def checkpoint_config(run_info: dict) -> str:
    """Which checkpoint a run used, by its config's digest (the folder it was read from differs between machines)."""
    found = re.search(r"config sha256 ([0-9a-f]+)", run_info.get("checkpoint", ""))
    return found.group(1) if found else run_info.get("checkpoint", "")


def explained_by(known: expectations.ExpectationsFile, record: dict, release: Version):
    """The entry that judges this record on its release when the record failed the way that entry says, else None."""
    applied = known.find(record["id"], release)
    return applied.entry if applied is not None and applied.entry.explains_record(record) else None


def replay(known: expectations.ExpectationsFile, runs: dict[Version, list[dict]]) -> Replay:
    proven = set()  # (entry index, release)
    unexplained = []
    index = {id(entry): number for number, entry in enumerate(known.entries)}
    claimed_passes = []
    for release, records in sorted(runs.items()):
        for record in records:
            applied = known.find(record["id"], release) if record.get("raw_outcome") == "passed" else None
            if applied is not None and record.get("checkpoint") in applied.entry.checkpoints:
                claimed_passes.append(f"{release} {record['id']} on {record['checkpoint']}: passed, but an entry "
                                      "expects it to fail there")
            if record.get("raw_outcome") not in results.RAW_FAILURES:
                continue
            entry = explained_by(known, record, release)
            if entry is None:
                unexplained.append(f"{release} {record['id']}: {results.failure_line(record, 300)}")
            else:
                proven.add((index[id(entry)], release))
    unproven = [f"expected_failure #{number + 1} ({entry.tests[0]}, releases {entry.releases}) explains no "
                f"committed failure on {release}"
                for number, entry in enumerate(known.entries) for release in sorted(runs)
                if release in entry.releases and (number, release) not in proven]
    ran = {str(release) for release in runs}
    unscanned = [f"expected_failure #{number + 1} ({entry.tests[0]}): evidence names {version}, which no committed "
                 "run ran" for number, entry in enumerate(known.entries)
                 for version in sorted(set(re.findall(r"\b\d+\.\d+\.\d+\b", entry.evidence)) - ran)]
    return Replay(unexplained, unproven, claimed_passes, unscanned)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache_conformance.releases.replay", description=__doc__.split("\n")[0])
    parser.add_argument("--expectations", type=Path, default=expectations.DEFAULT_PATH)
    parser.add_argument("--evidence", type=Path, action="append", metavar="FOLDER",
                        help="a folder of raw results files to replay (repeatable; default: the committed evidence, "
                             "reports/scans and reports/device-runs)")
    args = parser.parse_args(argv)
    try:
        known = expectations.load(args.expectations)
        runs = committed_runs(args.evidence or EVIDENCE)
    except (expectations.ExpectationsError, results.ResultsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    found = replay(known, runs)
    problems = found.unexplained + found.unproven + found.claimed_passes + found.unscanned
    for line in problems:
        print(line)
    print(f"{len(runs)} releases, {sum(map(len, runs.values()))} records, {len(known.entries)} entries: "
          f"{len(found.unexplained)} unexplained failures, {len(found.unproven)} unproven claims, "
          f"{len(found.claimed_passes)} claimed passes, {len(found.unscanned)} evidence versions not run")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
