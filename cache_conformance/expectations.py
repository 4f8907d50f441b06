"""Known upstream non-conformance, read from a TOML data file (suites/expectations.toml).

Each entry:
    [[expected_failure]]
    test = "suites/test_equivalence.py::test_chunked_prefill[*"   # fnmatch pattern on the pytest node id
    releases = ">=4.50,<4.56"                                       # PEP 440 specifier on the transformers version
    reason = "what upstream does wrong"
    evidence = "what the suite observed: message, size of the difference"
    reference = "upstream issue or pull request, if one exists"     # optional
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

REQUIRED = ("test", "releases", "reason", "evidence")


class ExpectationsError(ValueError):
    """The expectations file can't be used; the message names the file and the entry."""


@dataclass
class Expectation:
    test: str
    releases: SpecifierSet
    reason: str
    evidence: str
    reference: str = ""
    matched: list[str] = field(default_factory=list)

    def applies_to(self, nodeid: str, version: Version) -> bool:
        return version in self.releases and fnmatch.fnmatchcase(nodeid, self.test)

    def as_dict(self) -> dict:
        return {
            "test": self.test,
            "releases": str(self.releases),
            "reason": self.reason,
            "evidence": self.evidence,
            "reference": self.reference,
        }


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
                f"{path}: expected_failure #{number} ({entry.get('test', '?')}): "
                f"missing {missing} / unknown keys {sorted(extra)}"
            )
        try:
            releases = SpecifierSet(entry["releases"])
        except InvalidSpecifier:
            raise ExpectationsError(
                f"{path}: expected_failure #{number}: releases {entry['releases']!r} is not a version specifier"
            ) from None
        entries.append(Expectation(entry["test"], releases, entry["reason"], entry["evidence"], entry.get("reference", "")))
    return entries


def find(expectations: list[Expectation], nodeid: str, version: Version) -> Expectation | None:
    """The first entry that applies to this test on this release, noting the match."""
    for expectation in expectations:
        if expectation.applies_to(nodeid, version):
            expectation.matched.append(nodeid)
            return expectation
    return None


def unused(expectations: list[Expectation], version: Version) -> list[Expectation]:
    """Entries for this release that matched no collected test: stale, or a typo in the pattern."""
    return [e for e in expectations if version in e.releases and not e.matched]
