"""What a strategy's inputs reached (cache_conformance/grading/coverage.py) on stand-in calls: each regime is told apart
from its near miss, and the precondition fails a check whose inputs reached none of its regimes."""

import pytest
import torch

from cache_conformance.grading import coverage, evidence
from cache_conformance.oracles.decoding import new_tokens_as_asked
from cache_conformance.records import expectations
from cache_conformance.releases import replay

PROMPT = [10, 11, 12]
SEQUENCE = [*PROMPT, 20, 21, 22, 23, 24]


def test_steps_count_accepted_leading_drafts_and_the_rest_as_rejected():
    fed = [
        [*PROMPT, 20, 99],  # draft 20 kept, 99 rejected; the model chooses 21
        [21, 22, 23, 98],  # 22 and 23 kept, 98 rejected; the model chooses 24
    ]
    assert coverage.draft_steps(fed, SEQUENCE, len(PROMPT)) == [coverage.DraftStep(3, 2, 1),
                                                               coverage.DraftStep(5, 3, 2)]


def test_a_draft_after_the_first_rejected_one_is_not_kept():
    steps = coverage.draft_steps([[*PROMPT, 99, 21]], SEQUENCE, len(PROMPT))  # 21 matches but follows a rejection
    assert steps == [coverage.DraftStep(3, 2, 0)]


def test_drafts_past_the_end_of_the_sequence_are_not_counted():
    fed = [[*PROMPT, 20, 21, 22, 23], [24, 30, 31]]  # the last call's drafts were cut off by max_new_tokens
    assert [step.proposed for step in coverage.draft_steps(fed, SEQUENCE, len(PROMPT))] == [4, 0]


@pytest.mark.parametrize(("step", "reached"), [
    (coverage.DraftStep(start=2, proposed=3, accepted=1), {coverage.ROLLBACK}),  # one kept, before the window
    (coverage.DraftStep(start=2, proposed=3, accepted=2), {coverage.ROLLBACK, coverage.SEVERAL_ACCEPTED}),
    (coverage.DraftStep(start=2, proposed=3, accepted=0), {coverage.ROLLBACK}),  # held 5 < W: all below the edge
    (coverage.DraftStep(start=3, proposed=3, accepted=1), {coverage.ROLLBACK,  # held 6 = W, keeps 4
                                                           coverage.ROLLBACK_ACROSS_THE_WINDOW_EDGE}),
    (coverage.DraftStep(start=6, proposed=3, accepted=0), {coverage.ROLLBACK}),  # keeps 6 <= W = 6: not below it
    (coverage.DraftStep(start=7, proposed=3, accepted=0), {coverage.ROLLBACK, coverage.ROLLBACK_AFTER_THE_WINDOW_FILLED}),
    (coverage.DraftStep(start=5, proposed=1, accepted=1), {coverage.ACCEPTED_RUN_ACROSS_THE_WINDOW_EDGE}),  # 5 -> 6
    (coverage.DraftStep(start=6, proposed=1, accepted=1), set()),  # starts at the edge: crosses nothing
    (coverage.DraftStep(start=10, proposed=2, accepted=2), {coverage.SEVERAL_ACCEPTED,
                                                            coverage.ACCEPTED_RUN_ACROSS_THE_WINDOW_EDGE}),  # 12 = 2W
    (coverage.DraftStep(start=16, proposed=3, accepted=3), {coverage.SEVERAL_ACCEPTED,
                                                            coverage.RUN_TO_THE_TOKEN_BUDGET}),  # 19 + 1 = budget
    (coverage.DraftStep(start=15, proposed=3, accepted=3), {coverage.SEVERAL_ACCEPTED}),  # ends one short of it
])
def test_each_regime_is_told_from_its_near_miss(step, reached):
    assert set(coverage.drafting_regimes([step], window=6, budget_end=20)) == reached


def test_beam_reorders_are_the_steps_where_a_hypothesis_changed_beams():
    indices = torch.tensor([[0, 0, 1, 1, -1], [1, 0, 0, 2, 2]])
    assert coverage.beam_reorders(indices, prompt_length=10) == [11, 12, 13]
    assert coverage.beam_coverage(indices, prompt_length=10, window=12) == {
        "reorders": 3, "regimes": {coverage.REORDER_AFTER_THE_WINDOW_FILLED: 1}}
    assert coverage.beam_coverage(indices, prompt_length=10, window=13)["regimes"] == {}


