"""What a strategy's inputs reached, and the precondition that they reached what a check certifies.

A comparison with greedy decoding says nothing about a rollback that never happened: a check of assisted or
prompt-lookup decoding, or of beam search, passes by luck where its inputs never reach the path it certifies. Each
such check records per call what its inputs reached (`metrics["coverage"]`: how often each regime was reached, the
drafts proposed and accepted, the longest run of drafts accepted in one step) and names the regimes it certifies;
reaching none of them fails the check as "precondition not met" (`require`), a failure of the check's inputs,
graded apart from any finding about transformers and never expected by an expectation.

Drafting regimes, per verifying call (a step): the step's decided length at its start is `start`, it was shown
`proposed` drafts and kept the leading `accepted` of them, then chose one token of its own.
- several-accepted: a step kept two drafts or more at once;
- rollback: a step rejected drafts, so the cache written for them was rolled back (cropped);
- rollback-after-the-window-filled: a rollback while the kept sequence is longer than W: a sliding layer that has
  rolled cannot get its evicted positions back, so only the positions it still holds may be cropped;
- rollback-across-the-window-edge: the rejected drafts straddle position W: the cache held W positions or more
  when they were rolled back and keeps fewer, so the sliding layers go back from full to not full;
- accepted-run-across-the-window-edge: a step's kept drafts span position W or 2W (where sliding layers roll);
- run-to-the-token-budget: a step's kept drafts reach the last token asked for (max_new_tokens), where the drafts
  must be cut at the budget.
Beam-search regime: reorder-after-the-window-filled: a returned hypothesis took its next token from another beam
than the one it had at a position past W, so the cache's rows were reordered after the sliding layers rolled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from cache_conformance.grading import evidence

SEVERAL_ACCEPTED = "several-accepted"
ROLLBACK = "rollback"
ROLLBACK_AFTER_THE_WINDOW_FILLED = "rollback-after-the-window-filled"
ROLLBACK_ACROSS_THE_WINDOW_EDGE = "rollback-across-the-window-edge"
ACCEPTED_RUN_ACROSS_THE_WINDOW_EDGE = "accepted-run-across-the-window-edge"
RUN_TO_THE_TOKEN_BUDGET = "run-to-the-token-budget"
REORDER_AFTER_THE_WINDOW_FILLED = "reorder-after-the-window-filled"
DRAFTING_REGIMES = (SEVERAL_ACCEPTED, ROLLBACK, ROLLBACK_AFTER_THE_WINDOW_FILLED, ROLLBACK_ACROSS_THE_WINDOW_EDGE,
                    ACCEPTED_RUN_ACROSS_THE_WINDOW_EDGE, RUN_TO_THE_TOKEN_BUDGET)
PRECONDITION = "precondition"  # the evidence kind, and the outcome "precondition not met"


@dataclass(frozen=True)
class DraftStep:
    start: int  # tokens decided when the call began
    proposed: int
    accepted: int

    @property
    def rejected(self) -> int:
        return self.proposed - self.accepted


def draft_steps(fed: list[list[int]], sequence: list[int], prompt_length: int) -> list[DraftStep]:
    """Each call to the verifying model: the drafts it was shown and how many of them the final `sequence` kept.

    `fed`: the tokens of each call to the verifying model, in order. The first call feeds the prompt and the first
    drafts; each later call feeds the last token the previous call chose (not yet cached) and the next drafts.
    A call keeps its leading drafts that equal the sequence and adds one token of its own, so the decided length
    grows by accepted + 1 per call. Drafts past the end of `sequence` (cut off by max_new_tokens) are not counted.
    """
    steps, decided = [], prompt_length
    for number, tokens in enumerate(fed):
        drafts = tokens[prompt_length if number == 0 else 1 :]  # decided tokens at the start of this call come first
        proposed = accepted = 0
        for offset, token in enumerate(drafts):
            if decided + offset >= len(sequence):
                break
            proposed += 1
            if accepted == offset and token == sequence[decided + offset]:
                accepted += 1
        steps.append(DraftStep(decided, proposed, accepted))
        decided += accepted + 1
    return steps


def drafting_regimes(steps: list[DraftStep], *, window: int, budget_end: int) -> Counter:
    """How many steps reached each drafting regime. `budget_end`: the sequence length max_new_tokens asks for."""
    reached = Counter()
    for step in steps:
        kept_end = step.start + step.accepted  # the sequence's length once the step's kept drafts are in
        if step.accepted >= 2:
            reached[SEVERAL_ACCEPTED] += 1
        if step.rejected:
            reached[ROLLBACK] += 1
            if kept_end > window:
                reached[ROLLBACK_AFTER_THE_WINDOW_FILLED] += 1
            if kept_end < window <= step.start + step.proposed:  # held: the decided tokens and every draft shown
                reached[ROLLBACK_ACROSS_THE_WINDOW_EDGE] += 1
        if step.accepted and any(step.start < edge <= kept_end for edge in (window, 2 * window)):
            reached[ACCEPTED_RUN_ACROSS_THE_WINDOW_EDGE] += 1
        if step.accepted and kept_end + 1 >= budget_end:
            reached[RUN_TO_THE_TOKEN_BUDGET] += 1
    return reached


def drafting_coverage(steps: list[DraftStep], *, window: int, budget_end: int) -> dict:
    """The record of what a drafting call reached (`metrics["coverage"]`)."""
    return {
        "calls": len(steps),
        "drafts_proposed": sum(step.proposed for step in steps),
        "drafts_accepted": sum(step.accepted for step in steps),
        "longest_accepted_run": max((step.accepted for step in steps), default=0),
        "regimes": dict(drafting_regimes(steps, window=window, budget_end=budget_end)),
    }


def beam_reorders(beam_indices: torch.Tensor, prompt_length: int) -> list[int]:
    """The positions at which a returned hypothesis took its token from another beam than at the step before
    (beam_indices: hypothesis x step, -1 past a hypothesis' end; beams of one batch row are consecutive)."""
    positions = []
    for hypothesis in beam_indices.tolist():
        steps = [beam for beam in hypothesis if beam >= 0]
        positions += [prompt_length + step for step in range(1, len(steps)) if steps[step] != steps[step - 1]]
    return sorted(positions)


def beam_coverage(beam_indices: torch.Tensor, *, prompt_length: int, window: int) -> dict:
    reorders = beam_reorders(beam_indices, prompt_length)
    past = sum(position > window for position in reorders)
    return {"reorders": len(reorders), "regimes": {REORDER_AFTER_THE_WINDOW_FILLED: past} if past else {}}


def merged(records: list[dict]) -> dict:
    """Several calls' coverage as one (a drawn check's examples): counts added, the longest run the longest."""
    total = Counter()
    regimes = Counter()
    longest = 0
    for record in records:
        total.update({name: value for name, value in record.items()
                      if name not in ("regimes", "longest_accepted_run")})
        regimes.update(record.get("regimes", {}))
        longest = max(longest, record.get("longest_accepted_run", 0))
    merged_record = {**total, "regimes": dict(regimes)}
    if any("longest_accepted_run" in record for record in records):
        merged_record["longest_accepted_run"] = longest
    return merged_record


def require(coverage: dict, certifies: tuple[str, ...], *, where: str, metrics: dict) -> None:
    """The precondition: the inputs reached at least one regime the check certifies. Records the coverage and what
    the check certifies; fails as "precondition not met" when it reached none (a pass would be luck)."""
    metrics["coverage"] = {**coverage, "certifies": list(certifies)}
    reached = coverage.get("regimes", {})
    if not any(reached.get(regime) for regime in certifies):
        metrics["outcome"] = "precondition not met"
        shown = ", ".join(f"{name} {count}" for name, count in reached.items()) or "none"
        figures = {name: value for name, value in coverage.items() if name != "regimes"}
        raise evidence.failure(
            f"precondition not met: {where}: the inputs reached none of the regimes this check certifies "
            f"({', '.join(certifies)}); reached: {shown}; {figures}. The check proves nothing about them: its inputs "
            f"need changing, not transformers", PRECONDITION, where=where, certifies=list(certifies))
