"""The multimodal Gemma 3 (Gemma3ForConditionalGeneration): every property with images in the prompt.

An image is begin-of-image, N soft tokens, end-of-image (N=4 in the embedded checkpoint); inside one image the soft
tokens attend to each other both ways, on top of the language model's sliding and full layers. W is the sliding
window. Every comparison passes the same pixel values and token types to the cached path and to recomputation.
Equality of the two paths cannot see a mask that is wrong in both, so the image-attention checks perturb one
position inside one layer and grade which outputs move, on each path.
"""

import pytest

from cache_conformance import adapter
from cache_conformance.grading import evidence, overflow
from cache_conformance.inputs import images, scenarios
from cache_conformance.inputs.images import place_images
from cache_conformance.oracles.decoding import (
    call,
    chunks_against_recomputation,
    generation_against_recomputation,
    left_padded,
    located,
    prefill_and_decode,
)
from cache_conformance.oracles.snapshots import reference_for, reference_run
from cache_conformance.oracles.window_oracle import attention_output_changes, feed_chunks, follow, static_windows
from cache_conformance.probes import memory

IMAGE_SEED = 1234  # pixel values; the tokens around the images come from the `tokens` fixture


# The multimodal checkpoint may be another than the text one (the embedded one, when --checkpoint is a text
# checkpoint): this suite's window and tokens are the multimodal model's.
@pytest.fixture
def window(multimodal_window):
    return multimodal_window


@pytest.fixture
def tokens(multimodal_tokens):
    return multimodal_tokens


def image_at(model, window):
    """Where a scenario's images go (positions of their begin-of-image tokens) and how long its prompt is
    (scenarios.images_at, for the model's image length)."""
    return {scenario: scenarios.images_at(scenario, window, images.image_length(model)) for scenario in SCENARIOS}


# image_at's scenarios by name (parametrize needs them before a model is loaded).
SCENARIOS = scenarios.IMAGE_SCENARIOS


def image_prompt(model, tokens, starts: list[int], length: int):
    """One row of `length` tokens with an image at each of `starts` (positions of begin-of-image)."""
    return place_images(model, tokens(1, length), [(0, start) for start in starts], seed=IMAGE_SEED)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_multimodal_prefill_then_decode(multimodal_model, window, tokens, compare, scenario):
    starts, length = image_at(multimodal_model, window)[scenario]
    prompt, placed = image_prompt(multimodal_model, tokens, starts, length)
    steps = window + 2
    cache = adapter.make_static_cache(multimodal_model, batch_size=1, capacity=length + steps)
    prefill_and_decode(multimodal_model, cache, prompt, steps, compare, images=placed, label=scenario)


def test_multimodal_static_cache_larger_than_the_window(multimodal_model, window, tokens, compare):
    """A static cache far longer than the window: the image masks are sized for each layer kind's cache."""
    starts, length = image_at(multimodal_model, window)["image-inside-window"]
    prompt, placed = image_prompt(multimodal_model, tokens, starts, length)
    steps = window + 2
    cache = adapter.make_static_cache(multimodal_model, batch_size=1, capacity=4 * window + length + steps)
    prefill_and_decode(multimodal_model, cache, prompt, steps, compare, images=placed)


def test_multimodal_left_padded_batch_with_an_image_in_one_row(multimodal_model, window, tokens, compare):
    lengths = scenarios.image_in_a_padded_batch(window, images.image_length(multimodal_model))
    text, attention_mask = left_padded(multimodal_model, tokens, lengths)
    prompt, placed = place_images(multimodal_model, text, [(0, scenarios.IMAGE_IN_THE_LONGER_ROW)], seed=IMAGE_SEED)
    steps = window + 2
    cache = adapter.make_static_cache(multimodal_model, batch_size=len(lengths), capacity=max(lengths) + steps)
    prefill_and_decode(multimodal_model, cache, prompt, steps, compare, attention_mask=attention_mask, images=placed)


def test_multimodal_second_turn_with_a_second_image(multimodal_model, window, tokens, compare):
    """A conversation continued on the cache that holds its first turn (an image, then text), with a second
    image in the new turn, then decoding; every call against recomputation over both turns."""
    turns = scenarios.second_turn(window, images.image_length(multimodal_model))
    first_turn, second_turn, steps = turns.first_turn, turns.second_turn, turns.steps
    prompt, placed = image_prompt(multimodal_model, tokens, turns.images, first_turn + second_turn + steps)
    cache = adapter.make_static_cache(multimodal_model, batch_size=1, capacity=prompt.shape[1])
    chunks_against_recomputation(multimodal_model, cache, prompt, [first_turn, second_turn, *[1] * steps], compare,
                                 images=placed)


