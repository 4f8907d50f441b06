"""Every scenario's sizes (cache_conformance/inputs/scenarios.py, and the memory suite's in cache_conformance/probes/memory.py) keep
what the scenario's name promises for every sliding window W from 2 to 16, and for images of any length; on the
embedded checkpoints (W = 8, and W = 5 for tiny-gemma3-other) they are the sizes the suites have always run."""

import pytest

from cache_conformance.inputs import scenarios
from cache_conformance.probes import memory

WINDOWS = range(2, 17)
IMAGE_LENGTHS = (3, 4, 5, 6, 7, 10, 19, 36)  # begin, N >= 1 soft tokens, end; the embedded checkpoint's is 6
by_window = pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"W={w}")
by_image_length = pytest.mark.parametrize("image_length", IMAGE_LENGTHS, ids=lambda n: f"image={n}")


def fits(start: int, image_length: int, length: int) -> bool:
    return 0 <= start and start + image_length <= length


@by_window
def test_a_padded_batch_has_a_row_longer_and_a_row_shorter_than_the_window(window):
    longer, shorter = scenarios.left_padded_batch(window)
    assert longer > window > shorter >= 1


@by_window
def test_continuous_batching_requests_are_longer_than_2w_shorter_and_longer_than_the_window(window):
    requests = scenarios.continuous_batching_requests(window)
    assert min(requests) >= 1
    assert max(requests) > 2 * window
    assert any(length < window for length in requests) and any(window < length <= 2 * window for length in requests)


@by_window
def test_generate_starts_shorter_than_the_window_and_crosses_it(window):
    prompt, new_tokens = scenarios.short_prompt_for_generate(window), scenarios.generate_new_tokens(window)
    assert 1 <= prompt < window
    assert prompt + new_tokens - 1 > window  # generate() feeds every token but the last


@by_window
@pytest.mark.parametrize("when", scenarios.CROP_WHEN)
def test_a_crop_removes_some_of_what_the_cache_holds_before_or_after_the_window_fills(window, when):
    crop = scenarios.crop(when, window)
    assert 1 <= crop.cropped < crop.held, f"crop({crop.cropped}) of a cache holding {crop.held} tokens"
    assert crop.kept >= 1
    if when == "before-the-window-fills":
        assert crop.held <= window, f"a cache of {crop.held} tokens has evicted some of them already (W={window})"
        if window >= 3:  # at W = 2 the only cache a crop can leave a token in holds 2 tokens: the window, just full
            assert crop.held < window, f"a cache of {crop.held} tokens has filled the window (W={window})"
    else:
        assert crop.held > window, f"a cache of {crop.held} tokens has not filled the window (W={window})"
    assert len(crop.continuation) == window + 1 and min(crop.continuation) >= 1
    assert crop.kept + sum(crop.continuation) > window  # decoding on crosses the window


@by_window
@pytest.mark.parametrize("which", scenarios.CONTRACT_CROPS)
def test_the_contracts_crop_keeps_a_token_and_sits_where_it_is_named(window, which):
    held = scenarios.contract_prompt(window) + scenarios.CONTRACT_DECODED
    assert scenarios.contract_prompt(window) > window  # the sliding layers have evicted before any member is called
    removed = scenarios.contract_crop(which, window)
    kept = held - removed
    assert 1 <= removed < held and kept >= 1
    needed = range(max(0, kept - (window - 1)), kept)  # what the next token attends to besides itself
    slots = range(held - window, held)  # what a sliding layer of W slots holds when crop() is called
    if which == "one-token":
        assert set(needed) <= set(slots)
    else:
        assert not set(needed) & set(slots)


@by_window
def test_a_cache_reused_after_reset_holds_either_sequence(window):
    reset = scenarios.after_reset(window)
    assert min(reset.first) >= 1 and min(reset.second) >= 1
    assert reset.first[0] > window > reset.second[0]  # a prompt longer than W, then one shorter
    assert sum(reset.second) > window  # decoding after reset() crosses the window
    assert reset.capacity >= max(sum(reset.first), sum(reset.second))


@by_window
def test_overflow_capacity_exceeds_the_window_and_its_scenarios_fit(window):
    capacity = scenarios.overflow_capacity(window)
    assert capacity > window
    chunks = scenarios.chunks_within_overflow_capacity(window)
    assert min(chunks) >= 1 and chunks[0] > window and sum(chunks) == capacity
    assert capacity - 2 >= 1  # chunk-crossing-capacity fills all but two positions first
    assert capacity - (window + 1) >= 1  # the recovery prompt after reset() (W + 1) leaves decode steps
    assert window + (capacity - window + 3) - 1 > capacity  # generate-into-too-small-a-cache overflows


@by_window
def test_the_memory_suite_decodes_from_a_prompt_shorter_than_the_window_past_it(window):
    prompt, capacity = memory.prompt_length_for(window), memory.capacity_for(window)
    assert 1 <= prompt < window < capacity
    assert memory.first_steady_reading(window) < capacity - prompt  # steady readings to measure growth over


