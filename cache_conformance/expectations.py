"""Known upstream non-conformance, read from a TOML data file (suites/expectations.toml).

Each entry:
    [[expected_failure]]
    tests = ["suites/test_equivalence.py::test_chunked*[float32-*"]  # node id patterns: `*` is any run of characters
    releases = ">=4.50,<4.56"                                       # PEP 440 specifier on the transformers version
    reason = "what upstream does wrong"
    evidence = "what the suite observed: message, size of the difference"
    reference = "upstream issue or pull request, if one exists"     # optional
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

REQUIRED = ("tests", "releases", "reason", "evidence")


class ExpectationsError(ValueError):
    """The expectations file can't be used; the message names the file and the entry."""


@dataclass
class Expectation:
    tests: list[str]
    releases: SpecifierSet
    reason: str
    evidence: str
    reference: str = ""

    def applies_to(self, nodeid: str, version: Version) -> bool:
        return version in self.releases and any(_pattern(p).fullmatch(nodeid) for p in self.tests)

    def as_dict(self) -> dict:
        return {
            "tests": self.tests,
            "releases": str(self.releases),
            "reason": self.reason,
            "evidence": self.evidence,
            "reference": self.reference,
        }


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
        try:
            releases = SpecifierSet(entry["releases"])
        except InvalidSpecifier:
            raise ExpectationsError(
                f"{path}: expected_failure #{number}: releases {entry['releases']!r} is not a version specifier"
            ) from None
        entries.append(Expectation(entry["tests"], releases, entry["reason"], entry["evidence"], entry.get("reference", "")))
    return entries


def find(expectations: list[Expectation], nodeid: str, version: Version) -> Expectation | None:
    """The first entry that applies to this test on this release."""
    return next((e for e in expectations if e.applies_to(nodeid, version)), None)
