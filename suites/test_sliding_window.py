"""Property 3: sliding-window eviction keeps exactly the right tokens.

Equal logits are necessary but not enough: a cache can hold the wrong tokens and still give close logits. These
checks inspect the cache itself against an independent oracle (cache_conformance/oracles/window_oracle.py): the keys and
values each layer computes in one forward pass without cache over the same tokens. After prefill and after every
call, a sliding layer must hold the oracle's keys and values of exactly the last min(W, tokens seen) positions,
a full-attention layer every position so far, in the release's slot order (adapter.slot_order), unused slots
zero. A failure names the call (step or chunk), the layer, the slot and the position. W is the checkpoint's
sliding window; scenarios are placed relative to it. What each layer held after each call goes into the results
file (metrics.content_checks).
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_conformance import adapter
from cache_conformance.inputs import scenarios
from cache_conformance.oracles.decoding import left_padded, random_tokens
from cache_conformance.oracles.window_oracle import (
    Window,
    attention_output_changes,
    feed_chunks,
    follow,
    static_windows,
)


def decode_schedule(prompt_length: int, steps: int) -> list[int]:
    """Chunk sizes of a prefill followed by `steps` one-token decode steps."""
    return [prompt_length, *[1] * steps]


# ---- window semantics: the specification the caches implement ----


def test_a_token_reaches_sliding_layers_only_within_the_window(model, window, tokens, metrics):
    """Negating one position's input inside a layer changes that layer's output at a query W-1 positions later,
    and not at W or more positions later; a full-attention layer sees it at any distance (the control)."""
    query = 2 * window + 1
    sequence = tokens(1, query + 1)
    distances = (window - 1, window, query)
    changes = {}
    by_layer = attention_output_changes(model, lambda: adapter.forward(model, sequence), query=query,
                                        perturbed=[query - d for d in distances])
    for layer, sliding in enumerate(adapter.sliding_layers(model.config)):
        kind = "sliding" if sliding else "full-attention"
        by_position = by_layer[layer]
        for distance in distances:
            change = by_position[query - distance]
            changes[f"layer {layer} distance {distance}"] = change
            what = (f"layer {layer} ({kind}, W={window}): negating position {query - distance} (distance {distance}) "
                    f"changed the output at position {query} by {change:.3g}")
            # A masked position gets an attention weight of exactly zero, so outside the window not even rounding
            # may change the output (measured: exactly 0 on every dtype and attention; inside, at least 0.03).
            if distance < window or not sliding:
                assert change > 0, f"{what}; a token in its window must change it"
            else:
                assert change == 0, f"{what}; a token outside the window must not change it at all"
    metrics["output_change_by_distance"] = changes


# ---- contents of the static cache ----

PROMPT_LENGTHS = {  # as a function of W
    "prompt-1": lambda w: 1,
    "prompt-W-1": lambda w: w - 1,
    "prompt-W": lambda w: w,
    "prompt-W+1": lambda w: w + 1,
    "prompt-2W+1": lambda w: 2 * w + 1,
}


@pytest.mark.parametrize("prompt", PROMPT_LENGTHS)
def test_static_cache_contents_prefill_then_decode(model, window, tokens, metrics, prompt):
    """One-token decoding from each prompt length until past the window boundary (at least two steps)."""
    prompt_length = PROMPT_LENGTHS[prompt](window)
    sizes = decode_schedule(prompt_length, max(2, window + 2 - prompt_length))
    sequence = tokens(1, sum(sizes))
    cache = adapter.make_static_cache(model, batch_size=1, capacity=sum(sizes))
    follower = follow(model, cache, sequence, static_windows(model, window))
    feed_chunks(model, follower, sequence, sizes, label="decode")
    metrics["content_checks"] = follower.log


CHUNK_SCHEDULES = {  # chunk sizes as a function of W
    "chunked-prefill-crossing-part-way": lambda w: [w // 2, w // 2 + 2, 3, 1],
    "continuation-onto-a-full-window": lambda w: [w, 3, w + 1, 1, 2],
    "continuation-crossing-twice": lambda w: [w - 1, 2 * w + 1, 1],
}


@pytest.mark.parametrize("schedule", CHUNK_SCHEDULES)
def test_static_cache_contents_chunked(model, window, tokens, metrics, schedule):
    sizes = CHUNK_SCHEDULES[schedule](window)
    sequence = tokens(1, sum(sizes))
    cache = adapter.make_static_cache(model, batch_size=1, capacity=sum(sizes))
    follower = follow(model, cache, sequence, static_windows(model, window))
    feed_chunks(model, follower, sequence, sizes)
    metrics["content_checks"] = follower.log


def test_static_cache_contents_left_padded_batch(model, window, tokens, metrics):
    """Real tokens keep their window slots: each row's sliding layers hold its last min(W, real) real tokens."""
    lengths = scenarios.left_padded_batch(window)
    prompt, prompt_mask = left_padded(model, tokens, lengths)
    steps = window + 2
    continuation = tokens(len(lengths), steps)
    sequence = torch.cat([prompt, continuation], dim=1)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(continuation)], dim=1)
    cache = adapter.make_static_cache(model, batch_size=len(lengths), capacity=sequence.shape[1])
    follower = follow(model, cache, sequence, static_windows(model, window), attention_mask=attention_mask)
    feed_chunks(model, follower, sequence, decode_schedule(max(lengths), steps), attention_mask=attention_mask,
                label="decode")
    metrics["content_checks"] = follower.log


