"""The evidence behind suites/expectations.toml: the committed raw scans (reports/scans/) and GPU runs
(reports/device-runs/), replayed against the expectations file by cache_conformance.releases.replay."""

import json
from pathlib import Path

import pytest
from packaging.version import Version

from cache_conformance.records import expectations
from cache_conformance.releases import jobs, replay

ROOT = Path(__file__).resolve().parent.parent
SHOWN = 30


@pytest.fixture(scope="module")
def known():
    return expectations.load(expectations.DEFAULT_PATH)


@pytest.fixture(scope="module")
def runs():
    return replay.committed_runs()


@pytest.fixture(scope="module")
def replayed(known, runs):
    return replay.replay(known, runs)


def test_every_minor_release_up_to_the_adopted_one_has_a_raw_scan(known):
    scanned = {}
    for path in (ROOT / "reports" / "scans").rglob("transformers-*.json"):
        info = json.loads(path.read_text())["run_info"]
        assert info["expectations"] == "ignored", f"{path} is not a raw scan (run it with --no-expectations)"
        scanned.setdefault(Version(info["transformers"]).release[:2], path)
    minors = {tuple(map(int, minor.split("."))) for minor in jobs.tox_minors((ROOT / "tox.ini").read_text())}
    wanted = {minor for minor in minors if minor <= known.adopted.release[:2]}
    assert wanted <= set(scanned), f"no raw scan of {sorted(wanted - set(scanned))}"


def test_every_committed_raw_failure_is_explained_by_the_entry_that_judges_it(replayed):
    assert not replayed.unexplained, (f"{len(replayed.unexplained)} committed raw failures no entry explains:\n"
                                      + "\n".join(replayed.unexplained[:SHOWN]))


def test_every_entry_explains_a_committed_failure_on_each_scanned_release_it_claims(replayed):
    assert not replayed.unproven, "\n".join(replayed.unproven[:SHOWN])


def test_no_entry_claims_a_test_that_passed_on_a_release_it_covers(replayed):
    assert not replayed.claimed_passes, "\n".join(replayed.claimed_passes[:SHOWN])


def test_evidence_texts_name_only_releases_that_ran(replayed):
    assert not replayed.unscanned, "\n".join(replayed.unscanned)


def test_the_replay_sees_an_unexplained_failure_an_unproven_claim_and_an_unscanned_version(known, runs):
    """Positive control: the same committed runs against an expectations file with one entry taken out, one
    claiming a release it was not seen failing on, and one naming a release no run ran."""
    overflow = next(e for e in known.entries if e.tests == ["suites/test_overflow.py::test_overflow_error_is_clear[*"])
    claimed = expectations.Expectation(["suites/test_overflow.py::test_overflow_raises[*"], overflow.releases,
                                       ["AssertionError"], overflow.match, "made up", "seen on 4.49.9")
    altered = expectations.ExpectationsFile(known.path, known.adopted,
                                            [claimed, *(e for e in known.entries if e is not overflow)])
    found = replay.replay(altered, runs)
    assert any("test_overflow_error_is_clear[" in line and "is neither a ValueError" in line
               for line in found.unexplained), found.unexplained[:3]
    assert any(line.startswith("expected_failure #1 (suites/test_overflow.py::test_overflow_raises[*")
               for line in found.unproven)
    assert found.unscanned[0].endswith("evidence names 4.49.9, which no committed run ran")


def test_the_replay_names_a_pass_that_an_entry_claims(tmp_path):
    """Positive control of the claimed-passes check: an entry over a test that passed on a release it covers."""
    path = tmp_path / "expectations.toml"
    path.write_text('adopted = "5.0.0"\n\n[[expected_failure]]\ntests = ["suites/test_x.py::test_y[*"]\n'
                    'releases = ">=5.0,<=5.0.0"\nraises = "AssertionError"\nmatch = "wrong"\nreason = "r"\n'
                    'evidence = "e"\n')
    record = {"id": "suites/test_x.py::test_y[float32-cpu-eager]", "raw_outcome": "passed", "outcome": "passed",
              "checkpoint": "tiny-gemma3"}
    other = record | {"checkpoint": "tiny-gemma3-other"}  # a checkpoint the entry does not name: a pass is a pass
    found = replay.replay(expectations.load(path), {Version("5.0.0"): [record, other]})
    assert found.claimed_passes == [
        ("5.0.0 suites/test_x.py::test_y[float32-cpu-eager] on tiny-gemma3: passed, but an entry expects it to fail "
        "there")]
