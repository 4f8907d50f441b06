"""Reading the results files of a folder into runs; a bad file or entry becomes one line of error, not a stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from cache_conformance.records import results

OUTCOMES = {"passed", "failed", "error", "skipped", "xfailed"}
# The fields the report needs from every test record (results.py writes more).
TEST_FIELDS = {"id": str, "check": str, "suite": str, "params": dict, "outcome": str}


class MalformedResults(ValueError):
    """A results file, or one entry of it, that the report cannot use; the message is one line."""


@dataclass
class Run:
    """One results file: a transformers release (or a stand-in for one that failed to install or crashed)."""

    path: Path
    release: str  # the installed transformers version; the requested release for a stand-in
    info: dict
    tests: dict[tuple[str, str], dict] = field(default_factory=dict)  # (check, target id) -> test record
    crashed: str | None = None  # why the release has no results
    selftest: dict | None = None  # reports/results/selftest-transformers-<version>.json, when present

    @property
    def unreleased(self) -> bool:
        """A development build (transformers' main branch: 5.26.0.dev0): a column of its own, never adopted."""
        return results.unreleased(self.release)

    @property
    def sort_key(self) -> tuple:
        try:
            return (0, Version(self.release), self.release)
        except InvalidVersion:  # "latest" of a stand-in: after every numbered release
            return (1, Version("0"), self.release)


def target_id(params: dict) -> str:
    """dtype-device-attn, as in the node ids; "" for a check that runs once, on no target."""
    return "-".join(str(params[k]) for k in ("dtype", "device", "attn") if k in params)


def load_results(folder: Path) -> tuple[list[Run], list[str]]:
    """Every results file in `folder`, in release order, and one error line per file or entry left out."""
    runs: dict[str, Run] = {}
    errors: list[str] = []
    selftests = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = results.read(path)
            if data.get("kind") == "selftest":
                selftests.append(_selftest(path, data))
                continue
            run, entry_errors = _run(path, data)
        except (results.ResultsError, MalformedResults) as error:
            errors.append(str(error))
            continue
        errors += entry_errors
        if run.release in runs:
            _merge(runs[run.release], run)
        else:
            runs[run.release] = run
    for selftest in selftests:
        version = selftest["transformers"]
        run = runs.setdefault(version, Run(path=selftest["path"], release=version, info={"transformers": version}))
        run.selftest = selftest
    return sorted(runs.values(), key=lambda r: r.sort_key), errors


def _merge(run: Run, other: Run) -> None:
    """One release's runs on different devices (e.g. transformers-5.0.0-cuda.json): a test that ran wins over
    the same test skipped for want of its device."""
    for key, record in other.tests.items():
        if key not in run.tests or run.tests[key]["outcome"] == "skipped":
            run.tests[key] = record
    run.info.setdefault("merged_from", [run.path.name]).append(other.path.name)


def _run(path: Path, data: dict) -> tuple[Run, list[str]]:
    info = data["run_info"]  # results.read checked the file's shape
    run = Run(path=path, release=info["transformers"], info=info, crashed=info.get("crashed"))
    errors = []
    for index, record in enumerate(data["tests"]):
        problem = _test_problem(record)
        if problem:
            name = record.get("id") if isinstance(record, dict) else None
            errors.append(f"{path}: tests[{index}]{f' ({name})' if name else ''} left out: {problem}")
            continue
        run.tests[(record["check"], target_id(record["params"]))] = record
    return run, errors


def _test_problem(record) -> str:
    if not isinstance(record, dict):
        return "not an object"
    for key, kind in TEST_FIELDS.items():
        if not isinstance(record.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    if record["outcome"] not in OUTCOMES:
        return f"unknown outcome {record['outcome']!r} (known: {', '.join(sorted(OUTCOMES))})"
    if not isinstance(record.get("metrics", {}), dict):
        return "'metrics' is not an object"
    return ""


def _selftest(path: Path, data: dict) -> dict:
    named = []
    for index, fault in enumerate(data["faults"]):  # results.read checked the file's shape
        name = fault.get("name") if isinstance(fault, dict) else None
        if not isinstance(name, str) or "caught" not in fault:
            raise MalformedResults(f"{path}: faults[{index}] needs a \"name\" and \"caught\"")
        named.append(fault)
    caught = sum(bool(f["caught"]) for f in named)
    return {"path": path, "transformers": data["transformers"], "faults": named,
            "detected": data.get("detected", caught), "total": data.get("total", len(named))}
