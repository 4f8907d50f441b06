"""The results recorder: a pytest plugin that folds every test report into a results file (its format, the writer
and the reader are cache_conformance/records/results.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cache_conformance.records import results
from cache_conformance.records.results import FORMAT, MESSAGE_LIMIT

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
        results.write(path, payload)


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


def seconds_since_process_start() -> float | None:
    """Seconds since this interpreter started (Linux: /proc, to 10 ms), or None where that cannot be read."""
    try:
        started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - started_ticks / os.sysconf("SC_CLK_TCK"), 2)


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
