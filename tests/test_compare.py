import math

import pytest
import torch

from cache_conformance.oracles.compare import Comparison, logit_correlation
from cache_conformance.oracles.tolerances import TOLERANCES, Tolerance, tolerance_for

TIGHT = Tolerance(atol=1e-4, rtol=0.0, greedy_tokens_identical=True)


def logits(*values):
    return torch.tensor(values, dtype=torch.float32).reshape(1, len(values), 1)


def test_within_tolerance_passes_and_records_the_worst_difference():
    comparison = Comparison(TIGHT)
    comparison.logits_close(logits(1.0, 2.0), logits(1.0, 2.00005), where="step 1")
    assert comparison.max_abs_diff == pytest.approx(5e-5, rel=1e-2)  # float32 rounding of 2.00005
    assert comparison.metrics["atol"] == 1e-4 and comparison.metrics["comparisons"] == 1


def test_failure_names_the_place_the_positions_and_the_numbers():
    comparison = Comparison(TIGHT)
    with pytest.raises(AssertionError) as failure:
        comparison.logits_close(logits(1.0, 2.0, 3.0), logits(1.0, 2.5, 3.0), where="decode step 4", positions=[10, 11, 12])
    message = str(failure.value)
    assert message.startswith("decode step 4: max abs diff 0.5 exceeds tolerance (atol 0.0001")
    assert "first failing position 11" in message and "got 2, expected 2.5" in message
    assert "1 of 3 logits out of tolerance at positions [11]" in message
    assert comparison.max_abs_diff == pytest.approx(0.5)


def test_nan_in_expected_is_skipped_but_nan_in_actual_fails():
    comparison = Comparison(TIGHT)
    comparison.logits_close(logits(5.0, 1.0), logits(math.nan, 1.0), where="padding")
    with pytest.raises(AssertionError, match="max abs diff inf"):
        comparison.logits_close(logits(math.nan, 1.0), logits(0.0, 1.0), where="garbage")


def test_greedy_tokens_must_match_only_where_the_tolerance_demands_it():
    reference = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    chosen = torch.tensor([[1, 1]])
    with pytest.raises(AssertionError, match="greedy token at position 8 .batch 0. is 1, recomputation without cache gives 0"):
        Comparison(TIGHT).greedy_tokens_match(chosen, reference, where="s", positions=[7, 8])
    Comparison(tolerance_for("bfloat16", "cpu")).greedy_tokens_match(chosen, reference, where="s", positions=[7, 8])


def test_every_dtype_and_device_has_a_tolerance():
    assert {(d, v) for d in ("float32", "bfloat16", "float16") for v in ("cpu", "cuda", "mps")} == set(TOLERANCES)


def test_logit_correlation_ignores_offset_and_scale_and_sees_a_different_shape():
    reference = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(logit_correlation(2.5 * reference + 7, reference), torch.ones(3))
    assert torch.allclose(logit_correlation(-reference, reference), -torch.ones(3))
    other = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    assert logit_correlation(other, reference).abs().max() < 0.5


def test_a_forced_length_forbids_end_of_sequence_in_the_greedy_reference():
    """generate() made to run to its length (min_new_tokens) cannot choose end-of-sequence: where recomputation's
    argmax is end-of-sequence the chosen token is the best of the others, and only that is required."""
    comparison = Comparison(Tolerance(atol=1e-4, rtol=0.0, greedy_tokens_identical=True))
    logits = torch.tensor([[[0.0, 3.0, 2.0, 1.0]]])  # token 1, end-of-sequence, is the argmax; 2 the best other
    comparison.greedy_tokens_match(torch.tensor([[2]]), logits, where="forced", positions=[5], forbidden=(1,))
    with pytest.raises(AssertionError, match="greedy token at position 5 .* is 2, recomputation without cache gives 1"):
        comparison.greedy_tokens_match(torch.tensor([[2]]), logits, where="free", positions=[5])
