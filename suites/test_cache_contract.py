"""The cache object's public contract, release by release: what a user's cache of each public class (the release's
own list, adapter.generation.user_cache_classes) answers and does when its methods are called as a user calls them:
get_seq_length(), the capacity query, reset(), crop(), reorder_cache(), and the cache_position a forward() call is
given. The adapter spells a name a release changed (the capacity query), nothing else. The cache is filled, and
the token after a call fed, the harness's way (adapter.forward, which gives cache_position before 5.4), so that each
check isolates one member; forward() without cache_position is the user-call suite's check.

Each check is graded like the user-call suite: correct, refused clearly (an exception that says what is refused:
it conforms), crashed or wrong. A method a class does not offer on a release is a skip that says so. Every record
carries the member it called and its signature on the release (metrics.api): the report's API-surface table.
"""

import pytest
import torch

from cache_conformance import adapter
from cache_conformance.adapter import generation
from cache_conformance.grading import evidence, grades
from cache_conformance.inputs import scenarios
from cache_conformance.oracles.decoding import prefill_and_decode, recompute
from cache_conformance.probes import contract

CLASSES = generation.user_cache_classes()
DECODED = scenarios.CONTRACT_DECODED
ROOM = 4  # positions of capacity left after them
def graded(metrics):
    return grades.graded_where_a_clear_refusal_conforms(metrics)


pytestmark = [pytest.mark.slow(except_on="float32-cpu-eager"), pytest.mark.parametrize("cache_class", CLASSES)]


def filled(model, tokens, compare, cache_class, *, batch: int = 1, label: str):
    """A user's cache object of `cache_class`, its prompt (longer than W) prefilled and DECODED tokens decoded, each
    step compared with recomputation; returns (cache, sequence)."""
    window = adapter.window(model.config)
    prompt = tokens(batch, scenarios.contract_prompt(window))
    cache = generation.user_cache_object(model, cache_class, batch_size=batch,
                                         capacity=prompt.shape[1] + DECODED + ROOM)
    return cache, prefill_and_decode(model, cache, prompt, DECODED, compare, label=label)


def next_token_against_recomputation(model, cache, held, following, compare, *, where: str) -> None:
    """Feed one token per row after a member was called on `cache`, which should now hold `held`: its logits equal
    recomputation of `held` and the token. One token: several at once past W is the chunk suites' property."""
    logits = adapter.forward(model, following, cache=cache, start=held.shape[1])
    reference = recompute(model, torch.cat([held, following], dim=1))[:, held.shape[1]:]
    compare.logits_close(logits, reference, where=where, positions=[held.shape[1]])


def offered_or_skip(metrics, cache_class: str, member: str) -> None:
    metrics["api"] = contract.member(cache_class, member)
    if metrics["api"]["signature"] is None:
        pytest.skip(f"{cache_class} offers no {member} on transformers {adapter.INSTALLED}")


def test_get_seq_length_counts_the_tokens_written(model, tokens, compare, metrics, cache_class):
    offered_or_skip(metrics, cache_class, "get_seq_length")
    with graded(metrics):
        cache, sequence = filled(model, tokens, compare, cache_class, label=cache_class)
        reported = adapter.seq_length(cache)
        if reported != sequence.shape[1]:
            raise evidence.failure(
                f"{cache_class}.get_seq_length() returned {reported} after {sequence.shape[1]} tokens were written "
                f"(a prompt of {scenarios.contract_prompt(adapter.window(model.config))} and {DECODED} decoded)",
                contract.EVIDENCE, member="get_seq_length", difference=abs(reported - sequence.shape[1]), limit=0)


def test_capacity_query_reports_the_capacity_given(model, tokens, compare, metrics, cache_class):
    """A class the user gives a capacity (max_cache_len) reports it, and its full-attention layers hold that many
    positions; a growing class reports no maximum."""
    member = generation.capacity_query_name(cache_class)
    offered_or_skip(metrics, cache_class, member)
    with graded(metrics):
        cache, sequence = filled(model, tokens, compare, cache_class, label=cache_class)
        given = sequence.shape[1] + ROOM if generation.takes_a_capacity(cache_class) else None
        reported = getattr(cache, member)()
        reported = None if reported in (None, -1) else int(reported)
        held = adapter.capacity(cache) if given is not None else None
        metrics.update(capacity_given=given, capacity_reported=reported, capacity_held=held)
        if reported != given or held != given:
            raise evidence.failure(
                f"{cache_class}.{member}() returned {reported} (no maximum: None) and its full-attention layers hold "
                f"{held} positions; the user gave {given}", contract.EVIDENCE, member=member,
                difference=abs((reported or 0) - (given or 0)), limit=0)


