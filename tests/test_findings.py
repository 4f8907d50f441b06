"""What a failed check carries as evidence (cache_conformance/findings.py), as the self-test and results read it."""

import pytest
import torch

from cache_conformance import findings
from cache_conformance.compare import Comparison
from cache_conformance.decoding import located
from cache_conformance.tolerances import Tolerance


def test_a_failure_carries_its_kind_location_and_figures_as_plain_values():
    error = findings.failure("boom", "logits", where="decode step 2", position=torch.tensor(7),
                             difference=torch.tensor(0.5, dtype=torch.float64), limit=1e-4)
    assert findings.of(error) == {"kind": "logits", "where": "decode step 2", "position": 7, "difference": 0.5,
                                  "limit": 1e-4}
    assert type(findings.of(error)["position"]) is int


def test_located_as_marks_an_assertion_and_a_pytest_fail_but_keeps_the_innermost_evidence():
    layers_misplaced = [3]
    with pytest.raises(AssertionError) as plain, findings.located_as("placement", layer=3):
        assert not layers_misplaced, "misplaced"
    assert findings.of(plain.value) == {"kind": "placement", "layer": 3}
    with pytest.raises(pytest.fail.Exception) as failed, findings.located_as("storage", step=1):
        pytest.fail("moved", pytrace=False)
    assert findings.of(failed.value)["kind"] == "storage"
    with pytest.raises(AssertionError) as inner, findings.located_as("image-influence", layer=0):
        raise findings.failure("differs", "logits", position=4)
    assert findings.of(inner.value) == {"kind": "logits", "position": 4}


def test_other_exceptions_pass_through_without_evidence():
    with pytest.raises(IndexError) as raised, findings.located_as("overflow"):
        raise IndexError("out of bounds")
    assert findings.of(raised.value) is None


def test_evidence_follows_raise_from_but_not_an_exception_being_handled():
    cause = findings.failure("differs", "logits")
    try:
        raise AssertionError("wrong: differs") from cause
    except AssertionError as wrapped:
        assert findings.of(wrapped)["kind"] == "logits"
    try:
        try:
            raise cause
        except AssertionError:
            raise AssertionError("another failure while handling it")  # a failure of its own, not raised from `cause`
    except AssertionError as unrelated:
        assert findings.of(unrelated) is None


def test_a_step_that_raised_is_evidence_of_a_crash():
    with pytest.raises(AssertionError) as raised, located("decode step 3"):
        raise ValueError("max abs diff 3 exceeds tolerance")
    assert findings.of(raised.value) == {"kind": findings.CRASH, "where": "decode step 3", "raised": "ValueError"}


def test_a_logit_comparison_that_fails_says_where_and_by_how_much():
    compare = Comparison(Tolerance(atol=0.01, rtol=0.0, greedy_tokens_identical=False))
    expected = torch.zeros(1, 3, 5)
    actual = expected.clone()
    actual[0, 2, 1] = 0.25
    with pytest.raises(AssertionError) as raised:
        compare.logits_close(actual, expected, where="decode step 1", positions=[10, 11, 12])
    evidence = findings.of(raised.value)
    assert evidence == {"kind": "logits", "where": "decode step 1", "position": 12, "batch": 0,
                        "difference": pytest.approx(0.25), "limit": 0.01}
