"""Known upstream non-conformance, read from a TOML data file (suites/expectations.toml).

The file starts with the newest adopted release, the one whose results a person reviewed last:
    adopted = "5.25.0"
On a newer release every entry whose range includes the adopted release is carried forward provisionally: a
failure it explains is an expected failure marked "carried from 5.25.0, release not adopted"; anything else is
judged raw. `python -m cache_conformance.releases.adopt` extends the ranges that held and moves `adopted`.

Each entry:
    [[expected_failure]]
    tests = ["suites/test_equivalence.py::test_chunked*[float32-*"]  # node id patterns: `*` is any run of characters
    releases = ">=4.50,<4.56"        # PEP 440 specifier on the transformers version, bounded above: a range ends at
                                     # the newest release it was checked on (at most the adopted one)
    raises = "AssertionError"        # the type of the exception the test must end with (or a list of types)
    match = 'chunk [0-9]+ of [0-9]+ .*max abs diff'  # a regular expression the exception's message must contain
    reason = "what upstream does wrong"
    evidence = "what the suite observed: message, size of the difference"
    reference = "upstream issue or pull request, if one exists"     # optional
    checkpoints = ["tiny-gemma3", "tiny-gemma3-other"]  # optional: the embedded checkpoints the scans show failing

A listed test counts as the expected failure only when its call ends with that exception and message; passing
(XPASS), failing otherwise, or erroring in setup (a harness crash) are not expected and turn the run red.
Whether a check reaches a defect can depend on the checkpoint's shape (its window, its layers): a pass is XPASS only
on the embedded checkpoints the entry names (`checkpoints`, default the embedded one, fixtures/tiny-gemma3, whose
scans are the evidence). On any other checkpoint the entry still explains a failure, strictly, and a pass is a pass,
recorded as not reaching the defect.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from cache_conformance import ROOT
from cache_conformance.records import results

DEFAULT_PATH = ROOT / "suites" / "expectations.toml"

REQUIRED = ("tests", "releases", "raises", "match", "reason", "evidence")
OPTIONAL = ("reference", "checkpoints")
DEFAULT_CHECKPOINTS = ("tiny-gemma3",)  # the embedded text checkpoint: its scans are the evidence
UPPER_BOUNDS = ("<", "<=", "==", "===", "~=")


class ExpectationsError(ValueError):
    """The expectations file can't be used; the message names the file and the entry."""


@dataclass
class Expectation:
    tests: list[str]
    releases: SpecifierSet
    raises: list[str]
    match: re.Pattern
    reason: str
    evidence: str
    reference: str = ""
    checkpoints: tuple[str, ...] = DEFAULT_CHECKPOINTS  # where a pass is XPASS(strict): the scans show it failing

    def explains(self, exception_type: str, message: str) -> bool:
        """Whether a test that ended with `exception_type: message` failed the way this entry says it does."""
        return exception_type in self.raises and self.match.search(message) is not None

    def explains_record(self, record: dict) -> bool:
        """Whether a results record's call failed the way this entry says (`explains`, from what the record kept)."""
        return record.get("raw_outcome") == "failed" and self.explains(*results.exception_of(record))

    def describe(self) -> str:
        return f"{' or '.join(self.raises)} matching {self.match.pattern!r}"

    def as_dict(self) -> dict:
        return {
            "tests": self.tests,
            "releases": str(self.releases),
            "raises": self.raises,
            "match": self.match.pattern,
            "reason": self.reason,
            "evidence": self.evidence,
            "reference": self.reference,
            "checkpoints": list(self.checkpoints),
        }


@dataclass
class Applied:
    """The entry that judges a test on a release; `carried_from` is the adopted release when the entry reaches the
    test's release only by being carried forward (the release is newer than every adopted one)."""

    entry: Expectation
    carried_from: Version | None = None

    @property
    def label(self) -> str:
        """How a verdict by this entry is marked: empty for an adopted release."""
        return f"carried from {self.carried_from}, release not adopted" if self.carried_from else ""


