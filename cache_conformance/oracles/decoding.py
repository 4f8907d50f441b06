"""Drive a cache through prefill, chunks and greedy decoding, comparing every step with recomputation.

The reference is always `adapter.forward` without a cache over the whole sequence so far: causal attention
makes its logits at position t the logits of recomputing the prefix up to t.
"""

from __future__ import annotations

import contextlib

import torch

from cache_conformance import adapter
from cache_conformance.adapter import multimodal
from cache_conformance.grading import evidence
from cache_conformance.oracles.compare import Comparison

FIRST_ORDINARY_TOKEN = 3  # 0, 1 and 2 are Gemma's pad, eos and bos


def random_tokens(model, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Ordinary token ids drawn from `generator`, on the model's device."""
    high = min(adapter.text_config(model.config).vocab_size, 4096)
    return torch.randint(FIRST_ORDINARY_TOKEN, high, (batch, length), generator=generator).to(model.device)


def greedy_continuation(model, start: torch.Tensor, length: int) -> torch.Tensor:
    """`start` continued by the model's own greedy choices, recomputed without any cache, to `length` tokens: a
    prompt the model agrees with, so drafts taken from it (prompt lookup) or from a copy of the model are accepted,
    often several at once (a tiny model's greedy output soon repeats itself)."""
    sequence = start
    while sequence.shape[1] < length:
        sequence = torch.cat([sequence, recompute(model, sequence)[:, -1:].argmax(dim=-1)], dim=1)
    return sequence[:, :length]


def left_padded(model, tokens, lengths: list[int]):
    """A batch of prompts of `lengths` drawn by `tokens(batch, length)`, left-padded to the longest (as a
    tokenizer pads for generation), and its attention mask."""
    longest = max(lengths)
    prompt = tokens(len(lengths), longest)
    attention_mask = torch.ones_like(prompt)
    for row, length in enumerate(lengths):
        prompt[row, : longest - length] = adapter.text_config(model.config).pad_token_id
        attention_mask[row, : longest - length] = 0
    return prompt, attention_mask


def positions_from_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Position ids that skip left padding (what generate() computes), or None for unpadded input."""
    if attention_mask is None:
        return None
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def without_padding(logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Logits with padded positions set to NaN, which the comparison skips."""
    if attention_mask is None:
        return logits
    return logits.masked_fill(attention_mask[..., None] == 0, float("nan"))


def recompute(model, sequence: torch.Tensor, attention_mask: torch.Tensor | None = None, images=None) -> torch.Tensor:
    return call(model, sequence, images=images, attention_mask=attention_mask,
                position_ids=positions_from_mask(attention_mask))


def call(model, input_ids, *, images=None, start: int = 0, **kwargs):
    """One forward call over positions start, start+1, ...; with `images` (cache_conformance.images.Images) the
    multimodal model gets the pixel values and token types that span needs."""
    if images is None:
        return adapter.forward(model, input_ids, start=start, **kwargs)
    return multimodal.forward_with_images(model, input_ids, start=start, **kwargs,
                                          **images.call_inputs(start, start + input_ids.shape[1]))


@contextlib.contextmanager
def located(where: str):
    """Say which step raised: an exception from deep inside the model becomes a failure that names the step."""
    try:
        yield
    except Exception as error:
        raise evidence.failure(f"{where} raised {type(error).__name__}: {error}", evidence.CRASH, where=where,
                               raised=type(error).__name__) from error


def prefill_and_decode(model, cache, prompt, steps: int, compare: Comparison, *, attention_mask=None, label="",
                       decode_with=None, before_step=None, images=None):
    """Prefill `prompt` into `cache`, then greedy-decode `steps` tokens one at a time, comparing each step.

    The cached path runs first; one recomputation over the whole sequence is then the reference for every step
    (causal attention: its logits at position t are those of recomputing the prefix up to t). Steps are compared in
    order, so the first failure reported is the earliest, also when a later step raised. `decode_with` (e.g. the
    model compiled) runs the decode steps in `model`'s place, as generate() runs a compiled decode step after an
    uncompiled prefill; `before_step(step)` is called before each decode step. `images`: the prompt's images
    (cache_conformance.images.Images), passed to the prefill and to recomputation."""
    label = f"{label}: " if label else ""
    length = prompt.shape[1]
    sequence = prompt
    cached = []  # (where, logits, positions, decoded), in the order the steps ran
    raised = None
    try:
        where = f"{label}prefill of {length} tokens"
        with located(where):
            logits = call(
                model, prompt, images=images, cache=cache, start=0, attention_mask=attention_mask,
                position_ids=positions_from_mask(attention_mask),
            )
        cached.append((where, logits, list(range(length)), False))
        for step in range(1, steps + 1):
            position = sequence.shape[1]
            next_token = logits[:, -1:].argmax(-1)
            sequence = torch.cat([sequence, next_token], dim=1)
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, torch.ones_like(next_token)], dim=1)
            positions = positions_from_mask(attention_mask)
            where = f"{label}decode step {step} (position {position}, {position + 1} tokens seen)"
            if before_step is not None:
                before_step(step)
            with located(where):
                logits = adapter.forward(
                    decode_with if decode_with is not None else model, next_token, cache=cache, start=position,
                    attention_mask=attention_mask, position_ids=positions[:, -1:] if positions is not None else None,
                )
            cached.append((where, logits, [position], True))
    except AssertionError as error:
        raised = error
    reference = without_padding(recompute(model, sequence, attention_mask, images), attention_mask)
    compare_in_order(cached, reference, compare, raised)
    return sequence


