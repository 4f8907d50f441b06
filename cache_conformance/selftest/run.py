"""The suites' own teeth: run them clean and under every catalogued fault, and score what they catch.

    python -m cache_conformance.selftest [--fault NAME ...] [--workers N]

Runs each suite's slice (its `selftest` in suites/registry.toml) as a pytest session under every fault the
registry names for it (the patch applied for the session and undone when it ends), once more in bfloat16 for its
`sixteen_bit_fault`, where the tolerances are widest, and once without any fault (every test must pass, expected
failures aside). The sessions run one after another in N long-lived worker processes
(cache_conformance/selftest/pytest_runs.py), so torch and transformers are imported N times, not once per session;
the clean sessions run last, in processes that have already run faults, so a patch that was not fully undone would
show as a clean session that is not clean.

A fault is caught only on the suite's own evidence: a test of that suite fails and its results record carries
evidence (`metrics.evidence`, cache_conformance/grading/evidence.py) of a kind the registry counts for the suite: what was
checked, where (step, position, layer, slot...) and by how much. A test that ends in an exception of its own (an
IndexError from inside the model, a TypeError from the patch) is no such evidence: the fault is graded "crashed",
not caught. Property tests run with the `ci` hypothesis profile (derandomized, no example database), so the table
is the same on every run. Prints a table fault -> tests failed -> suite -> outcome -> margin (the evidence's
difference over the tolerance or threshold it had to exceed) -> the check that caught it, writes
reports/results/selftest-transformers-<version>.json for the report, and exits 1 when a clean session is not clean
or any fault goes uncaught.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import transformers

from cache_conformance import ROOT
from cache_conformance.grading import evidence
from cache_conformance.plugin import checkpoint, recorder
from cache_conformance.records import registry, results
from cache_conformance.releases import pins
from cache_conformance.selftest import faults
from cache_conformance.selftest.pytest_runs import Run, Session, run_all

SUITES = ROOT / "suites"
FORMAT = 1

# Each suite's slice (registry `selftest`) is the smallest part of its parameterisation that still shows every
# fault: float32 has the tightest tolerances and eager attention is available everywhere. The 16-bit run of one
# fault per suite (registry `sixteen_bit_fault`) uses bfloat16, which has the widest tolerances (logits 0.6,
# snapshots 1.0, cache contents 0.6): it shows they still leave room to catch a real fault.
SIXTEEN_BIT_SLICE = ["--device", "cpu", "-k", "bfloat16-cpu-eager"]
COMMON_ARGS = ["--hypothesis-profile", "ci"]
# A failed test whose record has no evidence but that raised something other than a failed assertion ended in an
# exception of its own (an IndexError from inside the model, a TypeError from the patch): crashed, not caught.
ASSERTIONS = ("AssertionError", "Failed")


def fault_session_paths(fault: faults.Fault) -> list[str]:
    """What a fault's session runs: its suite's file, or the test functions of it the fault names (`checks`)."""
    path = str(registry.load().suite_of_fault(fault.name).file.relative_to(ROOT))
    return [f"{path}::{check}" for check in fault.checks] or [path]


def evidence_of(record: dict) -> dict | None:
    return record.get("metrics", {}).get("evidence")


def margin(found: dict) -> float | None:
    """How many times over its tolerance (or detection threshold) the fault's evidence is; None without figures."""
    difference, limit = found.get("difference"), found.get("limit")
    if difference is None or not limit:
        return None
    return float(difference) / float(limit)


@dataclass
class Detection:
    name: str
    description: str
    property: str
    caught: bool
    crashed: bool = False  # a test under the fault ended in an exception of its own, and none caught it
    dtype: str = "float32"
    tests_failed: list[str] = field(default_factory=list)
    evidence: str = ""  # the first failure message that points at the fault, or why the fault went uncaught
    margin: float | None = None  # the evidence's difference over its tolerance or threshold
    caught_by: str = ""  # the check whose failure carried the evidence: "test_function[parameters]"

    @property
    def outcome(self) -> str:
        return "caught" if self.caught else "CRASHED" if self.crashed else "NO"


def grade(fault: faults.Fault, run: Run | None, dtype: str = "float32") -> Detection:
    """Whether `run` (the fault's suite under the fault; None when that suite's file is missing) caught it: a test
    of that suite failed with evidence of a kind the registry counts for it."""
    suite = registry.load().suite_of_fault(fault.name)
    detection = Detection(fault.name, fault.description, suite.name, caught=False, dtype=dtype)
    if run is None:
        detection.evidence = f"{suite.file.relative_to(ROOT)} is missing"
        return detection
    if run.results is None:
        detection.evidence = f"pytest exited {run.code} without results: {run.output.strip().splitlines()[-1:]}"
        return detection
    failed = [t for t in run.results["tests"]
              if t["suite"] == suite.name and t["outcome"] == "failed" and t["raw_outcome"] == "failed"]
    detection.tests_failed = [t["id"] for t in failed]
    located = [t for t in failed if (evidence_of(t) or {}).get("kind") in suite.evidence]
    crashes = [t for t in failed if t not in located and (
        (evidence_of(t) or {}).get("kind") == evidence.CRASH
        or (evidence_of(t) is None and t.get("raised") not in ASSERTIONS))]
    detection.caught = bool(located)
    detection.crashed = not located and bool(crashes)
    if located:
        detection.evidence = located[0]["message"]
        detection.margin = margin(evidence_of(located[0]))
        detection.caught_by = located[0]["id"].partition("::")[2]
    elif crashes:
        detection.evidence = f"crashed, not caught: {crashes[0]['message'][:300]}"
    elif failed:
        detection.evidence = f"failures carry no evidence of the suite's kinds {list(suite.evidence)}: {failed[0]['message'][:300]}"
    else:
        errors = [t for t in run.results["tests"] if t["outcome"] == "error"]
        detection.evidence = f"no test failed ({len(errors)} errors)" + (f": {errors[0]['message'][:300]}" if errors else "")
    return detection


