"""Scenario sizes as plain functions of the sliding window W (and, for the multimodal scenarios, of the positions one
image takes): prompt lengths, crops, chunks, capacities and image placements.

A scenario is named for where it sits relative to W ("before the window fills", "a prompt longer than the window",
"an image straddling the window boundary"), so its sizes come from W, and each function keeps that meaning for every
W >= 2: no length below one token, no crop of more than the cache holds, no image that does not fit its prompt.
Where the plain formula (W - 2, W - 3, ...) already means what the name says, it is what the function returns, so the
embedded checkpoints (W = 8, and W = 5 for fixtures/tiny-gemma3-other) run the sizes they have always run; a small
window takes the nearest sizes that still mean it. tests/test_scenario_sizes.py checks each scenario's promise for
W = 2..16.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---- prompts shorter and longer than the window ----


def left_padded_batch(window: int) -> list[int]:
    """A left-padded batch of two prompts: one longer than the window (W + 3) and one shorter, padded (W - 2, at
    least one token)."""
    return [window + 3, max(1, window - 2)]


def continuous_batching_requests(window: int) -> list[int]:
    """Requests of different lengths submitted together: one longer than 2W (2W + 3), one shorter than the window
    (W - 2, at least one token) and one just longer (W + 1)."""
    return [2 * window + 3, max(1, window - 2), window + 1]


def short_prompt_for_generate(window: int) -> int:
    """A prompt shorter than the window for generate() (W - 3, at least one token); generate_new_tokens(W) carry the
    sequence past it."""
    return max(1, window - 3)


def generate_new_tokens(window: int) -> int:
    return window + 4


# ---- drafting: prompts the model agrees with ----

CONTINUATION_START = 4  # random tokens the model's greedy continuation starts from (decoding.greedy_continuation)


def drafting_prompt(window: int) -> int:
    """The prompt of a drafting check: the model's greedy continuation, longer than 2W (2W + 3), so every step's
    rollback comes after the window filled."""
    return 2 * window + 3


def lookup_drafts(window: int) -> int:
    """prompt_lookup_num_tokens of the fixed drafting checks: W - 2 (at least 2), so a step can keep several drafts
    at once, nearly a window of them."""
    return max(2, window - 2)


# ---- rollback: crop(), then decoding on ----

CROP_WHEN = ("before-the-window-fills", "after-the-window-fills")
REJECTED_DRAFTS = 3  # what crop() removes where the cache holds more than that


@dataclass(frozen=True)
class Crop:
    held: int  # tokens in the cache when crop() is called, the last `cropped` of them rejected drafts
    cropped: int  # tokens crop() removes
    continuation: tuple[int, ...]  # chunk sizes fed after the crop: two tokens in one call, then W single tokens

    @property
    def kept(self) -> int:
        return self.held - self.cropped


def crop(when: str, window: int) -> Crop:
    """Before the window fills the cache holds W - 2 tokens (at least 2, so that a crop of at least one token keeps
    one: at W = 2 that is the window exactly full, nothing evicted yet); after, 2W + 1. crop() removes the last 3,
    or all but one where the cache holds no more than 3."""
    if when == "before-the-window-fills":
        held = max(2, window - 2)
    elif when == "after-the-window-fills":
        held = 2 * window + 1
    else:
        raise ValueError(f"no crop scenario {when!r} (there are {', '.join(CROP_WHEN)})")
    return Crop(held, min(REJECTED_DRAFTS, held - 1), (2, *[1] * window))


# ---- the cache contract: a user's cache past the window, then one of its members called ----

CONTRACT_DECODED = 2  # tokens decoded after the prompt, before a member is called
CONTRACT_CROPS = ("one-token", "past-the-window-edge")


CONTRACT_REWINDS = ("within-the-window", "past-the-rolled-window")


def contract_rewind(which: str, window: int) -> int:
    """How many of the last positions a rewind rewrites (forward() given a cache_position earlier than the cache's
    length). Within the window: the last one, whose W - 1 predecessors a W-slot sliding layer still holds. Past the
    rolled window: the last W, the first of which needs W - 1 positions before them that such a layer has evicted
    (the contract prompt leaves at least one)."""
    if which == "within-the-window":
        return 1
    if which == "past-the-rolled-window":
        return window
    raise ValueError(f"no rewind {which!r} (there are {', '.join(CONTRACT_REWINDS)})")


def contract_prompt(window: int) -> int:
    """The prompt filled into a user's cache before a member is called: longer than the window (W + 3), so the
    sliding layers have evicted."""
    return window + 3


def contract_crop(which: str, window: int) -> int:
    """Tokens crop() removes from a cache holding contract_prompt(W) + CONTRACT_DECODED: one (a sliding layer of W
    slots still holds every position the next token attends to), or W + 1 (past the window's edge: none of them)."""
    return 1 if which == "one-token" else window + 1


# ---- the sliding-window suite ----


@dataclass(frozen=True)
class AfterReset:
    first: tuple[int, ...]  # chunk sizes of the sequence before reset(): a prompt longer than W, then 3 tokens
    second: tuple[int, ...]  # and after it: a prompt shorter than W, then W + 2 tokens
    capacity: int  # room for either sequence


def after_reset(window: int) -> AfterReset:
    first = (window + 1, 1, 1, 1)
    second = (window - 1, *[1] * (window + 2))
    return AfterReset(first, second, max(sum(first), sum(second)))


# ---- overflow ----


def overflow_capacity(window: int) -> int:
    """L = 2W + 4: more than the window, so only the full-attention layers can overflow."""
    return 2 * window + 4


def chunks_within_overflow_capacity(window: int) -> list[int]:
    """Chunks that fill a cache of overflow_capacity(W) exactly, the first already past the window: W + 2, 1, 3 and
    the rest (W - 2, left out where nothing is left)."""
    sizes = [window + 2, 1, 3]
    rest = overflow_capacity(window) - sum(sizes)
    return [*sizes, rest] if rest > 0 else sizes


# ---- images (an image takes `image_length` positions: begin-of-image, its soft tokens, end-of-image) ----

IMAGE_SCENARIOS = ("image-inside-window", "image-straddling-window-boundary", "prompt-longer-than-window", "two-images")


def images_at(scenario: str, window: int, image_length: int) -> tuple[list[int], int]:
    """Where a scenario's images go (positions of their begin-of-image tokens) and how long its prompt is.

    - image-inside-window: an image after one text token in a prompt of W - 1 tokens, so the whole prompt is inside
      the window; where the image does not fit W - 1 tokens, the shortest prompt that holds it.
    - image-straddling-window-boundary: an image across positions W - 1 and W, half of it before W (from position 0
      where that half is longer than W), in a prompt of W + image_length tokens.
    - prompt-longer-than-window: an image at position 2 in a prompt of 2W + 3 tokens, or more where it does not fit.
    - two-images: one at position 1, one at W + 1 (after at least one text token between them), then three text
      tokens.
    """
    if scenario == "image-inside-window":
        return [1], max(window - 1, 1 + image_length)
    if scenario == "image-straddling-window-boundary":
        return [max(0, window - image_length // 2)], window + image_length
    if scenario == "prompt-longer-than-window":
        return [2], max(2 * window + 3, 2 + image_length)
    if scenario == "two-images":
        second = max(window + 1, image_length + 2)
        return [1, second], second + image_length + 3
    raise ValueError(f"no image scenario {scenario!r} (there are {', '.join(IMAGE_SCENARIOS)})")


IMAGE_IN_THE_LONGER_ROW = 2  # position of the begin-of-image token in the longer row of image_in_a_padded_batch


def image_in_a_padded_batch(window: int, image_length: int) -> list[int]:
    """left_padded_batch(W) with an image at position 2 of the longer row: that row made long enough to hold it."""
    longer, shorter = left_padded_batch(window)
    return [max(longer, IMAGE_IN_THE_LONGER_ROW + image_length), shorter]


@dataclass(frozen=True)
class SecondTurn:
    first_turn: int  # tokens of the first turn: an image at position 1, then text
    second_turn: int  # tokens of the second turn: two text tokens, an image, then text
    steps: int  # decode steps after it

    @property
    def images(self) -> list[int]:
        return [1, self.first_turn + 2]


def second_turn(window: int, image_length: int) -> SecondTurn:
    """A first turn inside the window (W - 1 tokens) and a second that carries the conversation past it (W + 2),
    each long enough for its image."""
    return SecondTurn(max(window - 1, 1 + image_length), max(window + 2, image_length + 2), 3)


def image_both_ways_prompt(window: int, image_length: int) -> tuple[int, int]:
    """An image at position 2 of a prompt of W tokens, or of as many as it needs: (begin-of-image, prompt length)."""
    return 2, max(window, 2 + image_length)


def capacity_after_an_image(capacity: int, prompt_length: int, window: int) -> int:
    """The memory suite's capacity (memory.capacity_for(W)), or more where a prompt with an image of
    `prompt_length` tokens would leave fewer than W + 1 decode steps: decoding goes round the window."""
    return max(capacity, prompt_length + window + 1)