def test_multimodal_generate_with_a_static_cache(multimodal_model, window, tokens, compare):
    starts, length = image_at(multimodal_model, window)["image-inside-window"]
    prompt, placed = image_prompt(multimodal_model, tokens, starts, length)
    new_tokens = window + 4
    cache = adapter.make_static_cache(multimodal_model, batch_size=1, capacity=length + new_tokens)
    sequences, step_logits = adapter.generate_with_static_cache(
        multimodal_model, prompt, cache=cache, max_new_tokens=new_tokens,
        pixel_values=placed.pixel_values, token_type_ids=placed.token_types,
    )
    generation_against_recomputation(multimodal_model, length, sequences, step_logits, compare, images=placed,
                                     where=f"generate() of {new_tokens} tokens", length_forced=True)


def test_multimodal_sliding_window_contents_with_image_tokens(multimodal_model, window, tokens):
    """After the prompt (an image straddling W) and after each decode step, every layer of the static cache holds,
    slot by slot, the oracle's keys and values of exactly the positions its window holds, image tokens included:
    the soft tokens are evicted from sliding layers like text, and kept by full-attention layers."""
    starts, length = image_at(multimodal_model, window)["image-straddling-window-boundary"]
    steps = window + 2
    sequence, placed = image_prompt(multimodal_model, tokens, starts, length + steps)
    cache = adapter.make_static_cache(multimodal_model, batch_size=1, capacity=sequence.shape[1])
    follower = follow(multimodal_model, cache, sequence, static_windows(multimodal_model, window), images=placed)
    feed_chunks(multimodal_model, follower, sequence, [length, *[1] * steps], label="decode", images=placed)


# ---- what each position sees ----

PATHS = ("recomputation", "static-cache")


def perturbation_run(model, prompt, placed, path: str):
    """One pass over `prompt` without cache, or as the prefill of a fresh static cache longer than the window."""
    if path == "recomputation":
        return lambda: call(model, prompt, images=placed)
    capacity = prompt.shape[1] + 2 * adapter.window(model.config)
    return lambda: call(model, prompt, images=placed,
                        cache=adapter.make_static_cache(model, batch_size=1, capacity=capacity))


def flat(by_layer: dict[int, dict[int, float]]) -> dict[str, float]:
    """Changes by layer and position as one flat dict for the results file."""
    return {f"layer {layer} position {position}": change
            for layer, by_position in by_layer.items() for position, change in by_position.items()}


def changes_at(model, prompt, placed, path, query, perturbed):
    return attention_output_changes(model, perturbation_run(model, prompt, placed, path), query=query,
                                    perturbed=perturbed)


@pytest.mark.parametrize("path", PATHS)
def test_image_tokens_see_each_other_both_ways(multimodal_model, window, tokens, metrics, path):
    """In every layer, the first soft token of an image is changed by every later soft token of the same image."""
    start, length = scenarios.image_both_ways_prompt(window, images.image_length(multimodal_model))
    prompt, placed = image_prompt(multimodal_model, tokens, [start], length)
    image = placed.placed[0]
    by_layer = changes_at(multimodal_model, prompt, placed, path, image.first, image.soft_tokens[1:])
    metrics["first_soft_token_change"] = flat(by_layer)
    for layer, by_position in by_layer.items():
        for position, change in by_position.items():
            with evidence.located_as("image-influence", path=path, layer=layer, query=image.first, position=position):
                assert change > 0, (
                    f"{path}: layer {layer}: negating soft token {position} of the image at "
                    f"{image.first}..{image.last} did not change the output at its first soft token {image.first}: "
                    f"inside one image attention must go both ways"
                )


@pytest.mark.parametrize("path", PATHS)
def test_image_tokens_see_nothing_later_outside_their_image(multimodal_model, window, tokens, metrics, path):
    """No position is changed by a later position outside its own image: the first image's soft tokens see
    neither the text after it nor a later image, and text before an image does not see the image. Exactly zero
    change (a masked position has weight zero); the both-ways check shows the same perturbation does move
    outputs it may move."""
    starts, length = image_at(multimodal_model, window)["two-images"]
    prompt, placed = image_prompt(multimodal_model, tokens, starts, length)
    first, second = placed.placed
    cases = {first.last: [first.last + 1, second.first - 2, second.first, second.last], first.first - 2: [first.first]}
    seen = {}
    for query, later in cases.items():
        for layer, by_position in changes_at(multimodal_model, prompt, placed, path, query, later).items():
            for position, change in by_position.items():
                seen[f"layer {layer} query {query} position {position}"] = change
                with evidence.located_as("image-influence", path=path, layer=layer, query=query, position=position):
                    assert change == 0, (
                        f"{path}: layer {layer}: negating position {position} changed the output at the earlier "
                        f"position {query} by {change:.3g} (images at {first.first}..{first.last} and "
                        f"{second.first}..{second.last}): a position may only see a later one inside its own image"
                    )
    metrics["changes_from_later_positions"] = seen


