"""Probes of the memory suite: where a cache's tensors live, and how many bytes a scenario holds after each step.

Two probes, each exact:
- storage: the address and byte size of the storage behind every layer's key and value tensors;
- held bytes: bytes allocated by a scenario and still alive at each reading the scenario takes. On CUDA from the
  caching allocator's counters; on CPU from the allocation and free events of torch's CPU allocator as recorded by
  torch.profiler with profile_memory=True (tracemalloc does not see tensors, and resident memory is noisy: see the
  README, "Memory"). Only blocks allocated during the scenario count, so a free of an older block cannot be
  mistaken for one of the scenario's.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from cache_conformance import adapter

# A growth of fewer bytes per step than this is not reported. Well below the smallest growth that matters (one
# position's keys and values of one layer: 2 x kv_heads x head_dim x 2 bytes = 256 bytes on the embedded
# checkpoint in 16-bit) and far above the noise measured by benchmarks/memory_noise.py (0 bytes on CPU over 20 runs).
DETECTION_THRESHOLD_BYTES_PER_STEP = 64

Reading = Callable[[], None]

# ---- the decoding scenario (the suite and benchmarks/memory_noise.py share it) ----

BATCH = 4  # one position's keys are then a whole number of the CUDA allocator's 512-byte blocks in every dtype


def capacity_for(window: int) -> int:
    return 3 * window


def prompt_length_for(window: int) -> int:
    return window // 2


def first_steady_reading(window: int) -> int:
    """The first reading (0 = after prefill) after which every step adds a position to a sequence longer than W:
    from there a trimmed sliding layer no longer grows, so growth per step is steady."""
    return window - prompt_length_for(window) + 1


def decode(model, cache, sequence: torch.Tensor, after_each_step: Callable[[int], None]) -> None:
    """Prefill the first W/2 tokens of `sequence`, then feed the rest one token at a time (logits dropped);
    after_each_step(step) runs after prefill (step 0) and after each decode step."""
    prompt_length = prompt_length_for(adapter.window(model.config))
    adapter.forward(model, sequence[:, :prompt_length], cache=cache)
    after_each_step(0)
    for step, position in enumerate(range(prompt_length, sequence.shape[1]), start=1):
        adapter.forward(model, sequence[:, position : position + 1], cache=cache, start=position)
        after_each_step(step)


# ---- storage ----


@dataclass(frozen=True)
class Storage:
    """Where one cached tensor's data lives and how big it is."""

    address: int
    nbytes: int
    positions: int  # the length of the tensor's sequence dimension


def storage_map(cache) -> dict[tuple[int, str], Storage]:
    """The storage behind every layer's keys and values, by (layer, "keys" or "values")."""
    storages = {}
    for layer in range(adapter.layer_count(cache)):
        for kind, tensor in zip(("keys", "values"), adapter.layer_storage(cache, layer)):
            storage = tensor.untyped_storage()
            storages[layer, kind] = Storage(storage.data_ptr(), storage.nbytes(), tensor.shape[2])
    return storages


def storage_changes(before: dict, after: dict) -> dict[tuple[int, str], str]:
    """For each tensor whose storage moved or changed size, a sentence saying how."""
    changes = {}
    for (layer, kind), old in before.items():
        new = after[layer, kind]
        if new.address != old.address:
            changes[layer, kind] = (f"layer {layer} {kind} moved to new storage ({old.address:#x} -> "
                                    f"{new.address:#x}, {old.nbytes} -> {new.nbytes} bytes)")
        elif new.nbytes != old.nbytes:
            changes[layer, kind] = f"layer {layer} {kind} storage changed size ({old.nbytes} -> {new.nbytes} bytes)"
    return changes


def moves(maps: list[dict]) -> list[tuple[int, dict]]:
    """(step, storage_changes) for each step whose storage differs from the step before: consecutive steps, since
    an allocator that hands a freed address back would hide a move from a comparison with step 0."""
    return [(step, changes) for step in range(1, len(maps)) if (changes := storage_changes(maps[step - 1], maps[step]))]


