"""Property 4: decoding with a static cache allocates nothing new.

A static cache makes its tensors once, at fixed addresses (what CUDA graphs and torch.compile need), and updates
them in place. The scenario: a batch of B sequences, a prompt of W/2 tokens, then one token at a time until the
cache of capacity L = 3W is full, well past the sliding window W. Each check runs its positive control in the same
test: the dynamic cache on the same scenario, measured by the same probe, must show the growth the probe exists to
see; if it does not, the static cache's result is reported as invalid, not as a pass.

Probes (cache_conformance/probes/memory.py): storage addresses and sizes of every cached tensor; bytes held after each
step, from the CUDA allocator's counters or, on CPU, from torch's CPU allocator's running total (docs/suites/memory.md).
"""

import functools

import pytest

from cache_conformance import adapter
from cache_conformance.grading import evidence
from cache_conformance.probes import memory

GENERATIONS = 10
# On CUDA, generate() compiles the forward of its own static cache and torch's CUDA graphs warm up, record, then
# replay from the third call: what that sets up (e.g. the 32 MiB cuBLAS workspace it frees and takes back on H100)
# is held from the third call on. Growth is judged from there.
WARM_UP_CALLS = 3
THRESHOLD = memory.DETECTION_THRESHOLD_BYTES_PER_STEP


def where(step: int, window: int) -> str:
    return f"decode step {step} (position {memory.prompt_length_for(window) + step - 1})"


@pytest.fixture(autouse=True)
def modest_on_cpu(target):
    # The cache's memory depends on the dtype's size, not on the attention implementation: on CPU the suite runs
    # eager attention in a 32- and a 16-bit dtype.
    if target.device == "cpu" and (target.attn_implementation != "eager" or target.dtype_name == "float16"):
        pytest.skip("on CPU the memory suite runs eager attention in float32 and bfloat16 only (the cache's memory "
                    "depends on the dtype's size, not on the attention implementation)")


@pytest.fixture
def held_bytes(target):
    """memory.held_bytes(scenario) on the target's device."""
    if target.device not in memory.PROBED_DEVICES:
        pytest.skip(f"no held-bytes probe for {target.device} (there are probes for {', '.join(memory.PROBED_DEVICES)})")
    return functools.partial(memory.held_bytes, target.device)


def test_memory_static_cache_storage_stays_put(model, window, tokens, metrics):
    """After prefill every cached tensor keeps its storage address and byte size through every decode step up to
    capacity; sliding layers hold min(W, L) positions, full layers L, in all the bytes the config calls for."""
    capacity = memory.capacity_for(window)
    sequence = tokens(memory.BATCH, capacity)
    static = memory.storage_after_each_step(model, adapter.make_static_cache(model, batch_size=memory.BATCH, capacity=capacity),
                                     sequence)
    dynamic = memory.storage_after_each_step(model, adapter.make_dynamic_cache(model), sequence)
    measured = sum(s.nbytes for s in static[0].values())
    from_config = memory.static_cache_bytes_from_config(model.config, batch_size=memory.BATCH, capacity=capacity,
                                                        dtype=model.dtype)
    metrics.update(
        series={"static_cache": [sum(s.nbytes for s in m.values()) for m in static],
                "dynamic_cache": [sum(s.nbytes for s in m.values()) for m in dynamic]},
        series_unit="bytes",
        cache_bytes_measured=measured,
        cache_bytes_from_config=from_config,
        decode_steps=len(static) - 1,
    )

    # Positive control: the dynamic cache's full layers get new, larger storage at every step.
    unseen = memory.growth_unseen(model.config, dynamic)
    assert unseen is None, unseen

    wrong_sizes = []
    for (layer, kind), storage in static[0].items():
        expected = min(window, capacity) if adapter.sliding_layers(model.config)[layer] else capacity
        if storage.positions != expected:
            wrong_sizes.append(f"layer {layer} {kind} holds {storage.positions} positions, expected {expected}")
    assert not wrong_sizes, f"after prefill (capacity {capacity}, window {window}): {'; '.join(wrong_sizes)}"
    assert measured == from_config, (
        f"the static cache holds {measured} bytes, the config calls for {from_config} bytes (2 x layers x batch "
        f"{memory.BATCH} x kv_heads x head_dim x itemsize x positions)"
    )

    moved = memory.moves(static)
    if moved:
        step, changes = moved[0]
        shown = "; ".join(list(changes.values())[:2]) + (f"; and {len(changes) - 2} more" if len(changes) > 2 else "")
        with evidence.located_as("storage", where=where(step, window), step=step, moved=[list(key) for key in changes]):
            pytest.fail(f"{where(step, window)}: {shown} ({len(changes)} tensors; storage changed at {len(moved)} of "
                        f"{len(static) - 1} decode steps)")


def record_held_bytes(metrics, static, control, control_name: str, *, first: int, control_first: int,
                      expected_control: int):
    """Put the static cache's and the control's held-bytes series, and their growth per step from readings `first`
    and `control_first` on, into the results file; returns (static growth, control growth) in bytes per step."""
    static_rate = memory.growth_per_step(static.series, first)
    control_rate = memory.growth_per_step(control.series, control_first)
    metrics.update(
        series={"static_cache": static.series, control_name: control.series},
        series_unit="bytes",
        bytes_per_step=static_rate,
        control_bytes_per_step=control_rate,
        expected_control_bytes_per_step=expected_control,
        detection_threshold_bytes_per_step=THRESHOLD,
        peak_bytes=static.peak,
        control_peak_bytes=control.peak,
        probe=static.method,
    )
    return static_rate, control_rate


