"""The registry of suites, `suites/registry.toml`: one declaration per suite (its title and kind for the report,
the faults that target it, its self-test slice, the evidence that counts as catching a fault, whether it is slow).
The report, the self-test and the fault catalogue read it; tests/test_registry.py keeps it and suites/ in step."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cache_conformance import ROOT

PATH = ROOT / "suites" / "registry.toml"
KINDS = ("property", "usage path", "precondition")


class RegistryError(ValueError):
    """The registry cannot be read or declares something impossible (one line, with the file's name)."""


@dataclass(frozen=True)
class Suite:
    name: str  # suites/test_<name>.py; the `suite` of its results records
    title: str
    kind: str
    faults: tuple[str, ...]
    selftest: tuple[str, ...]
    evidence: tuple[str, ...]
    sixteen_bit_fault: str | None = None
    no_fault: str | None = None
    slow: bool = False
    former_names: tuple[str, ...] = ()

    @property
    def file(self) -> Path:
        return PATH.parent / f"test_{self.name}.py"


@dataclass(frozen=True)
class Registry:
    suites: dict[str, Suite]  # in the file's order
    exempt: dict[str, str]  # suite file name -> why it is not registered

    def title(self, name: str) -> str:
        """The report's title of a suite (also under a former name); a name no suite has is its own title."""
        return next((s.title for s in self.suites.values() if name == s.name or name in s.former_names), name)

    def order(self, name: str) -> int:
        """Where a suite's row group goes in the report: the registry's order, unknown names last."""
        names = [[s.name, *s.former_names] for s in self.suites.values()]
        return next((i for i, known in enumerate(names) if name in known), len(names))

    def suite_of_fault(self, fault: str) -> Suite:
        return next(s for s in self.suites.values() if fault in s.faults)

    def problems(self, folder: Path, catalogue: set[str]) -> list[str]:
        """What keeps the registry and `folder` (the suites) out of step: a suite file neither registered nor
        exempt, a registered suite without its file, a fault the catalogue lacks or no suite names."""
        files = {path.stem.removeprefix("test_") for path in folder.glob("test_*.py")}
        named = {fault for suite in self.suites.values() for fault in suite.faults}
        return (
            [f"suites/test_{name}.py is neither registered in {PATH.name} nor exempt with a reason"
             for name in sorted(files - set(self.suites) - set(self.exempt))]
            + [f"[{name}] is registered but suites/test_{name}.py does not exist"
               for name in sorted(set(self.suites) - files)]
            + [f"fault {fault!r} is named in {PATH.name} but not in the catalogue" for fault in sorted(named - catalogue)]
            + [f"fault {fault!r} of the catalogue is named by no suite" for fault in sorted(catalogue - named)]
        )


@functools.cache
def load(path: Path = PATH) -> Registry:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RegistryError(f"{path}: cannot read the registry of suites: {error}") from None
    exempt = data.pop("exempt", {})
    suites = {name: _suite(name, table, path) for name, table in data.items()}
    claimed = [fault for suite in suites.values() for fault in suite.faults]
    twice = sorted({fault for fault in claimed if claimed.count(fault) > 1})
    if twice:
        raise RegistryError(f"{path}: faults named by more than one suite: {twice} (a fault targets one property)")
    return Registry(suites, exempt)


def _suite(name: str, table: dict, path: Path) -> Suite:
    where = f"{path}: [{name}]"
    if not isinstance(table, dict):
        raise RegistryError(f"{path}: {name} = {table!r} is not a suite's table (an exemption goes under [exempt])")
    allowed = set(Suite.__dataclass_fields__) - {"name"}
    unknown = sorted(set(table) - allowed)
    missing = sorted({"title", "kind", "faults", "selftest", "evidence"} - set(table))
    if unknown or missing:
        problems = [f"unknown keys {unknown}"] * bool(unknown) + [f"missing keys {missing}"] * bool(missing)
        raise RegistryError(f"{where}: {', '.join(problems)}")
    if table["kind"] not in KINDS:
        raise RegistryError(f"{where}: kind {table['kind']!r} is none of {KINDS}")
    if not table["faults"] and not table.get("no_fault"):
        raise RegistryError(f"{where}: no faults and no `no_fault` reason")
    if table.get("sixteen_bit_fault") and table["sixteen_bit_fault"] not in table["faults"]:
        raise RegistryError(f"{where}: sixteen_bit_fault {table['sixteen_bit_fault']!r} is not one of its faults")
    return Suite(name, **{key: tuple(value) if isinstance(value, list) else value for key, value in table.items()})
