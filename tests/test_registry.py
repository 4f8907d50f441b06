"""suites/registry.toml and suites/ stay in step: every suite file is registered (or exempt with a reason), every
catalogued fault is some suite's, and the registry says which suites are slow."""

import shutil

import pytest

from cache_conformance.records import registry
from cache_conformance.selftest import faults


def test_every_suite_is_registered_and_every_fault_is_some_suites():
    assert registry.load().problems(registry.PATH.parent, set(faults.CATALOGUE)) == []


def test_a_suite_file_nobody_registered_is_reported(tmp_path):
    """Positive control: a stand-in suite added beside the real ones, without a registry entry."""
    suites = tmp_path / "suites"
    shutil.copytree(registry.PATH.parent, suites, ignore=shutil.ignore_patterns("__pycache__"))
    (suites / "test_stand_in.py").write_text("def test_nothing():\n    pass\n")
    problems = registry.load().problems(suites, set(faults.CATALOGUE))
    assert problems == ["suites/test_stand_in.py is neither registered in registry.toml nor exempt with a reason"]


def test_exempt_files_and_unknown_faults_are_judged(tmp_path):
    path = tmp_path / "registry.toml"
    path.write_text(registry.PATH.read_text().replace(
        "\n[exempt]\n", '\n[exempt]\nstand_in = "a made-up file: the control of the exemption"\n'))
    (tmp_path / "test_stand_in.py").write_text("")
    for name in registry.load().suites:
        (tmp_path / f"test_{name}.py").write_text("")
    loaded = registry.load(path)
    assert loaded.problems(tmp_path, set(faults.CATALOGUE)) == []
    assert loaded.problems(tmp_path, set(faults.CATALOGUE) | {"made-up"}) == [
        "fault 'made-up' of the catalogue is named by no suite"]


def test_slow_is_said_of_exactly_the_suites_that_mark_checks_slow():
    for suite in registry.load().suites.values():
        assert suite.slow == ("mark.slow" in suite.file.read_text()), suite.name


def test_every_fault_knows_its_suite_and_each_sixteen_bit_fault_is_its_suites():
    suites = registry.load().suites
    for fault in faults.CATALOGUE.values():
        assert fault.name in suites[fault.caught_by].faults
    for suite in suites.values():
        assert suite.sixteen_bit_fault is None or suite.sixteen_bit_fault in suite.faults


@pytest.mark.parametrize(
    "change, problem",
    [
        (('kind = "property"\n', 'kind = "propertyy"\n'), "[equivalence]: kind 'propertyy' is none of"),
        (('evidence = ["logits"]\n', ""), "[equivalence]: missing keys ['evidence']"),
        (('title = "overflow"\n', 'title = "overflow"\ncolour = "red"\n'), "[overflow]: unknown keys ['colour']"),
        (('faults = ["overflow-wraps-around", "overflow-dropped"]', 'faults = ["overflow-wraps-around", "early-eviction"]'),
         "faults named by more than one suite: ['early-eviction']"),
        (("[equivalence]", "[equivalence"), "cannot read the registry of suites"),
    ],
    ids=["kind", "missing-key", "unknown-key", "fault-twice", "not-toml"],
)
def test_a_broken_registry_is_one_line_naming_the_file(tmp_path, change, problem):
    path = tmp_path / "registry.toml"
    path.write_text(registry.PATH.read_text().replace(*change, 1))
    with pytest.raises(registry.RegistryError) as raised:
        registry.load(path)
    message = str(raised.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message


def test_the_self_test_page_lists_every_catalogued_fault_with_its_suite():
    rows = {line.split("`")[1]: line for line in (registry.ROOT / "docs" / "selftest.md").read_text().splitlines()
            if line.startswith("| `")}
    for fault in faults.CATALOGUE.values():
        assert f"(suites/{fault.caught_by}.md)" in rows.get(fault.name, ""), fault.name