def test_reset_leaves_a_cache_that_decodes_like_a_new_one(model, tokens, compare, metrics, cache_class):
    offered_or_skip(metrics, cache_class, "reset")
    with graded(metrics):
        cache, _ = filled(model, tokens, compare, cache_class, label=f"{cache_class} before reset()")
        adapter.reset(cache)
        left = adapter.seq_length(cache)
        if left != 0:
            raise evidence.failure(f"{cache_class}.get_seq_length() returned {left} after reset()",
                                   contract.EVIDENCE, member="reset", difference=left, limit=0)
        prompt = tokens(1, scenarios.contract_prompt(adapter.window(model.config))).flip(1)  # another prompt
        prefill_and_decode(model, cache, prompt, DECODED, compare, label=f"{cache_class} after reset()")


@pytest.mark.parametrize("crop", scenarios.CONTRACT_CROPS)
def test_crop_rolls_back_or_refuses_clearly(model, tokens, compare, metrics, cache_class, crop):
    """crop(-k) (remove k tokens, the spelling every release with crop() takes) and then decoding on: the logits
    are those of recomputing the shorter sequence, or crop refuses clearly. Past the window's edge the sliding
    layers would need positions they have evicted."""
    offered_or_skip(metrics, cache_class, "crop")
    removed = scenarios.contract_crop(crop, adapter.window(model.config))
    with graded(metrics):
        cache, sequence = filled(model, tokens, compare, cache_class, label=f"{cache_class} before crop()")
        generation.crop(cache, removed)
        where = f"{cache_class}: decoding after crop(-{removed}) of {sequence.shape[1]} tokens"
        next_token_against_recomputation(model, cache, sequence[:, : sequence.shape[1] - removed],
                                         tokens(1, 1).flip(1), compare, where=where)


def test_reorder_cache_moves_every_layer_with_its_row(model, tokens, compare, metrics, cache_class):
    """Two prompts in a batch, the rows swapped by reorder_cache(beam_idx) as beam search calls it: the next token's
    logits are those of recomputing each swapped row, on the sliding layers as on the full ones."""
    offered_or_skip(metrics, cache_class, "reorder_cache")
    with graded(metrics):
        cache, sequence = filled(model, tokens, compare, cache_class, batch=2, label=f"{cache_class} before reorder")
        order = torch.tensor([1, 0], device=sequence.device)
        cache.reorder_cache(order)
        next_token_against_recomputation(model, cache, sequence[order], tokens(2, 1), compare,
                                         where=f"{cache_class}: the token after reorder_cache({order.tolist()})")


def test_cache_position_given_as_documented_decodes_correctly(model, tokens, compare, metrics, cache_class):
    """forward() given cache_position (the positions of the tokens fed in the sequence, as the releases up to 5.3
    document it) decodes like recomputation, or the release refuses it clearly."""
    metrics["api"] = contract.member(type(model).__name__, "forward", parameter="cache_position")
    with grades.graded_where_a_clear_refusal_conforms(metrics):
        cache, sequence = filled(model, tokens, compare, cache_class, label=cache_class)
        following = tokens(1, 1).flip(1)  # one token: several at once past W is the chunks' property
        start = sequence.shape[1]
        positions = torch.arange(start, start + following.shape[1], device=following.device)
        with torch.no_grad():
            output = model(input_ids=following, **{adapter.CACHE_KEYWORD: cache}, cache_position=positions,
                           use_cache=True)
        reference = recompute(model, torch.cat([sequence, following], dim=1))[:, start:]
        compare.logits_close(output.logits, reference, positions=positions.tolist(),
                             where=f"{cache_class}: forward() with cache_position={positions.tolist()}")


