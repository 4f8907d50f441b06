"""Property 1: with a static cache, every step's logits equal recomputation without any cache.

W is the checkpoint's sliding window. Scenarios are placed relative to W so that they cross it, whatever the
checkpoint. Tolerances are per dtype and device (cache_conformance/oracles/tolerances.py); in float32 the greedy
tokens must also be identical.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_conformance import adapter
from cache_conformance.inputs import scenarios
from cache_conformance.oracles import window_oracle
from cache_conformance.oracles.decoding import (
    chunks_against_recomputation,
    generation_against_recomputation,
    left_padded,
    prefill_and_decode,
    random_tokens,
)

PROMPT_LENGTH_FROM_WINDOW = {"prompt-shorter-than-window": -1, "prompt-equal-to-window": 0, "prompt-longer-than-window": 1}


@pytest.mark.parametrize("offset", PROMPT_LENGTH_FROM_WINDOW.values(), ids=PROMPT_LENGTH_FROM_WINDOW.keys())
def test_prefill_then_decode_across_the_window(model, window, tokens, compare, offset):
    prompt = tokens(1, window + offset)
    steps = window + 2
    cache = adapter.make_static_cache(model, batch_size=1, capacity=prompt.shape[1] + steps)
    prefill_and_decode(model, cache, prompt, steps, compare)


CHUNK_SCHEDULES = {
    # chunk sizes as a function of W
    "crossing-a-partly-full-window": lambda w: [w // 2, w // 2 + 2, 3, 1],
    "onto-a-full-window": lambda w: [w, 3, w + 1, 1, 2],
}


@pytest.mark.parametrize("schedule", CHUNK_SCHEDULES)
def test_chunked_prefill_and_multi_token_continuation(model, window, tokens, compare, schedule):
    sizes = CHUNK_SCHEDULES[schedule](window)
    cache = adapter.make_static_cache(model, batch_size=1, capacity=sum(sizes))
    chunks_against_recomputation(model, cache, tokens(1, sum(sizes)), sizes, compare)


def test_left_padded_batch(model, window, tokens, compare):
    lengths = scenarios.left_padded_batch(window)
    prompt, attention_mask = left_padded(model, tokens, lengths)
    steps = window + 2
    cache = adapter.make_static_cache(model, batch_size=len(lengths), capacity=max(lengths) + steps)
    prefill_and_decode(model, cache, prompt, steps, compare, attention_mask=attention_mask)


def test_generate_with_a_static_cache(model, window, tokens, compare):
    """generate() into a user-supplied static cache: its logits match recomputation, and the cache it was given
    (not a copy) holds what generate() fed, slot by slot (a generate() that ignored or copied it would pass the
    logits)."""
    prompt = tokens(1, scenarios.short_prompt_for_generate(window))
    new_tokens = scenarios.generate_new_tokens(window)
    cache = adapter.make_static_cache(model, batch_size=1, capacity=prompt.shape[1] + new_tokens)
    sequences, step_logits = adapter.generate_with_static_cache(model, prompt, cache=cache, max_new_tokens=new_tokens)
    where = f"generate() of {new_tokens} tokens"
    generation_against_recomputation(model, prompt.shape[1], sequences, step_logits, compare, where=where,
                                     length_forced=True)
    fed = sequences[:, :-1]  # the prompt and every new token but the last
    follower = window_oracle.follow(model, cache, fed, window_oracle.static_windows(model, window))
    follower.fed(fed.shape[1], where=f"after {where} ({fed.shape[1]} tokens fed)")
    assert adapter.seq_length(cache) == fed.shape[1], (
        f"{where}: the static cache passed to generate() holds the {fed.shape[1]} tokens generate() fed but "
        f"reports {adapter.seq_length(cache)} (what generate() and the model read to place the next token)"
    )


def test_cache_reuse_after_reset(model, window, tokens, compare):
    first_prompt, second_prompt = tokens(1, window + 1), tokens(1, window - 1)
    first_steps, steps = 3, window + 2
    # Room for both sequences: a reset() that kept the first one shows in the logits, not as an overflow.
    capacity = first_prompt.shape[1] + first_steps + second_prompt.shape[1] + steps
    cache = adapter.make_static_cache(model, batch_size=1, capacity=capacity)
    prefill_and_decode(model, cache, first_prompt, first_steps, compare, label="first prompt")
    adapter.reset(cache)
    prefill_and_decode(model, cache, second_prompt, steps, compare, label="second prompt, after reset()")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # `compare` keeps the worst case on purpose
@given(data=st.data())
def test_any_chunk_schedule(model, window, compare, data):
    prompt_length = data.draw(st.integers(1, 2 * window + 1), label="prompt length")
    continuation = data.draw(st.lists(st.integers(1, window + 2), max_size=4), label="continuation chunk sizes")
    spare_capacity = data.draw(st.integers(0, window), label="capacity beyond the sequence")
    token_seed = data.draw(st.integers(0, 2**16), label="token seed")
    sizes = [prompt_length, *continuation]
    sequence = random_tokens(model, 1, sum(sizes), torch.Generator().manual_seed(token_seed))
    cache = adapter.make_static_cache(model, batch_size=1, capacity=sum(sizes) + spare_capacity)
    chunks_against_recomputation(model, cache, sequence, sizes, compare)
