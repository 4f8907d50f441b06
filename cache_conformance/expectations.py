"""Known upstream non-conformance, read from a TOML data file (suites/expectations.toml).

Each entry:
    [[expected_failure]]
    tests = ["suites/test_equivalence.py::test_chunked*[float32-*"]  # node id patterns: `*` is any run of characters
    releases = ">=4.50,<4.56"        # PEP 440 specifier on the transformers version, bounded above: a range ends at
                                     # the newest release it was checked on, and newer releases are judged raw
    raises = "AssertionError"        # the type of the exception the test must end with (or a list of types)
    match = 'chunk [0-9]+ of [0-9]+ .*max abs diff'  # a regular expression the exception's message must contain
    reason = "what upstream does wrong"
    evidence = "what the suite observed: message, size of the difference"
    reference = "upstream issue or pull request, if one exists"     # optional

A listed test counts as the expected failure only when its call ends with that exception and message; passing
(XPASS), failing otherwise, or erroring in setup (a harness crash) are not expected and turn the run red.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

REQUIRED = ("tests", "releases", "raises", "match", "reason", "evidence")
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

    def applies_to(self, nodeid: str, version: Version) -> bool:
        return version in self.releases and any(matches(p, nodeid) for p in self.tests)

    def explains(self, exception_type: str, message: str) -> bool:
        """Whether a test that ended with `exception_type: message` failed the way this entry says it does."""
        return exception_type in self.raises and self.match.search(message) is not None

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
        }


def matches(pattern: str, nodeid: str) -> bool:
    """Whether a node id pattern (`*` is any run of characters) matches the whole of `nodeid`."""
    return _pattern(pattern).fullmatch(nodeid) is not None


def names_function(pattern: str, functions: set[str]) -> bool:
    """Whether a pattern's part before the parameters ("file::function") matches one of `functions`."""
    return any(matches(pattern.partition("[")[0], function) for function in functions)


def _pattern(text: str) -> re.Pattern:
    """Only `*` is special, so the brackets of parametrized node ids need no escaping (unlike fnmatch)."""
    return re.compile(".*".join(re.escape(part) for part in text.split("*")))


def load(path: Path) -> list[Expectation]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ExpectationsError(f"{path}: cannot read expectations: {error}") from None
    unknown = set(data) - {"expected_failure"}
    if unknown:
        raise ExpectationsError(f"{path}: unknown top-level keys {sorted(unknown)}; only [[expected_failure]] is allowed")
    entries = []
    for number, entry in enumerate(data.get("expected_failure", []), start=1):
        missing = [key for key in REQUIRED if not entry.get(key)]
        extra = set(entry) - set(REQUIRED) - {"reference"}
        if missing or extra:
            raise ExpectationsError(
                f"{path}: expected_failure #{number} ({entry.get('tests', '?')}): "
                f"missing {missing} / unknown keys {sorted(extra)}"
            )
        if not isinstance(entry["tests"], list) or not all(isinstance(t, str) for t in entry["tests"]):
            raise ExpectationsError(f"{path}: expected_failure #{number}: tests must be a list of node id patterns")
        where = f"{path}: expected_failure #{number}"
        try:
            releases = SpecifierSet(entry["releases"])
        except InvalidSpecifier:
            raise ExpectationsError(f"{where}: releases {entry['releases']!r} is not a version specifier") from None
        if not any(spec.operator in UPPER_BOUNDS for spec in releases):
            raise ExpectationsError(
                f"{where}: releases {entry['releases']!r} has no upper bound; end it at the newest release it was "
                "checked on (e.g. ',<=5.24.0'): newer releases are judged raw until a scan extends it"
            )
        raises = [entry["raises"]] if isinstance(entry["raises"], str) else entry["raises"]
        if not isinstance(raises, list) or not all(isinstance(r, str) and r.isidentifier() for r in raises):
            raise ExpectationsError(f"{where}: raises must name an exception type (or a list of them)")
        try:
            match = re.compile(entry["match"])
        except (re.error, TypeError) as error:
            raise ExpectationsError(f"{where}: match {entry['match']!r} is not a regular expression ({error})") from None
        entries.append(Expectation(entry["tests"], releases, raises, match, entry["reason"], entry["evidence"],
                                   entry.get("reference", "")))
    return entries


def find(expectations: list[Expectation], nodeid: str, version: Version) -> Expectation | None:
    """The first entry that applies to this test on this release."""
    return next((e for e in expectations if e.applies_to(nodeid, version)), None)