@pytest.mark.parametrize("rewind", scenarios.CONTRACT_REWINDS)
def test_rewind_rewrites_the_end_or_refuses_clearly(model, tokens, compare, metrics, cache_class, rewind):
    """A user regenerating the end of a sequence: forward() given cache_position earlier than the cache's length,
    over other tokens than those written there. The logits are those of recomputing the rewritten sequence, or the
    release refuses clearly; writing at its own counter instead (cache_position ignored) is wrong. Past the rolled
    window the sliding layers have evicted positions the rewritten tokens need: a layer that rolled can only refuse."""
    metrics["api"] = contract.member(type(model).__name__, "forward", parameter="cache_position")
    rewritten = scenarios.contract_rewind(rewind, adapter.window(model.config))
    with grades.graded_where_a_clear_refusal_conforms(metrics):
        cache, sequence = filled(model, tokens, compare, cache_class, label=f"{cache_class} before the rewind")
        start = sequence.shape[1] - rewritten
        others = tokens(1, rewritten).flip(1)  # other tokens than those written at the rewound positions
        positions = torch.arange(start, sequence.shape[1], device=others.device)
        metrics.update(rewound_from=sequence.shape[1], rewritten_positions=positions.tolist())
        with torch.no_grad():
            output = model(input_ids=others, **{adapter.CACHE_KEYWORD: cache}, cache_position=positions,
                           use_cache=True)
        reference = recompute(model, torch.cat([sequence[:, :start], others], dim=1))[:, start:]
        compare.logits_close(output.logits, reference, positions=positions.tolist(),
                             where=f"{cache_class}: forward() rewinding {sequence.shape[1]} tokens to "
                                   f"cache_position={positions.tolist()}")


# How a user calls each member (contract.USERS_MEMBERS) on a cache holding one row; each returns the value to record.
MEMBER_CALLS = {
    "get_seq_length": lambda cache: cache.get_seq_length(),
    "get_max_cache_shape": lambda cache: cache.get_max_cache_shape(),
    "get_max_length": lambda cache: cache.get_max_length(),
    "max_cache_len": lambda cache: cache.max_cache_len,
    "max_batch_size": lambda cache: cache.max_batch_size,
    "reset": lambda cache: cache.reset(),
    "crop": lambda cache: cache.crop(-1),
    "reorder_cache": lambda cache: cache.reorder_cache(torch.tensor([0])),
    "batch_repeat_interleave": lambda cache: cache.batch_repeat_interleave(1),
    "batch_select_indices": lambda cache: cache.batch_select_indices(torch.tensor([0])),
    "to_legacy_cache": lambda cache: len(cache.to_legacy_cache()),
    "from_legacy_cache": lambda cache: type(cache.from_legacy_cache(
        tuple(adapter.layer_storage(cache, layer) for layer in range(adapter.layer_count(cache))))).__name__,
    "is_compileable": lambda cache: cache.is_compileable,
}


@pytest.mark.parametrize("member", contract.USERS_MEMBERS)
def test_member_users_call_answers_by_its_name(model, tokens, compare, metrics, cache_class, member):
    """Each member users call, called by its own name on a user's filled cache object: present, deprecated or
    absent on this release (metrics.api; the report shows additions, deprecations and removals release by
    release), and where present it answers or refuses clearly, without crashing. Its answer is recorded
    (metrics.answer); what the answers must be is judged by the checks above, member by member."""
    window = adapter.window(model.config)
    with graded(metrics):  # the prompt only: what the cache then holds is the checks above's business
        cache = generation.user_cache_object(model, cache_class, batch_size=1,
                                             capacity=scenarios.contract_prompt(window) + ROOM)
        adapter.forward(model, tokens(1, scenarios.contract_prompt(window)), cache=cache)
    if metrics["outcome"] == "refused clearly":
        return  # the class refused the prompt clearly: no object to ask
    metrics["api"] = contract.member_of_object(cache, member)
    if metrics["api"]["state"] == "absent":
        pytest.skip(f"{cache_class} offers no {member} on transformers {adapter.INSTALLED}")
    with graded(metrics):
        answer = MEMBER_CALLS[member](cache)
        metrics["answer"] = answer if isinstance(answer, int | str | bool | type(None)) else repr(answer)[:200]


def test_batch_select_indices_keeps_the_rows_selected(model, tokens, compare, metrics, cache_class):
    """batch_repeat_interleave(2) then batch_select_indices([1]) (as contrastive search and users who fork a
    sequence call them): the cache holds the one row again, so the next token decodes like recomputation."""
    offered_or_skip(metrics, cache_class, "batch_select_indices")
    with graded(metrics):
        cache, sequence = filled(model, tokens, compare, cache_class, batch=2, label=f"{cache_class} before select")
        cache.batch_select_indices(torch.tensor([1], device=sequence.device))
        next_token_against_recomputation(model, cache, sequence[1:], tokens(1, 1), compare,
                                         where=f"{cache_class}: the token after batch_select_indices([1])")