def compare_in_order(calls, reference, compare: Comparison, raised: AssertionError | None) -> None:
    """Compare each call's logits (and a decoded token's greedy choice) with the reference at its positions, in the
    order the calls ran; then re-raise what a later call raised, so the earliest failure is the one reported.
    `calls`: (where, logits, positions, decoded)."""
    for where, logits, positions, decoded in calls:
        expected = reference[:, positions[0] : positions[-1] + 1]
        compare.logits_close(logits, expected, where=where, positions=positions)
        if decoded:
            compare.greedy_tokens_match(logits.argmax(-1), expected, where=where, positions=positions)
    if raised is not None:
        raise raised


def chunks_against_recomputation(model, cache, sequence, chunk_sizes, compare: Comparison, *,
                                 continue_with=None, images=None, cached: int = 0, label: str = "") -> None:
    """Feed `sequence` into `cache` in chunks of `chunk_sizes`, comparing each chunk's logits; `continue_with`
    (e.g. the model compiled) runs every chunk after the first in `model`'s place; `images`: the sequence's images,
    each passed with the chunk that holds it. `cached`: the cache already holds the first `cached` tokens of
    `sequence` (the chunks cover the rest)."""
    assert cached + sum(chunk_sizes) == sequence.shape[1], "chunk sizes must cover the sequence"
    reference = recompute(model, sequence, images=images)
    label = f"{label}: " if label else ""
    start = cached
    for number, size in enumerate(chunk_sizes, start=1):
        end = start + size
        where = f"{label}chunk {number} of {len(chunk_sizes)} (sizes {list(chunk_sizes)}, positions {start}..{end - 1})"
        with located(where):
            runner = continue_with if continue_with is not None and number > 1 else model
            logits = call(runner, sequence[:, start:end], images=images, cache=cache, start=start)
        compare.logits_close(logits, reference[:, start:end], where=where, positions=list(range(start, end)))
        compare.greedy_tokens_match(logits.argmax(-1), reference[:, start:end], where=where, positions=list(range(start, end)))
        start = end


def one_token_per_call(model, step, prompt, steps: int, compare: Comparison, *, label: str):
    """Feed `prompt` one token per call through `step(token_ids, position) -> logits` (an exported program, as
    ExecuTorch's runner feeds it), then greedy-decode `steps` tokens, comparing every call with recomputation by
    `model`; returns the sequence. Calls are compared in order after they all ran, like `prefill_and_decode`."""
    sequence = prompt
    called = []  # (where, logits, positions, decoded), in the order the calls ran
    raised = None
    try:
        for position in range(prompt.shape[1] + steps):
            decoded = position >= prompt.shape[1]
            if decoded:
                sequence = torch.cat([sequence, called[-1][1][:, -1:].argmax(-1)], dim=1)
            kind = f"decode step {position - prompt.shape[1] + 1}" if decoded else "prompt token"
            where = f"{label}: {kind} (position {position}, {position + 1} tokens seen)"
            with located(where):
                logits = step(sequence[:, position : position + 1], position)
            called.append((where, logits, [position], decoded))
    except AssertionError as error:
        raised = error
    compare_in_order(called, recompute(model, sequence), compare, raised)
    return sequence


def generation_against_recomputation(model, prompt_length: int, sequences, step_logits, compare: Comparison, *,
                                     where: str, images=None, max_new_tokens: int | None = None,
                                     length_forced: bool = False):
    """Compare generate()'s per-step logits (and, where the tolerance demands it, its greedy tokens) with
    recomputation over the generated sequence (with the prompt's `images`, if any); then, given `max_new_tokens`,
    that as many tokens came as were asked for (`new_tokens_as_asked`). `length_forced`: the harness made generate()
    run to its length (adapter.greedy_generate's min_new_tokens), so end-of-sequence could not be chosen."""
    first = prompt_length - 1  # the logits at the prompt's last position choose the first new token
    reference = recompute(model, sequences[:, :-1], images=images)[:, first:]
    positions = list(range(first, sequences.shape[1] - 1))
    compare.logits_close(step_logits, reference, where=where, positions=positions)
    ends = end_of_sequence_ids(model)
    compare.greedy_tokens_match(sequences[:, first + 1 :], reference, where=where, positions=positions,
                                forbidden=ends if length_forced else ())
    if max_new_tokens is not None:
        new_tokens_as_asked(sequences, prompt_length, max_new_tokens, ends, where=where)


def end_of_sequence_ids(model) -> tuple[int, ...]:
    """The checkpoint's end-of-sequence token ids (its config names one or a list)."""
    eos = adapter.text_config(model.config).eos_token_id
    return tuple(eos if isinstance(eos, list) else [eos])


def new_tokens_as_asked(sequences, prompt_length: int, max_new_tokens: int, ends: tuple[int, ...], *,
                        where: str) -> None:
    """Greedy decoding returns exactly `max_new_tokens` new tokens, fewer only when it ended at end-of-sequence (one
    of `ends`): a strategy that is lossless for greedy search (assisted, prompt lookup) must too. Each extra token
    may well be the greedy choice, so only the count shows drafts kept past the budget."""
    generated = sequences[0, prompt_length:].tolist()
    ended = [index for index, token in enumerate(generated) if token in ends]
    expected = min(max_new_tokens, ended[0] + 1) if ended else max_new_tokens
    if len(generated) != expected:
        raise evidence.failure(
            f"{where}: {len(generated)} new tokens returned, greedy decoding returns {expected} "
            f"(max_new_tokens={max_new_tokens}{f', end-of-sequence at new token {ended[0]}' if ended else ''}): "
            f"{len(generated) - expected:+d} tokens", "token count", where=where, difference=len(generated) - expected,
            limit=0, position=prompt_length + min(expected, len(generated)))
