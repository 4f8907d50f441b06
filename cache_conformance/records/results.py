"""The machine-readable results file of one run: run info, then one record per test.

Format (version 1), designed for the HTML report:
{
  "format": 1,
  "run_info": {transformers, torch, python, platform, devices, checkpoint, suite_commit, started, duration_s,
               expectations: "applied" | "ignored", command, unused_expectations,
               phases: {imports_s, collection_s, tests_s}},
  "summary": {outcome: count},
  "tests": [{id, check, suite, params: {dtype, device, attn}, outcome, raw_outcome, expected, reason, evidence,
             reference, raises, match, releases, tests, raised, message, metrics, duration_s}]
}
outcome: what pytest concluded after expectations: passed, failed, error, skipped, xfailed.
raw_outcome: what the test itself did, before expectations: passed, failed, error, skipped.
expected: "pass" or "fail" (from the expectations file).
raised: the type name of the exception the test's call ended with (only when it raised), as `raises` names it.
message: the failure message; for an expected failure that failed another way, the "expected failure did not
match: ..." line first (that line is also the record's `mismatch`).
carried_from: on a release newer than the adopted one, the adopted release whose expectation judged the test.
not_reached: a listed test that passed on a checkpoint its entry does not name (`checkpoints`): why that is no XPASS.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

FORMAT = 1
MESSAGE_LIMIT = 2000
RECORDER_PLUGIN = "cache-conformance-results"  # the results recorder's name in pytest's plugin manager
SLOW_DESELECTED_KEY = pytest.StashKey[list]()  # node ids of the slow checks a process deselected


def suite_commit(root: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_info(root: Path, *, devices: dict[str, str], checkpoint: str, expectations_applied: bool) -> dict:
    import torch
    import transformers

    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": devices,
        "checkpoint": checkpoint,
        "suite_commit": suite_commit(root),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "expectations": "applied" if expectations_applied else "ignored",
        "command": " ".join(["pytest", *sys.argv[1:]]),
        "tox_env": os.environ.get("TOX_ENV_NAME", ""),
    }


class ResultsCollector:
    """Folds pytest's per-phase reports into one record per test."""

    def __init__(self, info: dict):
        self.info = info
        self.records: dict[str, dict] = {}

    def add(self, report) -> None:
        props = dict(report.user_properties)
        nodeid = without_xdist_group(report.nodeid)
        record = self.records.setdefault(
            nodeid,
            {
                "id": nodeid,
                "check": props.get("check", nodeid),
                "suite": props.get("suite", ""),
                "params": props.get("params", {}),
                "outcome": "passed",
                "raw_outcome": "passed",
                **props.get("expectation", {"expected": "pass"}),
                "message": "",
                "metrics": {},
                "duration_s": 0.0,
            },
        )
        record["duration_s"] = round(record["duration_s"] + report.duration, 4)
        record["metrics"].update(props.get("metrics", {}))
        if "expectation_not_reached" in props:  # listed, passed, on a checkpoint the entry does not name
            record["not_reached"] = props["expectation_not_reached"]
        outcome, raw = _phase_outcome(report)
        if outcome is None:
            return
        # The first phase that did not pass decides (a teardown error after a failure keeps the failure).
        if record["outcome"] == "passed":
            record["outcome"], record["raw_outcome"] = outcome, raw
            record["message"] = _message(report)
            if "raised" in props:
                record["raised"] = props["raised"]
            if "expectation_mismatch" in props:  # an expected failure that failed another way: both texts
                record["mismatch"] = props["expectation_mismatch"]
                record["message"] = f"{props['expectation_mismatch']}\n{record['message']}"[:MESSAGE_LIMIT]

    def write(self, path: Path, duration_s: float) -> None:
        tests = sorted(self.records.values(), key=lambda r: r["id"])
        payload = {
            "format": FORMAT,
            "run_info": self.info | {"duration_s": round(duration_s, 2)},
            "summary": dict(Counter(t["outcome"] for t in tests)),
            "tests": tests,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1) + "\n")


