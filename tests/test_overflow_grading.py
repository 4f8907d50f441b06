"""Positive controls for the overflow grades: stand-in 'caches' (one tensor and a length) show that each grade
rejects the misbehaviour it exists for and accepts a conforming error. No transformers code is involved."""

import pytest
import torch

from cache_conformance.grading import overflow

CAPACITY = 16


class StandInCache:
    def __init__(self):
        self.buffer = torch.arange(CAPACITY, dtype=torch.float32)
        self.length = CAPACITY

    def state(self) -> overflow.CacheState:
        return overflow.CacheState({"buffer": self.buffer.clone()}, self.length)

    def wrap_around(self):  # writes position 16 into slot 0 and carries on
        self.buffer[CAPACITY % CAPACITY] = -1.0
        self.length += 1

    def drop(self):  # silently ignores what does not fit
        return None

    def clear_error(self):
        raise ValueError(f"static cache overflow: the cache holds {CAPACITY} positions, {CAPACITY + 1} were requested")

    def low_level_error(self):
        raise IndexError(f"index {CAPACITY} is out of bounds for dimension 2 with size {CAPACITY}")

    def error_after_writing(self):
        self.length += 1
        self.clear_error()


def graded(behaviour: str):
    cache = StandInCache()
    result = overflow.attempt(getattr(cache, behaviour), cache.state)
    return {
        "raises": overflow.raise_failure(result),
        "clear": overflow.clarity_failure(result, capacity=CAPACITY, requested={CAPACITY + 1}),
        "intact": overflow.intact_failure(result),
    }


def test_a_clear_error_that_touches_nothing_passes_every_grade():
    assert graded("clear_error") == {"raises": None, "clear": None, "intact": None}


@pytest.mark.parametrize("behaviour", ["wrap_around", "drop"])
def test_silent_wrap_around_and_truncation_fail_raises_and_clear(behaviour):
    grades = graded(behaviour)
    assert grades["raises"].startswith("the call returned normally")
    assert grades["clear"].startswith("there is no error to judge")


def test_wrap_around_fails_intact_with_what_changed():
    assert graded("wrap_around")["intact"] == (
        "the cache was modified by the call: the reported length changed from 16 to 17; "
        "buffer changed (1 of 16 elements) (after no exception)"
    )


def test_a_low_level_error_is_not_clear():
    grades = graded("low_level_error")
    assert grades["raises"] is None and grades["intact"] is None
    assert grades["clear"].startswith(
        "IndexError is neither a ValueError nor a transformers exception; the message does not mention the cache; "
        "the message does not name the requested length (17)"
    )


def test_an_error_raised_after_writing_is_not_intact():
    grades = graded("error_after_writing")
    assert grades["raises"] is None and grades["clear"] is None
    assert "the reported length changed from 16 to 17" in grades["intact"]