@dataclass
class ExpectationsFile:
    path: Path
    adopted: Version
    entries: list[Expectation]

    def provisional(self, version: Version) -> bool:
        """Whether verdicts on `version` are provisional: it is newer than the newest adopted release."""
        return version > self.adopted

    def reaches(self, entry: Expectation, version: Version) -> Applied | None:
        """How `entry` judges tests on `version`: directly when its range includes it, carried when `version` is
        newer than the adopted release and the range includes that one, else not at all."""
        if version in entry.releases:
            return Applied(entry)
        if self.provisional(version) and self.adopted in entry.releases:
            return Applied(entry, self.adopted)
        return None

    @functools.cached_property
    def _positions_by_function(self) -> dict[str | None, list[int]]:
        """Each entry's position under the "file::function" its patterns name (None: a `*` before the parameters),
        so that judging a test tries the few entries that can match it, not all of them."""
        index = defaultdict(list)
        for position, entry in enumerate(self.entries):
            for function in {_function(pattern) for pattern in entry.tests}:
                index[None if "*" in function else function].append(position)
        return index

    def find(self, nodeid: str, version: Version) -> Applied | None:
        """The entry that judges this test on this release: the first whose range includes it, else the first
        carried forward to it."""
        index = self._positions_by_function
        candidates = [self.entries[i] for i in sorted({*index.get(_function(nodeid), ()), *index.get(None, ())})]
        reached = [self.reaches(entry, version) for entry in candidates
                   if any(matches(p, nodeid) for p in entry.tests)]
        reached = [applied for applied in reached if applied is not None]
        return next((a for a in reached if not a.carried_from), None) or next(iter(reached), None)

    def unused(self, ran: list[str], version: Version, could_match: Callable[[str], bool]) -> list[Expectation]:
        """Entries that reach `version` and have patterns this run `could_match`, none of which matched a test in
        `ran`: stale entries, or tests renamed under them."""
        unused = []
        for entry in self.entries:
            judged = [pattern for pattern in entry.tests if could_match(pattern)]
            if self.reaches(entry, version) and judged and not any(
                matches(pattern, nodeid) for pattern in judged for nodeid in ran
            ):
                unused.append(entry)
        return unused


def matches(pattern: str, nodeid: str) -> bool:
    """Whether a node id pattern (`*` is any run of characters) matches the whole of `nodeid`."""
    return _pattern(pattern).fullmatch(nodeid) is not None


def names_function(pattern: str, functions: set[str]) -> bool:
    """Whether a pattern's part before the parameters ("file::function") matches one of `functions`."""
    return any(matches(_function(pattern), function) for function in functions)


def _function(nodeid_or_pattern: str) -> str:
    return nodeid_or_pattern.partition("[")[0]


@functools.cache  # re's own cache holds 512 patterns; the file has more
def _pattern(text: str) -> re.Pattern:
    """Only `*` is special, so the brackets of parametrized node ids need no escaping (unlike fnmatch)."""
    return re.compile(".*".join(re.escape(part) for part in text.split("*")))


def load(path: Path) -> ExpectationsFile:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ExpectationsError(f"{path}: cannot read expectations: {error}") from None
    unknown = set(data) - {"adopted", "expected_failure"}
    if unknown:
        raise ExpectationsError(f"{path}: unknown top-level keys {sorted(unknown)}; only adopted and "
                                "[[expected_failure]] are allowed")
    try:
        adopted = Version(data["adopted"])
    except (KeyError, InvalidVersion, TypeError):
        raise ExpectationsError(f"{path}: adopted = {data.get('adopted')!r} must name the newest adopted release, "
                                'e.g. adopted = "5.24.0"') from None
    entries = []
    for number, entry in enumerate(data.get("expected_failure", []), start=1):
        entries.append(_entry(entry, f"{path}: expected_failure #{number}"))
    return ExpectationsFile(path, adopted, entries)


