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
import re
from pathlib import Path

from packaging.version import InvalidVersion, Version

FORMAT = 1


MESSAGE_LIMIT = 2000


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


def read_run(path: Path) -> dict:
    """`read`, for a tool that needs a run of the suites: a self-test results file is refused with one line too."""
    data = read(path)
    if data.get("kind") == "selftest":
        raise ResultsError(f"{path}: a self-test results file, not a run of the suites")
    return data


def write(path: Path, payload: dict) -> None:
    """Write a results file (a run's, or the self-test's): the one writer, beside the one reader."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


def unreleased(release: str) -> bool:
    """Whether a run's `run_info.transformers` is a development build's version (5.26.0.dev0: transformers' main
    branch), not a release's (nor a stand-in's "latest")."""
    try:
        return Version(release).is_prerelease
    except InvalidVersion:
        return False


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