def test_static_cache_contents_after_reset(model, window, tokens, metrics):
    """A cache reused after reset() holds only the new sequence's positions (unused slots zero again)."""
    sizes = scenarios.after_reset(window)
    first, second = tokens(1, sum(sizes.first)), tokens(1, sum(sizes.second))
    cache = adapter.make_static_cache(model, batch_size=1, capacity=sizes.capacity)
    follower = follow(model, cache, first, static_windows(model, window))
    feed_chunks(model, follower, first, list(sizes.first), label="decode")
    adapter.reset(cache)
    follower = follow(model, cache, second, static_windows(model, window))
    follower.fed(0, where="after reset()")
    feed_chunks(model, follower, second, list(sizes.second), label="decode")
    metrics["content_checks"] = follower.log


# ---- the dynamic cache ----


def dynamic_windows(model, kept: int | None) -> list[Window]:
    return [Window(kept if sliding else None) for sliding in adapter.sliding_layers(model.config)]


def test_dynamic_cache_contents_prefill_then_decode(model, window, tokens, metrics):
    """The model's growing cache: sliding layers keep what the release keeps (W-1 where it trims, else all)."""
    kept = adapter.dynamic_sliding_positions_kept(window)
    sizes = decode_schedule(window + 3, 3)
    sequence = tokens(1, sum(sizes))
    follower = follow(model, adapter.make_dynamic_cache(model), sequence, dynamic_windows(model, kept))
    feed_chunks(model, follower, sequence, sizes, label="decode")
    metrics["sliding_positions_kept"] = kept
    metrics["content_checks"] = follower.log


def test_generate_default_cache_contents(model, window, tokens, metrics):
    """The cache generate() builds by default holds, after generating, what the release keeps of the sequence."""
    kept = adapter.generate_default_sliding_positions_kept(window)
    prompt, new_tokens = tokens(1, scenarios.short_prompt_for_generate(window)), scenarios.generate_new_tokens(window)
    sequences, cache = adapter.generate_with_default_cache(model, prompt, max_new_tokens=new_tokens)
    fed = sequences[:, :-1]  # the last generated token is never fed back
    follower = follow(model, cache, fed, dynamic_windows(model, kept))
    follower.fed(fed.shape[1], where=f"generate() of {new_tokens} tokens ({fed.shape[1]} tokens fed)")
    metrics["cache_class"] = type(cache).__name__
    metrics["sliding_positions_kept"] = kept
    metrics["content_checks"] = follower.log


def test_generate_default_cache_trims_sliding_layers(model, window, tokens, metrics):
    """A sliding layer needs no more than the window: generate()'s default cache must not keep every position."""
    prompt = tokens(1, window)
    sequences, cache = adapter.generate_with_default_cache(model, prompt, max_new_tokens=window + 4)
    stored = {layer: adapter.layer_storage(cache, layer)[0].shape[2]
              for layer, sliding in enumerate(adapter.sliding_layers(model.config)) if sliding}
    full = max(adapter.layer_storage(cache, layer)[0].shape[2] for layer in range(adapter.layer_count(cache)))
    metrics |= {"cache_class": type(cache).__name__, "sliding_slots": stored, "largest_layer_slots": full}
    assert full >= sequences.shape[1] - 1, f"control: the full-attention layers hold {full} slots for {sequences.shape[1] - 1} tokens"
    too_long = {layer: slots for layer, slots in stored.items() if slots > window}
    assert not too_long, (
        f"generate() of {window + 4} tokens after a {window}-token prompt ({type(cache).__name__}): sliding layers "
        f"keep {too_long} positions (layer: positions), more than the window W={window}"
    )


# ---- property: any schedule, batch and padding, against a deque model of the window ----

@pytest.fixture(scope="session")
def model_with_window(model, target, checkpoint_path):
    """model_with_window(W): the checkpoint with sliding window W (a variant config), loaded once per target and W
    in each session (a fault that patches loading applies to the variants too)."""
    variants = {adapter.window(model.config): model}

    def load(window: int):
        if window not in variants:
            variants[window] = adapter.load_model(
                checkpoint_path, dtype=target.dtype, device=target.device,
                attn_implementation=target.attn_implementation, sliding_window=window,
            )
        return variants[window]

    return load


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # `compare` keeps the worst case on purpose
@given(data=st.data())
def test_any_schedule_batch_and_padding(window, model_with_window, compare, data):
    drawn_window = data.draw(st.sampled_from(sorted({window, max(2, window // 2 - 1)})), label="W")
    variant = model_with_window(drawn_window)
    lengths = data.draw(st.lists(st.integers(1, 2 * drawn_window + 1), min_size=1, max_size=2), label="prompt lengths")
    continuation = data.draw(st.lists(st.integers(1, drawn_window + 2), max_size=4), label="continuation chunk sizes")
    token_seed = data.draw(st.integers(0, 2**16), label="token seed")
    generator = torch.Generator().manual_seed(token_seed)
    prompt, prompt_mask = left_padded(variant, lambda b, n: random_tokens(variant, b, n, generator), lengths)
    rest = random_tokens(variant, len(lengths), sum(continuation), generator)
    sequence = torch.cat([prompt, rest], dim=1)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(rest)], dim=1) if len(set(lengths)) > 1 else None
    sizes = [max(lengths), *continuation]
    cache = adapter.make_static_cache(variant, batch_size=len(lengths), capacity=sequence.shape[1])
    follower = follow(variant, cache, sequence, static_windows(variant, drawn_window), attention_mask=attention_mask)
    feed_chunks(variant, follower, sequence, sizes, attention_mask=attention_mask, label=f"W={drawn_window}: chunk",
                compare=compare)