def steps_without_new_larger_storage(maps: list[dict], layers: list[int]) -> list[int]:
    """The steps at which some of `layers`' keys or values did not move to new, larger storage than at the step
    before (what a growing cache does at every step)."""
    return [
        step for step in range(1, len(maps))
        if not all(maps[step][layer, kind].address != maps[step - 1][layer, kind].address
                   and maps[step][layer, kind].nbytes > maps[step - 1][layer, kind].nbytes
                   for layer in layers for kind in ("keys", "values"))
    ]


def position_bytes(config, *, batch_size: int, dtype: torch.dtype) -> int:
    """Bytes of one position's keys and values in one layer."""
    return 2 * batch_size * config.num_key_value_heads * config.head_dim * dtype.itemsize


def static_cache_bytes_from_config(config, *, batch_size: int, capacity: int, dtype: torch.dtype) -> int:
    """2 x batch x kv_heads x head_dim x itemsize x positions, summed over layers: sliding layers hold min(W, L)
    positions, full layers L."""
    positions = sum(min(adapter.window(config), capacity) if sliding else capacity
                    for sliding in adapter.sliding_layers(config))
    return position_bytes(config, batch_size=batch_size, dtype=dtype) * positions


def cache_storage_bytes(cache) -> int:
    """Bytes of the distinct storages behind the cache's tensors (a view counts its whole storage)."""
    return sum({s.address: s.nbytes for s in storage_map(cache).values()}.values())


# ---- bytes held ----


@dataclass(frozen=True)
class HeldBytes:
    series: list[int]  # bytes the scenario holds at each of its readings
    peak: int  # the most it held at any moment
    method: str


PROBED_DEVICES = ("cpu", "cuda")


def held_bytes(device: str, scenario: Callable[[Reading], None]) -> HeldBytes:
    """Run `scenario(reading)`; it calls reading() after each step it wants measured. Bytes are counted from the
    start of the scenario, so whatever it creates (its cache included) and keeps is in the series."""
    if device == "cuda":
        return _held_bytes_cuda(scenario)
    if device == "cpu":
        return _held_bytes_cpu(scenario)
    raise ValueError(f"no held-bytes probe for device {device!r} (there are probes for cpu and cuda)")


def _held_bytes_cuda(scenario: Callable[[Reading], None]) -> HeldBytes:
    gc.collect()
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    series = []

    def reading():
        torch.cuda.synchronize()
        series.append(torch.cuda.memory_allocated() - start)

    scenario(reading)
    torch.cuda.synchronize()
    return HeldBytes(series, torch.cuda.max_memory_allocated() - start, "torch.cuda.memory_allocated")


_READING_MARK = "cache_conformance.memory reading"


def _held_bytes_cpu(scenario: Callable[[Reading], None]) -> HeldBytes:
    def reading():
        with record_function(_READING_MARK):
            pass

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        scenario(reading)
    events = []  # (time, order, size or None for a reading, address)
    pending = list(profiler.profiler.kineto_results.experimental_event_tree())
    # Tens of thousands of events per scenario: the loop reads as few of their fields as it can.
    allocation = torch._C._profiler._EventType.Allocation
    while pending:
        event = pending.pop()
        if event.tag == allocation:
            fields = event.extra_fields
            if fields.device.type == "cpu":
                events.append((event.start_time_ns, fields.id, fields.alloc_size, fields.ptr))
        else:
            pending += event.children
            if event.name == _READING_MARK:
                events.append((event.start_time_ns, 0, None, 0))
    series, alive, held, peak = [], {}, 0, 0
    for _, _, size, address in sorted(events, key=lambda e: e[:2]):
        if size is None:
            series.append(held)
        elif size > 0:
            alive[address] = size
            held += size
            peak = max(peak, held)
        elif address in alive:  # a block allocated before the scenario is not the scenario's
            held -= alive.pop(address)
    return HeldBytes(series, peak, "torch.profiler CPU allocator events (profile_memory=True)")


def growth_per_step(series: list[int], first: int) -> float:
    """Average growth in bytes per step from reading `first` to the last reading."""
    return (series[-1] - series[first]) / (len(series) - 1 - first)


def largest_increase(series: list[int], first: int) -> tuple[int, int]:
    """(bytes, reading) of the first largest increase from one reading to the next after reading `first`."""
    reading = max(range(first + 1, len(series)), key=lambda i: series[i] - series[i - 1])
    return series[reading] - series[reading - 1], reading