@pytest.mark.parametrize("path", PATHS)
def test_sliding_layers_bound_an_image_tokens_view(multimodal_model, window, tokens, metrics, path):
    """A sliding layer's image soft token sees the W-1 positions before it and nothing further back; a full layer
    sees them all (the control)."""
    start = window + 2
    prompt, placed = image_prompt(multimodal_model, tokens, [start], start + images.image_length(multimodal_model) + 1)
    query = placed.placed[0].first
    inside, outside = query - (window - 1), query - window
    by_layer = changes_at(multimodal_model, prompt, placed, path, query, [inside, outside])
    sliding = adapter.sliding_layers(multimodal_model.config)
    metrics["changes"] = flat(by_layer)
    for layer, by_position in by_layer.items():
        kind = "sliding" if sliding[layer] else "full-attention"
        what = f"{path}: layer {layer} ({kind}, W={window}): at the image's first soft token {query}, negating"
        assert by_position[inside] > 0, f"{what} position {inside} (distance {window - 1}) changed nothing"
        if sliding[layer]:
            assert by_position[outside] == 0, (
                f"{what} position {outside} (distance {window}) changed the output by {by_position[outside]:.3g}: "
                f"an image token's sliding window must end W positions back"
            )
        else:
            assert by_position[outside] > 0, f"{what} position {outside} changed nothing in a full-attention layer"


# ---- overflow, memory, reference logits ----

OVERFLOWS = ("prefill-with-an-image-longer-than-capacity", "decode-past-capacity-after-an-image")


@pytest.mark.parametrize("scenario", OVERFLOWS)
def test_multimodal_overflow_with_an_image_raises(multimodal_model, window, tokens, metrics, scenario):
    """Asking a static cache for more positions than it holds raises with an image in the prompt: no silent
    wrap-around. (Whether the message is clear and the cache intact is the overflow suite's business: no release
    4.50-5.24 does either, image or not.)"""
    starts, length = image_at(multimodal_model, window)["prompt-longer-than-window"]
    prompt, placed = image_prompt(multimodal_model, tokens, starts, length + 1)
    capacity = length if scenario.startswith("prefill") else length + 1
    cache = adapter.make_static_cache(multimodal_model, batch_size=1, capacity=capacity)
    if scenario.startswith("prefill"):
        def overflowing():  # the whole prompt: one position more than the cache holds
            call(multimodal_model, prompt, images=placed, cache=cache)
    else:
        call(multimodal_model, prompt, images=placed, cache=cache)  # fills the cache

        def overflowing():  # one token more
            adapter.forward(multimodal_model, prompt[:, -1:], cache=cache, start=capacity)
    result = overflow.attempt(overflowing, lambda: overflow.cache_state(cache))
    metrics.update(capacity=capacity, exception=overflow.describe(result.error)[:500])
    failure = overflow.raise_failure(result)
    assert failure is None, f"{scenario} (capacity {capacity}): {failure}"


def test_multimodal_memory_stays_put_while_decoding_after_an_image(multimodal_model, window, tokens, metrics):
    """After a prefill with an image, every cached tensor keeps its storage through decoding to capacity (3W, or more
    where the prompt leaves fewer than W + 1 steps: scenarios.capacity_after_an_image).
    Positive control: a dynamic cache's full layers move to new, larger storage at every step of the same run."""
    starts, length = image_at(multimodal_model, window)["image-inside-window"]
    capacity = scenarios.capacity_after_an_image(memory.capacity_for(window), length, window)
    sequence, placed = image_prompt(multimodal_model, tokens, starts, capacity)

    def storage_after_each_step(cache):
        return memory.storage_after_each_step(multimodal_model, cache, sequence, prompt_length=length, images=placed)

    with located("decoding after an image into the static cache"):
        static = storage_after_each_step(adapter.make_static_cache(multimodal_model, batch_size=1, capacity=capacity))
    with located("the control, decoding after an image into a dynamic cache,"):
        dynamic = storage_after_each_step(adapter.make_dynamic_cache(multimodal_model))
    metrics["static_cache_bytes"] = [sum(s.nbytes for s in m.values()) for m in static]
    unseen = memory.growth_unseen(multimodal_model.config, dynamic)
    assert unseen is None, unseen
    memory.assert_storage_stays_put(static, after=f" after a prefill of {length} tokens with an image", counted="steps")


REFERENCE_STEPS = 12


def test_multimodal_logits_match_the_recorded_reference(multimodal_model, window, multimodal_recorded_tokens,
                                                        multimodal_logits_snapshot):
    """Prefill and decode logits with two images in a prompt longer than the window, against logits recorded once
    (float32, CPU, eager): catches a change that moves the cached path and recomputation alike."""
    logits_snapshot = multimodal_logits_snapshot
    starts, length = image_at(multimodal_model, window)["two-images"]
    prompt, placed = image_prompt(multimodal_model, multimodal_recorded_tokens, starts, length)
    reference = reference_for(logits_snapshot)
    fits = reference is not None and reference["tokens"].shape == (length + REFERENCE_STEPS,)
    continuation = reference["tokens"][length:] if fits else None
    assert logits_snapshot == reference_run(multimodal_model, prompt, REFERENCE_STEPS, continuation, images=placed)
