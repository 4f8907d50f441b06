"""The suites' own teeth: run them clean and under every catalogued fault, and score what they catch.

    python -m cache_conformance.selftest [--fault NAME ...] [--workers N]

Runs each suite's smallest slice (SLICES) as a pytest session under every fault whose property it is (the patch
applied for the session and undone when it ends), once more in a 16-bit dtype for one fault per property
(SIXTEEN_BIT), where the tolerances are widest, and once without any fault (every test must pass, expected failures
aside). The sessions run one after another in N long-lived worker processes (cache_conformance/selftest/pytest_runs.py), so
torch and transformers are imported N times, not once per session; the clean sessions run last, in processes that
have already run faults, so a patch that was not fully undone would show as a clean session that is not clean.
A fault is caught only on the property's own evidence: a test of that suite fails with a message that says where
and by how much (LOCATIONS: step, position, layer, slot, bytes). A test that ends in an exception of its own (an
IndexError from inside the model, a TypeError from the patch) is no such evidence: the fault is graded "crashed",
not caught. Property tests run with the `ci` hypothesis profile (derandomized, no example database), so the table
is the same on every run. Prints a table fault -> tests failed -> property -> outcome -> margin (the fault's
difference over the tolerance or threshold it had to exceed), writes
reports/results/selftest-transformers-<version>.json for the report, and exits 1 when a clean session is not clean
or any fault goes uncaught.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import transformers

from cache_conformance import ROOT, checkpoint, results
from cache_conformance.releases import pins
from cache_conformance.selftest import faults
from cache_conformance.selftest.pytest_runs import Run, Session, run_all

SUITES = ROOT / "suites"
FORMAT = 1

# The smallest slice of each suite's parameterisation that still shows every fault: float32 has the tightest
# tolerance and eager attention is available everywhere. A slice narrows the parameterisation, never the code path.
PROPERTIES = ("equivalence", "overflow", "sliding_window", "memory", "snapshots", "compiled", "multimodal",
              "strategies", "dispatch")
SLICES = {prop: ["--device", "cpu", "-k", "float32-cpu-eager"] for prop in PROPERTIES}
# The compiled suite's checks run without --include-slow on float32 with sdpa only (compilation costs minutes).
SLICES["compiled"] = ["--device", "cpu", "-k", "float32-cpu-sdpa"]
# The 16-bit run of one fault per property: bfloat16 has the widest tolerances (logits 0.6, snapshots 1.0, cache
# contents 0.6), so this shows they still leave room to catch a real fault. The memory suite runs no float16 on CPU.
SIXTEEN_BIT_SLICE = ["--device", "cpu", "-k", "bfloat16-cpu-eager"]
# The compiled suite has none: in the default run it compiles float32 only (its 16-bit targets are slow checks).
WITHOUT_SIXTEEN_BIT = ("compiled",)
SIXTEEN_BIT = {
    "equivalence": "seq-length-one-short",
    "overflow": "overflow-wraps-around",
    "sliding_window": "early-eviction",
    "memory": "hidden-copy",
    "snapshots": "sliding-mask-one-wider",
    "multimodal": "image-features-rolled-when-cached",
    "strategies": "beam-reorder-one-step-late",
    "dispatch": "cache-offloaded-with-the-weights",
}
COMMON_ARGS = ["--hypothesis-profile", "ci"]
# What a failure message must say for the failure to count as catching the fault: where and how much.
LOCATIONS = {
    "equivalence": re.compile(
        r"(decode step \d+|chunk \d+ of \d+|prefill of \d+ tokens|generate\(\)).*"
        r"max abs diff [0-9.e+-]+ exceeds tolerance.*position \d+"
    ),
    "overflow": re.compile(r"the call returned normally: the cache wrapped around, dropped tokens"),
    "sliding_window": re.compile(
        r"(prefill|decode step \d+|chunk \d+ of \d+|generate\(\)).*: layer \d+ \((sliding|full-attention)\), "
        r"slot \d+, batch \d+: should hold position \d+ but holds .*; max abs diff [0-9.e+-]+ exceeds tolerance"
    ),
    "memory": re.compile(
        r"decode step \d+ \(position \d+\): layer \d+ (keys|values) moved to new storage .* bytes"
        r"|grew by \d+ bytes per (step|call)"
    ),
    "snapshots": re.compile(
        r"(prefill|decode): \d+ of \d+ elements \([0-9.]+%\) differ beyond .*; max abs diff [0-9.e+-]+ at \[\d+, \d+\]; "
        r"rows \[\d+"
    ),
    "multimodal": re.compile(
        r"(decode step \d+|chunk \d+ of \d+|prefill of \d+ tokens|generate\(\)).*"
        r"max abs diff [0-9.e+-]+ exceeds tolerance.*position \d+"
        r"|static-cache: layer \d+: negating (soft token|position) \d+ .*(did not change|changed) the output at"
    ),
    "strategies": re.compile(
        r"^AssertionError: wrong: .*(max abs diff [0-9.e+-]+ exceeds tolerance.*position \d+"
        r"|hypothesis \d+ differs from beam search without cache at position \d+)"
    ),
    "dispatch": re.compile(
        r"after the (prefill of \d+ tokens|decode step \d+): layer \d+ \((sliding|full-attention)\) (keys|values) "
        r"on \S+, the layer runs on \S+"
    ),
    "compiled": re.compile(
        r"compilations grew with the decode steps: \d+ steps compiled \d+ graph.*decode step \d+ .*recompiled; "
        r"guard failures \(torch's reasons\): \d+/\d+: "
        r"|(decode step \d+|prompt token|chunk \d+ of \d+|generate\(\)).*max abs diff [0-9.e+-]+ exceeds tolerance"
        r".*position \d+"
    ),
}


# A test that ended in an exception of its own rather than the property's assertion: `decoding.located` reports
# those as "<where> raised <Type>: ...", anything else shows its type first.
CRASH = re.compile(r"^(?!AssertionError\b|Failed\b)\w+: | raised \w+: ")
# The fault's size against what it had to exceed, from the evidence: (difference, tolerance or threshold).
MARGINS = (
    re.compile(r"max abs diff (?P<diff>[0-9.e+-]+) exceeds tolerance \(atol (?P<limit>[0-9.e+-]+)"),
    re.compile(r"differ beyond atol (?P<limit>[0-9.e+-]+) .*; max abs diff (?P<diff>[0-9.e+-]+)"),
    re.compile(r"grew by (?P<diff>\d+) bytes per (step|call) .*threshold (?P<limit>\d+)"),
)


def suite_file(prop: str) -> Path:
    return SUITES / f"test_{prop}.py"


def margin(evidence: str) -> float | None:
    """How many times over its tolerance (or detection threshold) the fault's evidence is; None without figures."""
    for pattern in MARGINS:
        found = pattern.search(evidence)
        if found and float(found["limit"]) > 0:
            return float(found["diff"]) / float(found["limit"])
    return None


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

    @property
    def outcome(self) -> str:
        return "caught" if self.caught else "CRASHED" if self.crashed else "NO"