class ResultsRecorder:
    """A pytest plugin on the process that sees every test report (the xdist controller, or the only process): it
    folds the reports into the results file at `path` and ends the terminal summary with what the file says.
    `known` is the expectations file (None with --no-expectations); `unused_expectations(ran, slow)` names the
    entries for this release that no test that ran matched."""

    def __init__(self, config, collector: ResultsCollector, path: Path, *, known, release,
                 unused_expectations: Callable[[list[str], list[str]], list]):
        self.config = config
        self.collector = collector
        self.path = path
        self.known = known
        self.release = release
        self.find_unused = unused_expectations
        self.started = time.monotonic()
        # Where this run's time went (the matrix runner prints it per release); with xdist, the controller's view.
        self.phases = {"imports_s": seconds_since_process_start()}
        self.workers_slow_deselected: list[str] = []  # with xdist, what the workers deselected as slow

    def pytest_collection(self, session):
        self.collection_started = time.monotonic()

    def pytest_collection_finish(self, session):
        self.collection_finished = time.monotonic()
        self.phases["collection_s"] = round(self.collection_finished - self.collection_started, 2)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """An xdist worker finished: keep the slow checks it deselected (every worker collects the same items)."""
        self.workers_slow_deselected = getattr(node, "workeroutput", {}).get("slow_deselected", [])

    def slow_deselected(self) -> list[str]:
        """Node ids of the slow checks this run deselected, whether it collected them itself or xdist workers did."""
        return self.config.stash.get(SLOW_DESELECTED_KEY, None) or self.workers_slow_deselected

    def unused_expectations(self) -> list:
        return self.find_unused(list(self.collector.records), self.slow_deselected())

    def pytest_runtest_logreport(self, report):
        if "suite" in dict(report.user_properties):
            self.collector.add(report)

    def pytest_sessionfinish(self, session):
        if not self.collector.records:
            return  # no conformance check ran (e.g. only the project's own tests)
        self.collector.info["unused_expectations"] = [e.as_dict() for e in self.unused_expectations()]
        if "collection_s" in self.phases:
            self.phases["tests_s"] = round(time.monotonic() - self.collection_finished, 2)
        self.collector.info["phases"] = self.phases
        self.collector.info["slow_deselected"] = len(self.slow_deselected())
        if self.known is not None:
            self.collector.info["carried"] = len(self.carried())
        self.collector.write(self.path, time.monotonic() - self.started)

    def pytest_terminal_summary(self, terminalreporter):
        if not self.collector.records:
            return
        for entry in self.unused_expectations():
            terminalreporter.write_line(
                f"WARNING: expectation matches no test that ran: tests={entry.tests} releases={entry.releases}",
                yellow=True,
            )
        if self.known is not None and self.known.provisional(self.release):
            terminalreporter.write_line(
                f"PROVISIONAL: {len(self.carried())} of the expected failures are carried from {self.known.adopted} "
                f"(transformers {self.release} is not adopted); adopt it with: "
                f"python -m cache_conformance.releases.adopt {self.path}", yellow=True)
        slow = self.slow_deselected()
        if slow:
            terminalreporter.write_line(f"{len(slow)} slow checks deselected (compilation, export and the user calls "
                                        "on other targets): --include-slow runs them")
        terminalreporter.write_line(f"results: {self.path}")

    def carried(self) -> list[str]:
        """Node ids of the expected failures that held only by being carried forward to this release."""
        return [nodeid for nodeid, record in self.collector.records.items()
                if record["outcome"] == "xfailed" and record.get("carried_from")]


class ResultsError(ValueError):
    """A file that is not a results file this project can use; the message is one line naming the file."""