def _entry(entry: dict, where: str) -> Expectation:
    missing = [key for key in REQUIRED if not entry.get(key)]
    extra = set(entry) - set(REQUIRED) - set(OPTIONAL)
    if missing or extra:
        raise ExpectationsError(f"{where} ({entry.get('tests', '?')}): missing {missing} / unknown keys {sorted(extra)}")
    if not isinstance(entry["tests"], list) or not all(isinstance(t, str) for t in entry["tests"]):
        raise ExpectationsError(f"{where}: tests must be a list of node id patterns")
    try:
        releases = SpecifierSet(entry["releases"])
    except InvalidSpecifier:
        raise ExpectationsError(f"{where}: releases {entry['releases']!r} is not a version specifier") from None
    if not any(spec.operator in UPPER_BOUNDS for spec in releases):
        raise ExpectationsError(
            f"{where}: releases {entry['releases']!r} has no upper bound; end it at the newest release it was "
            "checked on (e.g. ',<=5.24.0'): newer releases are judged by carrying it forward until adopted"
        )
    raises = [entry["raises"]] if isinstance(entry["raises"], str) else entry["raises"]
    if not isinstance(raises, list) or not all(isinstance(r, str) and r.isidentifier() for r in raises):
        raise ExpectationsError(f"{where}: raises must name an exception type (or a list of them)")
    try:
        match = re.compile(entry["match"])
    except (re.error, TypeError) as error:
        raise ExpectationsError(f"{where}: match {entry['match']!r} is not a regular expression ({error})") from None
    checkpoints = entry.get("checkpoints", list(DEFAULT_CHECKPOINTS))
    if not isinstance(checkpoints, list) or not checkpoints or not all(isinstance(c, str) for c in checkpoints):
        raise ExpectationsError(f"{where}: checkpoints must be a list of embedded checkpoints' folder names "
                                f"(e.g. {list(DEFAULT_CHECKPOINTS)})")
    return Expectation(entry["tests"], releases, raises, match, entry["reason"], entry["evidence"],
                       entry.get("reference", ""), tuple(checkpoints))


def extended_to(releases: str, version: Version) -> str:
    """`releases` with its upper bound moved to `version` (`<=version`), every other clause kept as written: an
    exact or compatible pin (`==5.24.*`, `~=5.24`) becomes the lower bound it implies."""
    kept = []
    for clause in (c.strip() for c in releases.split(",")):
        spec = Specifier(clause)
        if spec.operator in ("<", "<="):
            continue
        if spec.operator in ("==", "===", "~="):
            kept.append(f">={spec.version.removesuffix('.*')}")
        else:
            kept.append(clause)
    return ",".join([*kept, f"<={version}"])


def judge(report, call, applied: Applied, checkpoint: str | None) -> None:
    """An expected failure holds only when the call failed the way the entry says (strict, like wpt's FAIL vs
    CRASH): a pass is XPASS(strict) on the checkpoints the entry names (`checkpoint`: the run's embedded
    checkpoint's folder name, None for any other), any other failure stays a failure with both texts. Setup errors
    are never expected. Outcomes are set as pytest's own xfail sets them, so reports, xdist and the results file
    agree. A verdict by an entry carried forward to a release not adopted yet says so in its reason."""
    if report.skipped:
        return
    expectation, label = applied.entry, applied.label
    reason = f"{label}: {expectation.reason}" if label else expectation.reason
    if report.passed and checkpoint not in expectation.checkpoints:
        report.user_properties.append(("expectation_not_reached", (
            f"passed on this checkpoint; expected to fail on {', '.join(expectation.checkpoints)}, where the scans "
            "show it: this checkpoint's shape does not reach the defect")))
        return
    if report.passed:
        report.outcome = "failed"
        report.longrepr = f"[XPASS(strict)] {reason}"
        return
    exception_type, message = call.excinfo.typename, str(call.excinfo.value)
    if expectation.explains(exception_type, message):
        report.outcome = "skipped"
        report.wasxfail = reason
        return
    mismatch = (f"expected failure{f' ({label})' if label else ''} did not match: expected {expectation.describe()}; "
                f"got {exception_type}: {message.splitlines()[0] if message else ''}")
    report.user_properties.append(("expectation_mismatch", mismatch))
    if hasattr(report.longrepr, "addsection"):
        report.longrepr.addsection("expectation", mismatch)