def grade(fault: faults.Fault, run: Run | None, dtype: str = "float32") -> Detection:
    """Whether `run` (the fault's property suite under the fault; None when that suite is missing) caught it."""
    detection = Detection(fault.name, fault.description, fault.caught_by, caught=False, dtype=dtype)
    if run is None:
        detection.evidence = f"{suite_file(fault.caught_by).relative_to(ROOT)} is missing"
        return detection
    if run.results is None:
        detection.evidence = f"pytest exited {run.code} without results: {run.output.strip().splitlines()[-1:]}"
        return detection
    failed = [t for t in run.results["tests"]
              if t["suite"] == fault.caught_by and t["outcome"] == "failed" and t["raw_outcome"] == "failed"]
    detection.tests_failed = [t["id"] for t in failed]
    located = [t["message"] for t in failed
               if LOCATIONS[fault.caught_by].search(t["message"]) and not CRASH.search(t["message"])]
    crashes = [t["message"] for t in failed if CRASH.search(t["message"])]
    detection.caught = bool(located)
    detection.crashed = not located and bool(crashes)
    if located:
        detection.evidence = located[0]
        detection.margin = margin(located[0])
    elif crashes:
        detection.evidence = f"crashed, not caught: {crashes[0][:300]}"
    elif failed:
        detection.evidence = f"failures do not point at the fault: {failed[0]['message'][:300]}"
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
    rows = [("fault", "dtype", "tests failed", "property", "outcome", "margin")]
    rows += [(d.name, d.dtype, str(len(d.tests_failed)), d.property, d.outcome,
              f"{d.margin:.3g}x" if d.margin is not None else "-") for d in detections]
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
        "run_info": results.run_info(ROOT, devices={"cpu": "available"},
                                     checkpoint=checkpoint.describe(checkpoint.resolve(None)),
                                     expectations_applied=True) | {"duration_s": round(duration_s, 1)},
        "clean_summary": clean_summary,
        "clean_problems": problems,
        "faults": [asdict(d) for d in detections],
        "detected": sum(d.caught for d in detections),
        "total": len(detections),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


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

    planned = [(fault, "float32", SLICES[fault.caught_by]) for fault in chosen]
    planned += [(fault, "bfloat16", SIXTEEN_BIT_SLICE) for fault in chosen
                if SIXTEEN_BIT.get(fault.caught_by) == fault.name]
    present = [prop for prop in PROPERTIES if suite_file(prop).exists()]
    under_fault = [index for index, (fault, _, _) in enumerate(planned) if fault.caught_by in present]
    # The fault sessions first, the clean ones last (see the module's docstring).
    sessions = [Session((str(suite_file(planned[i][0].caught_by).relative_to(ROOT)), *COMMON_ARGS, *planned[i][2]),
                        planned[i][0].name) for i in under_fault]
    sessions += [Session((str(suite_file(prop).relative_to(ROOT)), *COMMON_ARGS, *SLICES[prop])) for prop in present]

    def done(index: int, run: Run) -> None:
        if index < len(under_fault):
            fault, dtype, _ = planned[under_fault[index]]
            print(f"  {fault.name} ({dtype}): {grade(fault, run, dtype).outcome} ", end="")
        else:
            prop = present[index - len(under_fault)]
            print(f"  clean {prop}: {clean_run_problem(run) or json.dumps(run.results['summary'])} ", end="")
        print(f"({time.monotonic() - started:.0f} s)", flush=True)

    print(f"{len(sessions)} pytest sessions on {args.workers} worker processes", flush=True)
    runs = run_all(sessions, workers=args.workers, on_done=done)
    fault_runs = dict(zip(under_fault, runs))  # none for a fault whose suite is missing
    detections = [grade(fault, fault_runs.get(index), dtype) for index, (fault, dtype, _) in enumerate(planned)]

    problems = [f"{suite_file(prop).relative_to(ROOT)} is missing" for prop in PROPERTIES if prop not in present]
    clean_summary: dict[str, int] = {}
    for prop, clean in zip(present, runs[len(under_fault):]):
        problem = clean_run_problem(clean)
        if problem:
            problems.append(f"{prop}: {problem}")
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