@by_window
@by_image_length
def test_each_image_scenario_fits_its_prompt_and_sits_where_it_is_named(window, image_length):
    for scenario in scenarios.IMAGE_SCENARIOS:
        starts, length = scenarios.images_at(scenario, window, image_length)
        assert all(fits(start, image_length, length) for start in starts), (scenario, starts, length)
    (start,), length = scenarios.images_at("image-inside-window", window, image_length)
    assert start == 1
    if 1 + image_length <= window - 1:
        assert length < window, "the whole prompt is inside the window"
    else:
        assert length == 1 + image_length, "the image cannot be inside the window: the shortest prompt that holds it"
    (start,), length = scenarios.images_at("image-straddling-window-boundary", window, image_length)
    assert start <= window - 1 and start + image_length - 1 >= window and length > window
    _, length = scenarios.images_at("prompt-longer-than-window", window, image_length)
    assert length > 2 * window
    (first, second), length = scenarios.images_at("two-images", window, image_length)
    assert first >= 1  # a text token before the first image
    assert second - 1 >= first + image_length  # and one between the images
    assert second >= window  # the second image begins past the first window
    assert length >= second + image_length + 1 and length > window  # text after the second image


@by_window
@by_image_length
def test_the_other_image_prompts_hold_their_images(window, image_length):
    longer, shorter = scenarios.image_in_a_padded_batch(window, image_length)
    assert fits(scenarios.IMAGE_IN_THE_LONGER_ROW, image_length, longer) and longer > window > shorter >= 1
    turns = scenarios.second_turn(window, image_length)
    first_image, second_image = turns.images
    assert fits(first_image, image_length, turns.first_turn)
    assert turns.first_turn <= second_image - 1 and fits(second_image, image_length, turns.first_turn + turns.second_turn)
    assert turns.first_turn + turns.second_turn > window and turns.steps >= 1
    if 1 + image_length <= window - 1:
        assert turns.first_turn < window, "the first turn is inside the window"
    start, length = scenarios.image_both_ways_prompt(window, image_length)
    assert fits(start, image_length, length) and length >= window
    _, prompt = scenarios.images_at("image-inside-window", window, image_length)
    capacity = scenarios.capacity_after_an_image(memory.capacity_for(window), prompt, window)
    assert capacity >= memory.capacity_for(window) and capacity - prompt > window


def sizes(window: int, image_length: int = 6) -> dict:
    return {
        "left_padded_batch": scenarios.left_padded_batch(window),
        "continuous_batching_requests": scenarios.continuous_batching_requests(window),
        "short_prompt_for_generate": scenarios.short_prompt_for_generate(window),
        "generate_new_tokens": scenarios.generate_new_tokens(window),
        **{f"crop {when}": scenarios.crop(when, window) for when in scenarios.CROP_WHEN},
        "after_reset": scenarios.after_reset(window),
        "overflow_capacity": scenarios.overflow_capacity(window),
        "chunks_within_overflow_capacity": scenarios.chunks_within_overflow_capacity(window),
        **{scenario: scenarios.images_at(scenario, window, image_length) for scenario in scenarios.IMAGE_SCENARIOS},
        "image_in_a_padded_batch": scenarios.image_in_a_padded_batch(window, image_length),
        "second_turn": scenarios.second_turn(window, image_length),
        "image_both_ways_prompt": scenarios.image_both_ways_prompt(window, image_length),
        "capacity_after_an_image": scenarios.capacity_after_an_image(
            memory.capacity_for(window), scenarios.images_at("image-inside-window", window, image_length)[1], window),
    }


def test_the_embedded_checkpoints_sizes_are_the_ones_the_suites_always_ran():
    """W = 8 (fixtures/tiny-gemma3 and tiny-gemma3-multimodal, an image of 6 positions): every size as before the
    sizes became functions; W = 5 (tiny-gemma3-other, text only): every size that was valid before."""
    assert sizes(8) == {
        "left_padded_batch": [11, 6],
        "continuous_batching_requests": [19, 6, 9],
        "short_prompt_for_generate": 5,
        "generate_new_tokens": 12,
        "crop before-the-window-fills": scenarios.Crop(held=6, cropped=3, continuation=(2, *[1] * 8)),
        "crop after-the-window-fills": scenarios.Crop(held=17, cropped=3, continuation=(2, *[1] * 8)),
        "after_reset": scenarios.AfterReset(first=(9, 1, 1, 1), second=(7, *[1] * 10), capacity=17),
        "overflow_capacity": 20,
        "chunks_within_overflow_capacity": [10, 1, 3, 6],
        "image-inside-window": ([1], 7),
        "image-straddling-window-boundary": ([5], 14),
        "prompt-longer-than-window": ([2], 19),
        "two-images": ([1, 9], 18),
        "image_in_a_padded_batch": [11, 6],
        "second_turn": scenarios.SecondTurn(first_turn=7, second_turn=10, steps=3),
        "image_both_ways_prompt": (2, 8),
        "capacity_after_an_image": 24,
    }
    five = sizes(5)
    assert {name: five[name] for name in ("left_padded_batch", "continuous_batching_requests",
                                          "short_prompt_for_generate", "crop after-the-window-fills", "after_reset",
                                          "overflow_capacity", "chunks_within_overflow_capacity")} == {
        "left_padded_batch": [8, 3],
        "continuous_batching_requests": [13, 3, 6],
        "short_prompt_for_generate": 2,
        "crop after-the-window-fills": scenarios.Crop(held=11, cropped=3, continuation=(2, *[1] * 5)),
        "after_reset": scenarios.AfterReset(first=(6, 1, 1, 1), second=(4, *[1] * 7), capacity=11),
        "overflow_capacity": 14,
        "chunks_within_overflow_capacity": [7, 1, 3, 3],
    }
