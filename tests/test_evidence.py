"""What a failed check carries as evidence (cache_conformance/grading/evidence.py), as the self-test and results read it."""

import pytest
import torch

from cache_conformance.grading import evidence
from cache_conformance.oracles.compare import Comparison
from cache_conformance.oracles.decoding import located
from cache_conformance.oracles.tolerances import Tolerance


def test_a_failure_carries_its_kind_location_and_figures_as_plain_values():
    error = evidence.failure("boom", "logits", where="decode step 2", position=torch.tensor(7),
                             difference=torch.tensor(0.5, dtype=torch.float64), limit=1e-4)
    assert evidence.of(error) == {"kind": "logits", "where": "decode step 2", "position": 7, "difference": 0.5,
                                  "limit": 1e-4}
    assert type(evidence.of(error)["position"]) is int


def test_located_as_marks_an_assertion_and_a_pytest_fail_but_keeps_the_innermost_evidence():
    layers_misplaced = [3]
    with pytest.raises(AssertionError) as plain, evidence.located_as("placement", layer=3):
        assert not layers_misplaced, "misplaced"
    assert evidence.of(plain.value) == {"kind": "placement", "layer": 3}
    with pytest.raises(pytest.fail.Exception) as failed, evidence.located_as("storage", step=1):
        pytest.fail("moved", pytrace=False)
    assert evidence.of(failed.value)["kind"] == "storage"
    with pytest.raises(AssertionError) as inner, evidence.located_as("image-influence", layer=0):
        raise evidence.failure("differs", "logits", position=4)
    assert evidence.of(inner.value) == {"kind": "logits", "position": 4}


def test_other_exceptions_pass_through_without_evidence():
    with pytest.raises(IndexError) as raised, evidence.located_as("overflow"):
        raise IndexError("out of bounds")
    assert evidence.of(raised.value) is None


def test_evidence_follows_raise_from_but_not_an_exception_being_handled():
    cause = evidence.failure("differs", "logits")
    try:
        raise AssertionError("wrong: differs") from cause
    except AssertionError as wrapped:
        assert evidence.of(wrapped)["kind"] == "logits"
    try:
        try:
            raise cause
        except AssertionError:
            raise AssertionError("another failure while handling it")  # a failure of its own, not raised from `cause`
    except AssertionError as unrelated:
        assert evidence.of(unrelated) is None


def test_a_step_that_raised_is_evidence_of_a_crash():
    with pytest.raises(AssertionError) as raised, located("decode step 3"):
        raise ValueError("max abs diff 3 exceeds tolerance")
    assert evidence.of(raised.value) == {"kind": evidence.CRASH, "where": "decode step 3", "raised": "ValueError"}


def test_a_logit_comparison_that_fails_says_where_and_by_how_much():
    compare = Comparison(Tolerance(atol=0.01, rtol=0.0, greedy_tokens_identical=False))
    expected = torch.zeros(1, 3, 5)
    actual = expected.clone()
    actual[0, 2, 1] = 0.25
    with pytest.raises(AssertionError) as raised:
        compare.logits_close(actual, expected, where="decode step 1", positions=[10, 11, 12])
    found = evidence.of(raised.value)
    assert found == {"kind": "logits", "where": "decode step 1", "position": 12, "batch": 0,
                        "difference": pytest.approx(0.25), "limit": 0.01}
