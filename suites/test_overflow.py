"""Property 2: asking a static cache for more positions than its capacity raises a clear error and corrupts nothing.

Capacity L = 2W + 4, so it exceeds the sliding window W and only the full-attention layers can overflow. Each
scenario is graded by four separately reported checks:
- raises: an exception, not silent wrap-around, truncation or garbage logits;
- clear: a ValueError (or transformers' own exception) whose message is about the cache and names the
  capacity and the requested length, not a low-level error from inside the cache or attention;
- intact: after the failed call, every layer's keys and values and the reported length are unchanged;
- recoverable: after reset(), the same cache serves a fresh prompt exactly like recomputation.
Each scenario's overflowing call runs once per target; the four checks grade that one call. On CUDA (or anywhere
with --isolate-overflows) it runs in a child process, because a device-side assert poisons the process it happens
in: a child that dies or whose device fails after the call grades raises yes, clear from its error (no when it
died), intact unknown (a skip that says so) and recoverable no; the rest of the run goes on.
No release has a generate() path whose own static cache is sized below what it generates: generate() sizes that
cache for the request, so that path is checked for never overflowing (test_overflow_never_from_generates_own_cache).
"""

from dataclasses import dataclass

import pytest

from cache_conformance import adapter
from cache_conformance.grading import evidence, overflow
from cache_conformance.inputs import scenarios
from cache_conformance.oracles.decoding import generation_against_recomputation, prefill_and_decode
from cache_conformance.probes import isolation

# Each scenario fills the cache as far as it needs, then returns the overflowing call and the lengths it asks for.


def decode_one_token_past_capacity(model, cache, sequence, capacity, window):
    adapter.forward(model, sequence[:, :capacity], cache=cache)

    def call():
        adapter.forward(model, sequence[:, capacity : capacity + 1], cache=cache, start=capacity)

    return call, {capacity + 1}


def prefill_longer_than_capacity(model, cache, sequence, capacity, window):
    def call():
        adapter.forward(model, sequence[:, : capacity + 1], cache=cache)

    return call, {capacity + 1}


def chunk_crossing_capacity(model, cache, sequence, capacity, window):
    adapter.forward(model, sequence[:, : capacity - 2], cache=cache)

    def call():
        adapter.forward(model, sequence[:, capacity - 2 : capacity + 2], cache=cache, start=capacity - 2)

    return call, {capacity + 2}


def generate_into_too_small_a_cache(model, cache, sequence, capacity, window):
    prompt, new_tokens = sequence[:, :window], capacity - window + 3

    def call():
        adapter.generate_with_static_cache(model, prompt, cache=cache, max_new_tokens=new_tokens)

    # The cache needs one position fewer than the final length (the last token is never fed back).
    return call, {window + new_tokens - 1, window + new_tokens}


SCENARIOS = {
    "decode-one-token-past-capacity": decode_one_token_past_capacity,
    "prefill-longer-than-capacity": prefill_longer_than_capacity,
    "chunk-crossing-capacity": chunk_crossing_capacity,
    "generate-into-too-small-a-cache": generate_into_too_small_a_cache,
}


@dataclass
class OverflowRun:
    cache: object  # None when the overflow ran in a child process
    capacity: int
    requested: set[int]
    result: overflow.Attempt
    recovery_failure: str | None = None  # from the child process, which checked recovery itself


@pytest.fixture(scope="session")
def overflow_runs(target) -> dict[str, OverflowRun]:
    """Each scenario's overflow, run once per target: the four checks grade the same failed call. Only the recovery
    check uses the cache afterwards; the others read the copies of its state taken around the call."""
    return {}