def test_merged_adds_counts_and_keeps_the_longest_run():
    first = {"calls": 2, "longest_accepted_run": 3, "regimes": {coverage.ROLLBACK: 1}}
    second = {"calls": 5, "longest_accepted_run": 1, "regimes": {coverage.ROLLBACK: 2, coverage.SEVERAL_ACCEPTED: 1}}
    assert coverage.merged([first, second, {}]) == {
        "calls": 7, "longest_accepted_run": 3, "regimes": {coverage.ROLLBACK: 3, coverage.SEVERAL_ACCEPTED: 1}}


def test_the_precondition_fails_where_no_certified_regime_was_reached():
    metrics = {}
    reached = {"calls": 4, "regimes": {coverage.ROLLBACK: 2}}
    coverage.require(reached, (coverage.ROLLBACK,), where="run", metrics=metrics)  # reached: passes
    assert metrics["coverage"]["certifies"] == [coverage.ROLLBACK] and "outcome" not in metrics
    with pytest.raises(AssertionError, match=r"^precondition not met: run: .*\(several-accepted\); reached: rollback 2"
                       ) as failure:
        coverage.require(reached, (coverage.SEVERAL_ACCEPTED,), where="run", metrics=metrics)
    assert metrics["outcome"] == "precondition not met"
    assert evidence.of(failure.value)["kind"] == coverage.PRECONDITION


@pytest.mark.parametrize(("generated", "message"), [
    ([5, 6, 7, 8], None),  # as asked
    ([5, 1], None),  # ended at end-of-sequence
    ([5, 6, 7, 8, 9], r"5 new tokens returned, greedy decoding returns 4 \(max_new_tokens=4\): \+1 tokens"),
    ([5, 6, 7], r"3 new tokens returned, greedy decoding returns 4"),
    ([5, 1, 7], r"3 new tokens returned, greedy decoding returns 2 .*end-of-sequence at new token 1"),
])
def test_greedy_decoding_returns_as_many_tokens_as_asked(generated, message):
    sequences = torch.tensor([[10, 11, *generated]])
    if message is None:
        new_tokens_as_asked(sequences, 2, 4, (1,), where="call")
    else:
        with pytest.raises(AssertionError, match=message):
            new_tokens_as_asked(sequences, 2, 4, (1,), where="call")


# The default run's checks that record what their inputs reached (cache_conformance/grading/coverage.py), by test function.
CHECKS_WITH_COVERAGE = ("test_assisted_decoding_matches_recomputation",
                        "test_prompt_lookup_decoding_matches_recomputation",
                        "test_beam_search_matches_recomputation", "test_drawn_calls_are_correct_or_refused_clearly")
DRAFTING_USER_CALLS = ("-prompt-lookup-", "-assisted-")


def test_no_check_of_the_adopted_release_passed_without_reaching_a_regime_it_certifies():
    """Read from the committed raw scan: on the adopted release, every strategy check that was graded correct recorded
    its coverage and reached a regime it certifies; none failed as "precondition not met". A finding (a crash, a
    wrong result, a substituted cache) stands whatever the inputs reached; a refusal reaches nothing."""
    adopted = expectations.load(expectations.DEFAULT_PATH).adopted
    records = replay.committed_runs()[adopted]
    judged = []
    for record in records:
        function = record["id"].split("::")[1].split("[")[0]
        if function not in CHECKS_WITH_COVERAGE and not (
                function == "test_generate_as_users_call_it" and any(s in record["id"] for s in DRAFTING_USER_CALLS)):
            continue
        metrics = record.get("metrics") or {}
        assert metrics.get("outcome") != "precondition not met", f"{record['id']}: {record.get('message', '')[:300]}"
        if metrics.get("outcome") == "correct":
            covered = metrics.get("coverage") or {}
            reached = [regime for regime in covered.get("certifies", []) if covered.get("regimes", {}).get(regime)]
            assert reached, f"{record['id']} ({metrics.get('outcome')}) recorded no certified regime: {covered}"
            judged.append(record["id"])
    assert len(judged) >= 20, f"only {len(judged)} strategy checks of {adopted} were graded correct in the scan"
