"""How the self-test grades a run under a fault, from the evidence in its results records; the runs themselves
happen in `tox -e selftest`."""

import pytest

from cache_conformance.records import registry
from cache_conformance.selftest import faults
from cache_conformance.selftest import run as selftest

LOGITS = {"kind": "logits", "where": "decode step 1 (position 7, 8 tokens seen)", "position": 7, "batch": 0,
          "difference": 1.07, "limit": 0.0001}
MESSAGE = ("AssertionError: decode step 1 (position 7, 8 tokens seen): max abs diff 1.07 exceeds tolerance "
           "(atol 0.0001); first failing position 7")


def record(suite, outcome, message=MESSAGE, raw=None, evidence=None, raised="AssertionError"):
    return {"id": f"suites/test_{suite}.py::test_x[{outcome}]", "suite": suite, "outcome": outcome,
            "raw_outcome": raw or outcome, "message": message, "raised": raised,
            "metrics": {"evidence": evidence} if evidence else {}}


def run_with(*tests, code=1):
    return selftest.Run(code, "", {"summary": {}, "tests": list(tests)})


@pytest.fixture
def fault():
    """A catalogue fault the registry has the equivalence suite catch (evidence kind "logits")."""
    fault = faults.CATALOGUE["reduced-precision-keys"]
    assert fault.caught_by == "equivalence" and registry.load().suites["equivalence"].evidence == ("logits",)
    return fault


def test_a_failure_with_evidence_of_the_suites_kind_catches_the_fault(fault):
    detection = selftest.grade(fault, run_with(record("equivalence", "failed", evidence=LOGITS)))
    assert detection.caught and detection.outcome == "caught"
    assert detection.evidence == MESSAGE
    assert detection.tests_failed == ["suites/test_equivalence.py::test_x[failed]"]
    assert detection.margin == pytest.approx(1.07 / 0.0001)


@pytest.mark.parametrize(
    "tests, why",
    [
        ([record("equivalence", "failed", "AssertionError: something differs")], "carry no evidence of the suite's"),
        ([record("equivalence", "failed", evidence={**LOGITS, "kind": "beam"})], "carry no evidence of the suite's"),
        ([record("equivalence", "error", "fixture 'model' not found", raised="LookupError")], "no test failed (1 errors)"),
        ([record("equivalence", "xfailed", raw="failed", evidence=LOGITS)], "no test failed"),
        ([record("overflow", "failed", evidence=LOGITS)], "no test failed"),
    ],
    ids=["no-evidence", "another-kind", "collection-error", "expected-failure", "other-suite"],
)
def test_anything_else_leaves_the_fault_uncaught(fault, tests, why):
    detection = selftest.grade(fault, run_with(*tests))
    assert not detection.caught
    assert why in detection.evidence


def test_the_message_wording_does_not_decide(fault):
    """A reworded message with the same evidence still catches; the old wording without evidence does not."""
    reworded = selftest.grade(fault, run_with(record("equivalence", "failed", "logits drifted", evidence=LOGITS)))
    unrecorded = selftest.grade(fault, run_with(record("equivalence", "failed", MESSAGE)))
    assert reworded.caught and not unrecorded.caught


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
    "failure",
    [
        record("equivalence", "failed", "TypeError: patched() got an unexpected keyword argument", raised="TypeError"),
        # a step that raised inside the model, named by decoding.located: evidence of a crash, whatever it quotes
        record("equivalence", "failed", "AssertionError: decode step 1 raised ValueError: max abs diff 3 exceeds",
               evidence={"kind": "crash", "where": "decode step 1", "raised": "ValueError"}),
    ],
    ids=["patch-crash", "model-crash"],
)
def test_a_test_that_crashes_under_the_fault_is_graded_crashed_not_caught(fault, failure):
    detection = selftest.grade(fault, run_with(failure))
    assert not detection.caught and detection.crashed and detection.outcome == "CRASHED"
    assert detection.evidence.startswith("crashed, not caught: ")


def test_a_catch_beside_a_crash_still_counts(fault):
    detection = selftest.grade(fault, run_with(record("equivalence", "failed", "TypeError: boom", raised="TypeError"),
                                               record("equivalence", "failed", evidence=LOGITS)))
    assert detection.caught and not detection.crashed


@pytest.mark.parametrize(
    "evidence, expected",
    [
        (LOGITS, 1.07 / 0.0001),
        ({"kind": "growth", "difference": 640.0, "limit": 64}, 10.0),
        ({"kind": "overflow", "capacity": 16, "requested": [16, 17]}, None),
        ({"kind": "snapshot", "difference": 2.5, "limit": 0}, None),
    ],
    ids=["logits", "bytes", "no-figures", "no-limit"],
)
def test_the_margin_is_the_difference_over_what_it_had_to_exceed(evidence, expected):
    assert selftest.margin(evidence) == (pytest.approx(expected) if expected is not None else None)


def test_the_table_names_every_fault_and_marks_the_uncaught(fault):
    caught = selftest.grade(fault, run_with(record("equivalence", "failed", evidence=LOGITS)), "bfloat16")
    missed = selftest.grade(fault, None)
    lines = selftest.table([caught, missed]).splitlines()
    assert lines[0].split() == ["fault", "dtype", "tests", "failed", "property", "outcome", "margin", "caught", "by"]
    assert lines[2].split() == ["reduced-precision-keys", "bfloat16", "1", "equivalence", "caught", "1.07e+04x",
                                "test_x[failed]"]
    assert lines[3].split() == ["reduced-precision-keys", "float32", "0", "equivalence", "NO", "-", "-"]


def test_a_fault_patch_that_raises_a_type_error_is_graded_crashed(fault):
    # The real pipeline: the equivalence slice in a worker process, its update replaced by a broken patch.
    session = selftest.Session(("suites/test_equivalence.py::test_prefill_then_decode_across_the_window",
                                *registry.load().suites["equivalence"].selftest,
                                "-p", "tests.plugins.cache_update_raises_type_error"))
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


def test_a_fault_that_names_checks_runs_those_test_functions_of_its_suite_and_others_the_whole_suite():
    narrowed = [fault for fault in faults.CATALOGUE.values() if fault.checks]
    assert narrowed, "no fault names its checks: this test would check nothing"
    for fault in narrowed:
        suite_file = registry.load().suite_of_fault(fault.name).file
        source = suite_file.read_text()
        assert all(f"def {check}(" in source for check in fault.checks), (fault.name, fault.checks)
        assert selftest.fault_session_paths(fault) == [f"suites/{suite_file.name}::{check}" for check in fault.checks]
    whole = faults.CATALOGUE["reduced-precision-keys"]
    assert selftest.fault_session_paths(whole) == ["suites/test_equivalence.py"]