def clean_run_problem(run: Run) -> str | None:
    """Why the run without a fault is not clean, or None."""
    if run.results is None:
        return f"pytest exited {run.code} without results: {run.output[-1000:]}"
    bad = [t for t in run.results["tests"] if t["outcome"] in ("failed", "error")]
    if run.code != 0 or bad:
        listed = "; ".join(f"{t['id']}: {t['message'][:200]}" for t in bad[:5])
        return f"pytest exited {run.code}; {len(bad)} tests failed or errored: {listed}"
    return None


def table(detections: list[Detection]) -> str:
    rows = [("fault", "dtype", "tests failed", "property", "outcome", "margin", "caught by")]
    rows += [(d.name, d.dtype, str(len(d.tests_failed)), d.property, d.outcome,
              f"{d.margin:.3g}x" if d.margin is not None else "-", d.caught_by or "-") for d in detections]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_results(path: Path, clean_summary: dict, problems: list[str], detections: list[Detection],
                  duration_s: float) -> None:
    payload = {
        "format": FORMAT,
        "kind": "selftest",
        "transformers": transformers.__version__,
        "run_info": recorder.run_info(ROOT, devices={"cpu": "available"},
                                     checkpoint=checkpoint.describe(checkpoint.resolve(None)),
                                     expectations_applied=True) | {"duration_s": round(duration_s, 1)},
        "clean_summary": clean_summary,
        "clean_problems": problems,
        "faults": [asdict(d) for d in detections],
        "detected": sum(d.caught for d in detections),
        "total": len(detections),
    }
    results.write(path, payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache_conformance.selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--fault", action="append", choices=sorted(faults.CATALOGUE),
                        help="only this fault (repeatable; default: the whole catalogue)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes running the sessions (default 2)")
    parser.add_argument("--output", type=Path, help="results file (default: reports/results/selftest-transformers-<version>.json)")
    args = parser.parse_args(argv)
    chosen = [faults.CATALOGUE[name] for name in (args.fault or sorted(faults.CATALOGUE))]
    started = time.monotonic()
    print(f"selftest on transformers {transformers.__version__}; {pins.header_line()}", flush=True)

    suites = registry.load().suites
    planned = [(fault, "float32", suites[fault.caught_by].selftest) for fault in chosen]
    planned += [(fault, "bfloat16", SIXTEEN_BIT_SLICE) for fault in chosen
                if suites[fault.caught_by].sixteen_bit_fault == fault.name]
    present = [suite for suite in suites.values() if suite.file.exists()]
    under_fault = [index for index, (fault, _, _) in enumerate(planned) if suites[fault.caught_by] in present]
    # The fault sessions first, the clean ones last (see the module's docstring); in each, the slow suites' (they
    # compile) start first, so that no worker is left with one at the end while the other waits.
    under_fault.sort(key=lambda index: not suites[planned[index][0].caught_by].slow)
    present.sort(key=lambda suite: not suite.slow)
    sessions = [Session((*fault_session_paths(planned[i][0]), *COMMON_ARGS, *planned[i][2]), planned[i][0].name)
                for i in under_fault]
    sessions += [Session((str(suite.file.relative_to(ROOT)), *COMMON_ARGS, *suite.selftest)) for suite in present]

    def done(index: int, run: Run) -> None:
        if index < len(under_fault):
            fault, dtype, _ = planned[under_fault[index]]
            print(f"  {fault.name} ({dtype}): {grade(fault, run, dtype).outcome} ", end="")
        else:
            suite = present[index - len(under_fault)]
            print(f"  clean {suite.name}: {clean_run_problem(run) or json.dumps(run.results['summary'])} ", end="")
        print(f"({time.monotonic() - started:.0f} s)", flush=True)

    print(f"{len(sessions)} pytest sessions on {args.workers} worker processes", flush=True)
    runs = run_all(sessions, workers=args.workers, on_done=done)
    fault_runs = dict(zip(under_fault, runs))  # none for a fault whose suite is missing
    detections = [grade(fault, fault_runs.get(index), dtype) for index, (fault, dtype, _) in enumerate(planned)]

    problems = [f"{suite.file.relative_to(ROOT)} is missing" for suite in suites.values() if suite not in present]
    clean_summary: dict[str, int] = {}
    for suite, clean in zip(present, runs[len(under_fault):]):
        problem = clean_run_problem(clean)
        if problem:
            problems.append(f"{suite.name}: {problem}")
            continue
        for outcome, count in clean.results["summary"].items():
            clean_summary[outcome] = clean_summary.get(outcome, 0) + count
    print()
    print(table(detections))
    uncaught = [d for d in detections if not d.caught]
    print(f"\ndetection score: {len(detections) - len(uncaught)}/{len(detections)} faults caught; "
          f"clean runs {'NOT clean' if problems else 'clean'}; {time.monotonic() - started:.0f} s")
    for problem in problems:
        print(f"NOT CLEAN {problem}")
    for detection in uncaught:
        print(f"UNCAUGHT {detection.name} ({detection.property}, {detection.dtype}): {detection.evidence}")
    output = args.output or ROOT / "reports" / "results" / f"selftest-transformers-{transformers.__version__}.json"
    write_results(output, clean_summary, problems, detections, time.monotonic() - started)
    print(f"results: {output}")
    return 1 if problems or uncaught else 0


if __name__ == "__main__":
    sys.exit(main())