def read(path: Path) -> dict:
    """The contents of a results file, checked before anyone uses them: valid JSON, `"format": 1`, and either a
    run's (`run_info.transformers` a string, `tests` a list; a stand-in for a crashed release has no tests)
    or a self-test's (`"kind": "selftest"`, `transformers` a string, `faults` a list). Every tool reads results files
    through this, so a bad file gives the same one line (ResultsError) wherever it is read."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: cannot read it ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ResultsError(f"{path}: not a results file of format {FORMAT} (no \"format\": {FORMAT} at the top level)")
    if data.get("kind") == "selftest":
        if not isinstance(data.get("transformers"), str) or not isinstance(data.get("faults"), list):
            raise ResultsError(f"{path}: a self-test results file needs \"transformers\" and a list of \"faults\"")
        return data
    info = data.get("run_info")
    if not isinstance(info, dict) or not isinstance(info.get("transformers"), str):
        raise ResultsError(f"{path}: run_info.transformers is missing or not a string")
    if not isinstance(data.get("tests"), list):
        raise ResultsError(f"{path}: \"tests\" is not a list")
    return data


def seconds_since_process_start() -> float | None:
    """Seconds since this interpreter started (Linux: /proc, to 10 ms), or None where that cannot be read."""
    try:
        started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - started_ticks / os.sysconf("SC_CLK_TCK"), 2)


def check_name(nodeid: str, target_id: str | None) -> str:
    """The node id without the target's part: the same check on every dtype, device and attention."""
    if target_id is None:
        return nodeid
    base, _, params = nodeid.partition("[")
    params = params.removesuffix("]").replace(target_id, "", 1).replace("--", "-").strip("-")
    return f"{base}[{params}]" if params else base


def exception_of(record: dict) -> tuple[str, str]:
    """(type name, message) of the exception a failing record's call raised, as an expectation's `raises` and
    `match` judge them: the record's `raised`, and its message without the expectation-mismatch line and without
    the type name pytest puts first (qualified by its module unless builtin). Records written before `raised`
    existed (e.g. reports/device-runs/) give the type from that prefix."""
    text = record.get("message", "")
    if record.get("mismatch"):
        text = text.removeprefix(record["mismatch"] + "\n")
    raised = record.get("raised") or _prefixed_type(text)
    prefix = re.match(rf"(?:[\w.]+\.)?{re.escape(raised)}(?:: |$)", text) if raised else None
    return raised, text[prefix.end():] if prefix else text


RAW_FAILURES = ("failed", "error")  # raw outcomes of a test that did not pass: failed in its call, or erred around it


def failure_line(record: dict, limit: int) -> str:
    """One line for a person: the exception a failing record's call raised and its message, white space folded and
    cut at `limit` characters (or that it erred outside its call)."""
    raised, message = exception_of(record)
    text = " ".join(message.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"error outside the test's call: {text}" if record.get("raw_outcome") == "error" else f"{raised}: {text}"


def _prefixed_type(text: str) -> str:
    if text.startswith("assert "):  # pytest leaves "AssertionError: " off a rewritten assert's message
        return "AssertionError"
    found = re.match(r"(?:[\w.]+\.)?(\w+)(?:: |$)", text)
    return found.group(1) if found else ""


def without_xdist_group(nodeid: str) -> str:
    """The node id as collected: newer pytest-xdist appends "@<group>" to the ids of tests in an xdist_group."""
    head, marker, _ = nodeid.rpartition("]@")
    return head + "]" if marker else nodeid


def _phase_outcome(report) -> tuple[str | None, str | None]:
    """(outcome after expectations, raw outcome) of one phase, or (None, None) when the phase passed quietly."""
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if xfail and report.skipped:
            return "xfailed", "failed"
        if report.failed and _is_strict_xpass(report):
            return "failed", "passed"
        if report.failed:
            return "failed", "failed"
        if report.skipped:
            return "skipped", "skipped"
        return None, None
    if report.failed:
        return "error", "error"
    if report.skipped:
        return ("xfailed", "failed") if xfail else ("skipped", "skipped")
    return None, None


def _is_strict_xpass(report) -> bool:
    return "[XPASS(strict)]" in str(report.longrepr)


def _message(report) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2]
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    return text[:MESSAGE_LIMIT]