def test_memory_held_bytes_stay_flat_while_decoding(model, window, tokens, metrics, held_bytes):
    """Bytes held after each decode step do not grow with a static cache; the dynamic cache, measured the same
    way, grows by one position's keys and values per step in each full layer (and, where the release does not
    trim them, in each sliding layer)."""
    capacity = memory.capacity_for(window)
    sequence = tokens(memory.BATCH, capacity)

    def scenario(make_cache):
        return lambda reading: memory.decode(model, make_cache(), sequence, lambda step: reading())

    static = held_bytes(scenario(lambda: adapter.make_static_cache(model, batch_size=memory.BATCH, capacity=capacity)))
    dynamic = held_bytes(scenario(lambda: adapter.make_dynamic_cache(model)))
    # The control grows steadily once its trimmed sliding layers are full; the static cache may not grow at all,
    # so it is judged from the first decode step (reading 0 is after prefill).
    steady = memory.first_steady_reading(window)
    sliding = adapter.sliding_layers(model.config)
    growing_layers = len(sliding) if not adapter.dynamic_cache_trims_sliding_layers() else sliding.count(False)
    expected = growing_layers * memory.position_bytes(model.config, batch_size=memory.BATCH, dtype=model.dtype)
    static_rate, dynamic_rate = record_held_bytes(metrics, static, dynamic, "dynamic_cache", first=0,
                                                  control_first=steady, expected_control=expected)
    last = len(static.series) - 1

    assert abs(dynamic_rate - expected) < THRESHOLD, (
        f"INVALID (not a pass): over decode steps {steady + 1}..{last} the probe saw the dynamic cache grow by "
        f"{dynamic_rate:.0f} bytes per step, expected {expected} ({growing_layers} growing layers x one position's "
        f"keys and values); the static cache's {static_rate:.0f} bytes per step cannot be trusted"
    )
    increase, step = memory.largest_increase(static.series, 0)
    with evidence.located_as("growth", where="static cache", step=step, difference=static_rate, limit=THRESHOLD):
        assert static_rate < THRESHOLD, (
            f"static cache: bytes held grew by {static_rate:.0f} bytes per step over decode steps 1..{last} (detection "
            f"threshold {THRESHOLD} bytes per step); largest increase {increase} bytes at {where(step, window)}; held "
            f"{static.series[0]} bytes after prefill, {static.series[-1]} bytes after the last step"
        )


def test_memory_repeated_generations_leave_memory_where_it_was(model, window, tokens, metrics, held_bytes):
    """Ten generate() calls with the static cache generate() builds leave the bytes held where they were after the
    warm-up calls: no cache kept alive per call, no growth. Control: a new static cache per call, kept alive on
    purpose, shows up as one cache's bytes per call."""
    prompt = tokens(memory.BATCH, memory.prompt_length_for(window))
    new_tokens = 2  # the cache's size is what matters here, not how far it is filled
    capacity = prompt.shape[1] + new_tokens

    def generate_with_own_static_cache(reading):
        for _ in range(GENERATIONS):
            adapter.generate_with_own_static_cache(model, prompt, max_new_tokens=new_tokens)
            reading()

    def static_caches_kept_alive(reading):
        kept = []
        for _ in range(GENERATIONS):
            kept.append(adapter.make_static_cache(model, batch_size=memory.BATCH, capacity=capacity))
            adapter.generate_with_static_cache(model, prompt, cache=kept[-1], max_new_tokens=new_tokens)
            reading()

    own = held_bytes(generate_with_own_static_cache)
    control = held_bytes(static_caches_kept_alive)
    expected = memory.static_cache_bytes_from_config(model.config, batch_size=memory.BATCH, capacity=capacity,
                                                     dtype=model.dtype)
    first = WARM_UP_CALLS - 1  # the reading after the last warm-up call
    # A step is one generate() call here.
    own_rate, control_rate = record_held_bytes(metrics, own, control, "static_caches_kept_alive", first=first,
                                               control_first=first, expected_control=expected)
    calls = f"calls {WARM_UP_CALLS}..{GENERATIONS} of {GENERATIONS}"

    # A cache may keep a few bytes of bookkeeping besides its keys and values: the control must see at least those.
    assert control_rate > expected - THRESHOLD, (
        f"INVALID (not a pass): over generate() {calls} the probe saw static caches kept alive add "
        f"{control_rate:.0f} bytes per call, expected at least {expected} (one cache's keys and values); the "
        f"{own_rate:.0f} bytes per call of generate()'s own static cache cannot be trusted"
    )
    increase, call = memory.largest_increase(own.series, first)
    with evidence.located_as("growth", where="generate() with its own static cache", call=call + 1,
                             difference=own_rate, limit=THRESHOLD):
        assert own_rate < THRESHOLD, (
            f"generate() with its own static cache: bytes held grew by {own_rate:.0f} bytes per call over {calls} "
            f"(detection threshold {THRESHOLD} bytes per call); largest increase {increase} bytes at call {call + 1}; "
            f"{own.series[first]} bytes held after call {WARM_UP_CALLS}, {own.series[-1]} after the last"
        )