@pytest.fixture(params=SCENARIOS)
def overflowed(request, overflow_runs, model, window, named_tokens, metrics, target, checkpoint_path) -> OverflowRun:
    scenario = request.param
    if scenario not in overflow_runs:
        capacity = scenarios.overflow_capacity(window)
        sequence = named_tokens(f"overflow {scenario}")(1, capacity + 4)
        if isolation.needed(target.device) or request.config.getoption("isolate_overflows"):
            overflow_runs[scenario] = overflow_in_a_child(SCENARIOS[scenario], checkpoint_path, target, sequence,
                                                          capacity, recovery_prompt=named_tokens(scenario)(1, window + 1))
        else:
            cache = adapter.make_static_cache(model, batch_size=1, capacity=capacity)
            call, requested = SCENARIOS[scenario](model, cache, sequence, capacity, window)
            overflow_runs[scenario] = OverflowRun(cache, capacity, requested,
                                                  overflow.attempt(call, lambda: overflow.cache_state(cache)))
    run = overflow_runs[scenario]
    metrics.update(
        capacity=run.capacity,
        requested=sorted(run.requested),
        exception_type=type(run.result.error).__qualname__ if run.result.error else None,
        exception_message=str(run.result.error)[:500] if run.result.error else None,
    )
    return run


def overflow_in_a_child(scenario, checkpoint_path, target, sequence, capacity, *, recovery_prompt) -> OverflowRun:
    isolated = isolation.run_isolated(overflow.attempt_in_child, checkpoint_path, target, scenario, sequence.cpu(),
                                      capacity, recovery_prompt.cpu())
    if isolated.died:
        outcome = overflow.lost_in_child(isolated.death())
    elif isolated.raised:  # the harness failed in the child (loading, filling the cache): not a grade
        raise RuntimeError(f"the overflow scenario's child process raised {isolated.describe()}")
    else:
        outcome = isolated.value
    return OverflowRun(None, capacity, outcome.requested, outcome.result, outcome.recovery_failure)


def test_overflow_raises(overflowed):
    failure = overflow.raise_failure(overflowed.result)
    with evidence.located_as("overflow", capacity=overflowed.capacity, requested=sorted(overflowed.requested)):
        assert failure is None, failure


def test_overflow_error_is_clear(overflowed):
    failure = overflow.clarity_failure(overflowed.result, capacity=overflowed.capacity, requested=overflowed.requested)
    assert failure is None, failure


def test_overflow_leaves_the_cache_intact(overflowed):
    unknown = overflow.intact_unknown(overflowed.result)
    if unknown:
        pytest.skip(f"intact: {unknown}")
    failure = overflow.intact_failure(overflowed.result)
    assert failure is None, failure


def test_overflow_cache_is_recoverable_after_reset(overflowed, model, window, tokens, compare):
    if overflowed.cache is None:  # the child process checked it, or died with the cache
        assert overflowed.recovery_failure is None, overflowed.recovery_failure
        return
    adapter.reset(overflowed.cache)
    prompt = tokens(1, window + 1)
    prefill_and_decode(model, overflowed.cache, prompt, overflowed.capacity - prompt.shape[1], compare, label="after reset()")


def test_overflow_never_from_sliding_layers(model, window, tokens):
    """Within capacity the sliding layers run past their window many times: eviction is their job, not an error.
    (Whether they keep the right tokens is the equivalence and sliding-window suites' business.)"""
    capacity = scenarios.overflow_capacity(window)
    sizes = scenarios.chunks_within_overflow_capacity(window)
    cache = adapter.make_static_cache(model, batch_size=1, capacity=capacity)
    sequence, start = tokens(1, capacity), 0
    for size in sizes:
        try:
            adapter.forward(model, sequence[:, start : start + size], cache=cache, start=start)
        except Exception as error:  # noqa: BLE001 - any exception here is the finding
            pytest.fail(
                f"chunk of {size} at positions {start}..{start + size - 1} (chunks {sizes}) into a cache of capacity "
                f"{capacity}, window {window}, raised {overflow.describe(error)}"
            )
        start += size


def test_overflow_never_from_generates_own_cache(model, window, tokens, compare):
    """generate() sizes its own static cache for each request, also when a longer request follows a shorter one."""
    prompt = tokens(1, window)
    adapter.generate_with_own_static_cache(model, prompt, max_new_tokens=2)
    longer = scenarios.overflow_capacity(window) * 2
    sequences, step_logits = adapter.generate_with_own_static_cache(model, prompt, max_new_tokens=longer)
    generation_against_recomputation(
        model, prompt.shape[1], sequences, step_logits, compare, where=f"second generate() of {longer} tokens",
        length_forced=True)
