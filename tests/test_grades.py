"""The generation-strategies suite's grades and probes on stand-in data: each must tell apart what it exists for
(a clear refusal from a crash, a beam that ended early, a near-tie from a wrong token). The refusals are real
transformers errors of the pinned release; no model is loaded. What drafts reached: tests/test_coverage.py."""

import pytest
import torch
import transformers

from cache_conformance.grading import grades
from cache_conformance.oracles import generated
from cache_conformance.oracles.compare import Comparison
from cache_conformance.oracles.decoding import located
from cache_conformance.oracles.tolerances import Tolerance


def raised(call) -> Exception:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the error itself is what the tests grade
        return error
    raise AssertionError("the call did not raise")


def transformers_refusal() -> Exception:
    """A ValueError that transformers' own code raises on purpose, naming the cache choice it refuses."""
    return raised(lambda: transformers.GenerationConfig(cache_implementation="no-such-cache").validate(strict=True))


def test_a_refusal_raised_by_transformers_naming_the_subject_is_clear():
    assert grades.grade(transformers_refusal()) == "refused clearly"


def test_a_refusal_that_names_neither_the_cache_nor_the_strategy_is_a_crash():
    error = raised(lambda: transformers.GenerationConfig(max_new_tokens=-1).validate(strict=True))  # on purpose
    assert grades.grade(error) == "crashed"


def test_an_error_from_torch_is_a_crash_whatever_it_says():
    error = raised(lambda: torch.zeros(2, 3).index_copy_(0, torch.tensor([5]), torch.zeros(1, 3)))
    error.args = (f"{error} (cache)",)  # even where it names the cache
    assert grades.grade(error) == "crashed"


def test_a_low_level_type_is_a_crash_even_from_transformers():
    error = raised(lambda: len(transformers.DynamicCache))  # TypeError raised by Python, not on purpose
    assert grades.grade(error) == "crashed"


def test_a_refusal_that_says_the_call_passed_what_it_did_not_is_misleading():
    error = ValueError("Passing both `cache_implementation` (used to initialize certain caches) and "
                       "`past_key_values` (a Cache object) is unsupported. Please use only one of the two.")
    error.__traceback__ = transformers_refusal().__traceback__  # raised by transformers' own code
    assert grades.grade(error, passed={"past_key_values", "max_new_tokens"}) == "refused misleadingly"
    assert grades.arguments_named_but_not_passed(error, {"past_key_values"}) == ["cache_implementation"]
    assert grades.grade(error, passed={"past_key_values", "cache_implementation"}) == "refused clearly"
    assert grades.grade(error) == "refused clearly"  # what was passed is not known


def test_no_error_is_correct():
    assert grades.grade(None) == "correct"


@pytest.mark.parametrize(("block", "outcome"), [
    (lambda: None, "correct"),
    (lambda: (_ for _ in ()).throw(AssertionError("max abs diff 2.0 exceeds tolerance")), "wrong"),
    (transformers_refusal, "refused clearly"),
])
def test_graded_records_the_outcome(block, outcome):
    metrics = {}
    try:
        with grades.graded(metrics):
            error = block()
            if isinstance(error, Exception):
                raise error
    except AssertionError as failure:
        assert str(failure).startswith(f"{outcome}: ")
    assert metrics["outcome"] == outcome


# torch asserts too ("Torch not compiled with CUDA enabled"): a step that raised that crashed, it was not wrong
@pytest.mark.parametrize("error", [IndexError("index 9 is out of bounds"),
                                   AssertionError("Torch not compiled with CUDA enabled")])
def test_graded_calls_a_located_step_that_raised_a_crash_not_a_wrong_result(error):
    metrics = {}
    with (pytest.raises(AssertionError, match=rf"^crashed: decode step 3 raised {type(error).__name__}: {error}"),
          grades.graded(metrics), located("decode step 3")):
        raise error
    assert metrics["outcome"] == "crashed"


def test_finished_early_counts_hypotheses_that_ended_before_the_last_step():
    end = 7
    sequences = torch.tensor([[1, 2, 5, end, end], [1, 2, 5, 6, end], [1, 2, 5, 6, 6]])
    assert generated.finished_early(sequences, end, prompt_length=2) == 1


def test_sequences_equal_names_the_first_differing_token():
    expected = torch.tensor([[1, 2, 3], [4, 5, 6]])
    generated.sequences_equal(expected.clone(), expected, where="beam")
    with pytest.raises(AssertionError, match=r"hypothesis 1 differs .* at position 2: token 9, without cache 6"):
        generated.sequences_equal(torch.tensor([[1, 2, 3], [4, 5, 9]]), expected, where="beam")


def test_chosen_tokens_allow_a_near_tie_only_where_the_tolerance_does():
    logits = torch.tensor([[[0.0, 2.0, 1.9, -1.0]]])
    near_tie, wrong = torch.tensor([[2]]), torch.tensor([[3]])
    loose = Comparison(Tolerance(atol=0.5, rtol=0.0, greedy_tokens_identical=False))
    loose.chosen_tokens_are_greedy(near_tie, logits, where="request 0", positions=[4])
    with pytest.raises(AssertionError, match=r"request 0: token 3 at position 4 .* 3 below the greedy choice 1"):
        loose.chosen_tokens_are_greedy(wrong, logits, where="request 0", positions=[4])
    strict = Comparison(Tolerance(atol=1e-4, rtol=0.0, greedy_tokens_identical=True))
    with pytest.raises(AssertionError, match="greedy token at position 4"):
        strict.chosen_tokens_are_greedy(near_tie, logits, where="request 0", positions=[4])


@pytest.mark.parametrize("error, conforms", [(transformers_refusal(), True),
                                            (IndexError("index -9 is out of bounds"), False)])
def test_where_a_clear_refusal_conforms_it_passes_and_anything_else_fails(error, conforms):
    metrics = {}

    def graded_call():
        with grades.graded_where_a_clear_refusal_conforms(metrics):
            raise error

    if conforms:
        graded_call()
        assert metrics["outcome"] == "refused clearly"
    else:
        with pytest.raises(AssertionError, match="crashed: builtins.IndexError"):
            graded_call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that asserts it has no CUDA")
def test_an_assert_inside_torch_is_a_crash_not_a_wrong_result():
    metrics = {}
    with pytest.raises(AssertionError, match="^crashed: "), grades.graded(metrics):
        torch.cuda.current_device()  # AssertionError: Torch not compiled with CUDA enabled
    assert metrics["outcome"] == "crashed"
    with pytest.raises(AssertionError, match="^wrong: "), grades.graded(metrics):
        raise AssertionError("max abs diff 2.0 exceeds tolerance")  # the harness's own comparison
    assert metrics["outcome"] == "wrong"
