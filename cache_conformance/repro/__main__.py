"""Write a standalone script that reproduces one finding: one record of a results file.

    python -m cache_conformance.repro TEST_ID [--release X] [--results FILE ...] [--checkpoint NAME] [--out FOLDER]

TEST_ID is a record's id as the report and the results files give it (suites/test_user_calls.py::test_...[float32-
cpu-eager-...]). The record comes from the results files given, else from reports/results/ and the committed scans
(reports/scans/) of release X (a minor, 5.10, or a full version; default: the adopted release), the newest file
holding a record of TEST_ID that failed with its call recorded, on the checkpoint named (default: the embedded
tiny-gemma3; tiny-gemma3-other, or a config digest). The script goes to FOLDER (default reports/repro/);
its path is printed. Exit status 0 when written, 2 on bad input (one line: no such record, no finding, no call).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packaging.version import Version

from cache_conformance import ROOT
from cache_conformance.records import expectations, results
from cache_conformance.releases import replay
from cache_conformance.repro import script

SOURCES = (ROOT / "reports" / "scans", ROOT / "reports" / "results")  # in this order: a later file wins


def of_release(version: str, release: str) -> bool:
    wanted = Version(release)
    return Version(version).release[: len(wanted.release)] == wanted.release


def find(test_id: str, files: list[Path], release: str | None, checkpoint: str) -> tuple[dict, dict]:
    """(record, run_info) of TEST_ID: from the last of `files` (of `release`, where given, and run on `checkpoint`)
    whose record of it can be scripted, else the reason the last one found cannot."""
    found, problem = None, None
    for path in files:
        try:
            run = results.read(path)
        except results.ResultsError:
            continue  # a stand-in or another kind of file: not a run of the suites
        if release and not of_release(run["run_info"].get("transformers", "0"), release):
            continue
        if replay.checkpoint_name(run["run_info"]) != checkpoint:
            continue  # the same check on another checkpoint is another record
        for record in run.get("tests", []):
            if record["id"] == test_id:
                problem = script.why_not_scriptable(record)
                if problem is None:
                    found = record, run["run_info"]
    if found is None:
        where = f"transformers {release}" if release else "the results given"
        where += f" on {checkpoint}"
        raise script.ReproError(f"{test_id}: {problem or 'no record of it'} in {where}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache_conformance.repro",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("test_id")
    parser.add_argument("--release", help="a minor (5.10) or a full version (default: the adopted release)")
    parser.add_argument("--results", nargs="+", type=Path, help="results files to read (default: reports/)")
    parser.add_argument("--checkpoint", default="tiny-gemma3",
                        help="the checkpoint the record ran on: an embedded one's folder name, else its config digest")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "repro")
    arguments = parser.parse_args(argv)
    try:
        known = expectations.load(expectations.DEFAULT_PATH)
        release = arguments.release
        if arguments.results:
            files = arguments.results
        else:
            release = release or str(known.adopted)
            files = sorted(path for folder in SOURCES for path in sorted(folder.rglob("*.json")))
        if release:
            Version(release)
        record, run_info = find(arguments.test_id, files, release, arguments.checkpoint)
        version = Version(run_info["transformers"])
        applied = known.find(record["id"], version)
        entry = applied.entry if applied is not None and applied.entry.explains_record(record) else None
        expectation = {"reason": entry.reason, "reference": entry.reference} if entry is not None else None
        text = script.render(record, run_info, expectation=expectation)
    except (ValueError, OSError) as error:  # script.ReproError among them
        print(f"repro: {error}", file=sys.stderr)
        return 2
    arguments.out.mkdir(parents=True, exist_ok=True)
    path = arguments.out / script.file_name(record, run_info["transformers"])
    path.write_text(text)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
