"""The adopt command on recorded results (tests/data/adopt): which carried entries it extends, what it lists for a
person, and that the expectations file keeps its comments and layout."""

import shutil
from pathlib import Path

import pytest
from packaging.version import Version

from cache_conformance.records import expectations
from cache_conformance.releases import adopt

DATA = Path(__file__).resolve().parent / "data" / "adopt"
RESULTS = DATA / "transformers-4.51.3.json"
OVERFLOW = "suites/test_overflow.py"


@pytest.fixture
def expectations_file(tmp_path):
    path = tmp_path / "expectations.toml"
    shutil.copyfile(DATA / "expectations.toml", path)
    return path


def test_adopting_extends_the_entries_that_held_and_lists_the_rest(expectations_file, capsys):
    before = expectations_file.read_text()
    assert adopt.main([str(RESULTS), "--expectations", str(expectations_file)]) == 0
    after = expectations.load(expectations_file)
    assert after.adopted == Version("4.51.3")
    ranges = [str(e.releases) for e in after.entries]
    assert [e.tests[0].split("::")[1].partition("[")[0] for e in after.entries][:3] == [
        "test_overflow_leaves_the_cache_intact", "test_overflow_error_is_clear", "test_overflow_raises"]
    assert after.entries[0].releases == expectations.SpecifierSet(">=4.50,<=4.51.3")  # held on all four
    assert ranges[1:] == [str(e.releases) for e in expectations.load(DATA / "expectations.toml").entries[1:]]

    # only the two edits: the adopted release and the extended range, comments and layout kept
    changed = [(old, new) for old, new in zip(before.splitlines(), expectations_file.read_text().splitlines())
               if old != new]
    assert changed == [('adopted = "4.50.3"', 'adopted = "4.51.3"'),
                       ('releases = ">=4.50,<=4.50.3"  # ends at the adopted release',
                        'releases = ">=4.50,<=4.51.3"  # ends at the adopted release')]

    printed = capsys.readouterr().out
    assert printed.startswith("## transformers 4.51.3: same as 4.50.3 except 6 check(s)\n")
    assert "1 carried entries extended to `<=4.51.3`, 3 left as they were" in printed
    assert f"`{OVERFLOW}::test_overflow_leaves_the_cache_intact[*`: held on 4 test(s)" in printed
    assert (f"- `{OVERFLOW}::test_overflow_error_is_clear[*` (<=4.50.3,>=4.50): 1 of 4 test(s) passed or failed "
            "another way") in printed
    assert "- `suites/test_equivalence.py::*[float32-cuda-*` (<=4.50.3,>=4.50): none of its tests ran" in printed
    assert (f"- changed failure: `{OVERFLOW}::test_overflow_error_is_clear[chunk-crossing-capacity-float32-cpu-eager]`: "
            "AssertionError: KeyError is neither a ValueError") in printed
    assert printed.count("- new pass: ") == 4 and f"`{OVERFLOW}::test_overflow_raises[" in printed
    assert ("- new failure: `suites/test_snapshots.py::test_logits_match_the_recorded_reference[float32-cpu-eager-"
            "prompt-shorter-than-window]`: AssertionError: assert [- snapshot] == [+ received] decode: 4607 of 5120") in printed
    assert "still pin transformers" in printed  # no --pins-from


def test_a_dry_run_changes_nothing(expectations_file, capsys):
    before = expectations_file.read_text()
    assert adopt.main([str(RESULTS), "--expectations", str(expectations_file), "--dry-run"]) == 0
    assert expectations_file.read_text() == before
    assert "1 carried entries extended" in capsys.readouterr().out


def test_results_judged_with_expectations_are_judged_again_from_what_the_tests_did(expectations_file, tmp_path):
    """A run with expectations records xfailed outcomes and mismatch lines; adoption reads the raw outcome, the
    exception type and the call's own message, so it decides as it does on a raw run."""
    import json

    judged = json.loads(RESULTS.read_text())
    for record in judged["tests"]:
        if record["id"].startswith(f"{OVERFLOW}::test_overflow_error_is_clear[chunk"):
            record["mismatch"] = "expected failure (carried from 4.50.3, release not adopted) did not match: ..."
            record["message"] = f"{record['mismatch']}\n{record['message']}"
        elif record["raw_outcome"] == "failed":
            record["outcome"] = "xfailed"
    path = tmp_path / "judged.json"
    path.write_text(json.dumps(judged))
    known = expectations.load(expectations_file)
    raw, rejudged = (adopt.judge(known, json.loads(p.read_text())["tests"], Version("4.51.3")) for p in (RESULTS, path))
    assert [(f.kind, f.test, f.message) for f in raw.findings] == [(f.kind, f.test, f.message) for f in rejudged.findings]
    assert [v.extended for v in raw.carried] == [v.extended for v in rejudged.carried] == [True, False, False, False]


@pytest.mark.parametrize(
    "edit, complaint",
    [(lambda data: data["run_info"].update(transformers="4.50.3"), "is not newer than 4.50.3, the adopted release"),
     (lambda data: data["run_info"].update(crashed="exit code 1"), "the run crashed"),
     (lambda data: data.pop("tests"), '"tests" is not a list')],
    ids=["not-newer", "crashed", "not-results"],
)
def test_bad_results_are_one_line_and_change_nothing(expectations_file, tmp_path, capsys, edit, complaint):
    import json

    data = json.loads(RESULTS.read_text())
    edit(data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    before = expectations_file.read_text()
    assert adopt.main([str(path), "--expectations", str(expectations_file)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and complaint in error and error.count("\n") == 1, error
    assert expectations_file.read_text() == before


def test_results_of_two_releases_are_refused(expectations_file, tmp_path, capsys):
    import json

    other = json.loads(RESULTS.read_text())
    other["run_info"]["transformers"] = "4.52.4"
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    assert adopt.main([str(RESULTS), str(path), "--expectations", str(expectations_file)]) == 2
    assert "several releases (4.51.3, 4.52.4)" in capsys.readouterr().err


def test_pins_from_an_environment_of_another_release_change_neither_file(expectations_file, tmp_path, monkeypatch,
                                                                         capsys):
    """--pins-from must name the environment that ran the release: this interpreter's has another transformers."""
    import sys

    from cache_conformance.releases import pins

    monkeypatch.setattr(pins, "PROJECT_PINS", tmp_path / "project-tests.txt")
    shutil.copyfile(DATA.parent.parent.parent / "constraints" / "project-tests.txt", pins.PROJECT_PINS)
    before = (expectations_file.read_text(), pins.PROJECT_PINS.read_text())
    assert adopt.main([str(RESULTS), "--expectations", str(expectations_file), "--pins-from", sys.executable]) == 2
    assert "not 4.51.3" in capsys.readouterr().err
    assert (expectations_file.read_text(), pins.PROJECT_PINS.read_text()) == before
