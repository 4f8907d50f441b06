"""The generation-strategies suite's grades and probes on stand-in data: each must tell apart what it exists for
(a clear refusal from a crash, accepted from rejected drafts, a beam that ended early, a near-tie from a wrong
token). The refusals are real transformers errors of the pinned release; no model is loaded."""

import pytest
import torch
import transformers

from cache_conformance import strategies
from cache_conformance.compare import Comparison
from cache_conformance.decoding import located
from cache_conformance.tolerances import Tolerance


def raised(call) -> Exception:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the error itself is what the tests grade
        return error
    raise AssertionError("the call did not raise")


def transformers_refusal() -> Exception:
    """A ValueError that transformers' own code raises on purpose, naming the model type it refuses."""
    return raised(lambda: transformers.AutoConfig.for_model("no-such-model"))


def test_a_refusal_raised_by_transformers_naming_the_subject_is_clear():
    assert strategies.grade(transformers_refusal(), ("model",)) == "refused clearly"


def test_a_refusal_that_names_neither_the_cache_nor_the_strategy_is_a_crash():
    assert strategies.grade(transformers_refusal(), ("cache", "crop", "draft")) == "crashed"


def test_an_error_from_torch_is_a_crash_whatever_it_says():
    error = raised(lambda: torch.zeros(2, 3).index_copy_(0, torch.tensor([5]), torch.zeros(1, 3)))
    assert strategies.grade(error, ("index", "cache")) == "crashed"


def test_a_low_level_type_is_a_crash_even_from_transformers():
    error = raised(lambda: len(transformers.DynamicCache))  # TypeError raised by Python, not on purpose
    assert strategies.grade(error, ("cache",)) == "crashed"


def test_no_error_is_correct():
    assert strategies.grade(None, ("cache",)) == "correct"


@pytest.mark.parametrize(("block", "outcome"), [
    (lambda: None, "correct"),
    (lambda: (_ for _ in ()).throw(AssertionError("max abs diff 2.0 exceeds tolerance")), "wrong"),
    (transformers_refusal, "refused clearly"),
])
def test_graded_records_the_outcome(block, outcome):
    metrics = {}
    try:
        with strategies.graded(metrics, subjects=("model",)):
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
          strategies.graded(metrics, subjects=("cache",)), located("decode step 3")):
        raise error
    assert metrics["outcome"] == "crashed"


PROMPT = [10, 11, 12]
SEQUENCE = [*PROMPT, 20, 21, 22, 23, 24]


def test_tally_counts_accepted_leading_drafts_and_the_rest_as_rejected():
    fed = [
        [*PROMPT, 20, 99],  # draft 20 kept, 99 rejected; the model chooses 21
        [21, 22, 23, 98],  # 22 and 23 kept, 98 rejected; the model chooses 24
    ]
    tally = strategies.tally_drafts(fed, SEQUENCE, len(PROMPT))
    assert (tally.calls, tally.proposed, tally.accepted, tally.rejected) == (2, 5, 3, 2)


def test_tally_stops_counting_a_draft_after_the_first_rejected_one():
    fed = [[*PROMPT, 99, 21]]  # 21 matches the sequence but follows a rejected draft: not kept
    tally = strategies.tally_drafts(fed, SEQUENCE, len(PROMPT))
    assert (tally.proposed, tally.accepted) == (2, 0)


def test_tally_ignores_drafts_past_the_end_of_the_sequence():
    fed = [[*PROMPT, 20, 21, 22, 23], [24, 30, 31]]  # the last call's drafts were cut off by max_new_tokens
    tally = strategies.tally_drafts(fed, SEQUENCE, len(PROMPT))
    assert (tally.proposed, tally.accepted) == (4, 4)


def test_drafts_control_needs_both_accepted_and_rejected_drafts():
    strategies.assert_drafts_exercised(strategies.DraftTally(calls=3, proposed=6, accepted=2), "run")
    for tally in (strategies.DraftTally(3, 6, 0), strategies.DraftTally(3, 6, 6), strategies.DraftTally(3, 0, 0)):
        with pytest.raises(AssertionError, match="needs both accepted and rejected drafts"):
            strategies.assert_drafts_exercised(tally, "run")


def test_finished_early_counts_hypotheses_that_ended_before_the_last_step():
    end = 7
    sequences = torch.tensor([[1, 2, 5, end, end], [1, 2, 5, 6, end], [1, 2, 5, 6, 6]])
    assert strategies.finished_early(sequences, end, prompt_length=2) == 1


def test_sequences_equal_names_the_first_differing_token():
    expected = torch.tensor([[1, 2, 3], [4, 5, 6]])
    strategies.sequences_equal(expected.clone(), expected, where="beam")
    with pytest.raises(AssertionError, match=r"hypothesis 1 differs .* at position 2: token 9, without cache 6"):
        strategies.sequences_equal(torch.tensor([[1, 2, 3], [4, 5, 9]]), expected, where="beam")


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
        with strategies.graded_where_a_clear_refusal_conforms(metrics, subjects=("model",)):
            raise error

    if conforms:
        graded_call()
        assert metrics["outcome"] == "refused clearly"
    else:
        with pytest.raises(AssertionError, match="crashed: builtins.IndexError"):
            graded_call()
