"""How the self-test grades a run under a fault; the runs themselves happen in `tox -e selftest`."""

import pytest

from cache_conformance.selftest import faults
from cache_conformance.selftest import run as selftest

LOCATED = {
    "equivalence": "decode step 1 (position 7, 8 tokens seen): max abs diff 1.07 exceeds tolerance (atol 0.0001); "
                   "first failing position 7",
}


def record(suite, outcome, message="", raw=None):
    return {"id": f"suites/test_{suite}.py::test_x[{outcome}]", "suite": suite, "outcome": outcome,
            "raw_outcome": raw or outcome, "message": message}


def run_with(*tests, code=1):
    return selftest.Run(code, "", {"summary": {}, "tests": list(tests)})


@pytest.fixture
def fault():
    """A catalogue fault caught by the equivalence suite, whatever the catalogue's own entries say."""
    return faults.Fault("a-fault", "a deliberate bug", "equivalence", patch=lambda monkeypatch: None)


def test_a_located_failure_of_the_named_property_catches_the_fault(fault):
    detection = selftest.grade(fault, run_with(record("equivalence", "failed", LOCATED["equivalence"])))
    assert detection.caught
    assert detection.evidence == LOCATED["equivalence"]
    assert detection.tests_failed == ["suites/test_equivalence.py::test_x[failed]"]


@pytest.mark.parametrize(
    "tests, why",
    [
        ([record("equivalence", "failed", "AssertionError: something differs")], "do not point at the fault"),
        ([record("equivalence", "error", "fixture 'model' not found")], "no test failed (1 errors)"),
        ([record("equivalence", "xfailed", LOCATED["equivalence"], raw="failed")], "no test failed"),
        ([record("overflow", "failed", LOCATED["equivalence"])], "no test failed"),
    ],
    ids=["unlocated-failure", "collection-error", "expected-failure", "other-property"],
)
def test_anything_else_leaves_the_fault_uncaught(fault, tests, why):
    detection = selftest.grade(fault, run_with(*tests))
    assert not detection.caught
    assert why in detection.evidence


def test_a_missing_suite_leaves_its_faults_uncaught_and_says_which_file(fault):
    detection = selftest.grade(fault, None)
    assert not detection.caught
    assert detection.evidence == "suites/test_equivalence.py is missing"


def test_a_run_that_wrote_no_results_is_reported_with_its_last_line(fault):
    detection = selftest.grade(fault, selftest.Run(4, "collecting ...\nERROR: file not found: x.py\n", None))
    assert not detection.caught
    assert "ERROR: file not found: x.py" in detection.evidence


def test_the_clean_run_must_pass_every_test():
    assert selftest.clean_run_problem(run_with(record("overflow", "passed"), code=0)) is None
    problem = selftest.clean_run_problem(run_with(record("overflow", "failed", "boom")))
    assert "1 tests failed or errored" in problem and "boom" in problem


@pytest.mark.parametrize(
    "message",
    [
        "TypeError: patched() got an unexpected keyword argument 'cache_position'",
        "AssertionError: decode step 1 (position 7, 8 tokens seen) raised IndexError: index 20 is out of bounds",
        # a crash message that happens to mention a difference still is no evidence
        ("AssertionError: decode step 1 (position 7, 8 tokens seen) raised ValueError: max abs diff 3 exceeds "
         "tolerance (atol 0.0001) at position 7"),
    ],
    ids=["patch-crash", "model-crash", "crash-quoting-numbers"],
)
def test_a_test_that_crashes_under_the_fault_is_graded_crashed_not_caught(fault, message):
    detection = selftest.grade(fault, run_with(record("equivalence", "failed", message)))
    assert not detection.caught and detection.crashed and detection.outcome == "CRASHED"
    assert detection.evidence.startswith("crashed, not caught: ")


def test_a_located_catch_beside_a_crash_still_counts(fault):
    detection = selftest.grade(fault, run_with(record("equivalence", "failed", "TypeError: boom"),
                                               record("equivalence", "failed", LOCATED["equivalence"])))
    assert detection.caught and not detection.crashed


@pytest.mark.parametrize(
    "evidence, expected",
    [
        (LOCATED["equivalence"], 1.07 / 0.0001),
        (("layer 0 (sliding), slot 0, batch 0: should hold position 0 but holds zeros (unused); max abs diff 0.9 "
          "exceeds tolerance (atol 0.6); slots should hold [0]"), 1.5),
        (("decode: 3 of 20 elements (15.00%) differ beyond atol 1 + rtol 0*|expected|; max abs diff 2.5 at [1, 2]; "
          "rows [1]"), 2.5),
        (("static cache: bytes held grew by 640 bytes per step over decode steps 5..20 (detection threshold 64 "
          "bytes per step)"), 10.0),
        ("the call returned normally: the cache wrapped around, dropped tokens", None),
    ],
    ids=["logits", "contents", "snapshot", "bytes", "no-figures"],
)
def test_the_margin_is_the_difference_over_what_it_had_to_exceed(evidence, expected):
    assert selftest.margin(evidence) == (pytest.approx(expected) if expected is not None else None)


def test_the_table_names_every_fault_and_marks_the_uncaught(fault):
    caught = selftest.grade(fault, run_with(record("equivalence", "failed", LOCATED["equivalence"])), "bfloat16")
    missed = selftest.grade(fault, None)
    lines = selftest.table([caught, missed]).splitlines()
    assert lines[0].split() == ["fault", "dtype", "tests", "failed", "property", "outcome", "margin"]
    assert lines[2].split() == ["a-fault", "bfloat16", "1", "equivalence", "caught", "1.07e+04x"]
    assert lines[3].split() == ["a-fault", "float32", "0", "equivalence", "NO", "-"]


def test_each_property_has_a_sixteen_bit_fault_from_the_catalogue():
    assert set(selftest.SIXTEEN_BIT) == set(selftest.PROPERTIES) - set(selftest.WITHOUT_SIXTEEN_BIT)
    for prop, name in selftest.SIXTEEN_BIT.items():
        assert faults.CATALOGUE[name].caught_by == prop


def test_every_property_with_a_fault_has_a_slice_and_a_location_pattern():
    properties = {fault.caught_by for fault in faults.CATALOGUE.values()}
    assert properties <= set(selftest.SLICES) == set(selftest.LOCATIONS)


def test_a_fault_patch_that_raises_a_type_error_is_graded_crashed(fault):
    # The real pipeline: the equivalence slice in a worker process, its update replaced by a broken patch.
    session = selftest.Session(("suites/test_equivalence.py::test_prefill_then_decode_across_the_window",
                                *selftest.SLICES["equivalence"], "-p", "tests.plugins.cache_update_raises_type_error"))
    [run] = selftest.run_all([session], workers=1)
    detection = selftest.grade(fault, run)
    assert (detection.caught, detection.crashed, detection.outcome) == (False, True, "CRASHED"), detection
    assert "raised TypeError: patched() got an unexpected keyword argument 'cache_position'" in detection.evidence


def test_a_session_whose_process_dies_comes_back_without_results_and_leaves_its_fault_uncaught(fault):
    [run] = selftest.run_all([selftest.Session(("suites/test_checkpoint.py", "-p", "tests.plugins.process_dies"))],
                             workers=1)
    assert (run.code, run.results) == (-1, None) and "a worker process died" in run.output, run
    detection = selftest.grade(fault, run)
    assert not detection.caught and detection.evidence.startswith("pytest exited -1 without results"), detection
