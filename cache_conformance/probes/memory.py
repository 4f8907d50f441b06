"""Probes of the memory suite: where a cache's tensors live, and how many bytes a scenario holds after each step.

Two probes, each exact:
- storage: the address and byte size of the storage behind every layer's key and value tensors;
- held bytes: bytes allocated by a scenario and still alive at each reading the scenario takes. On CUDA from the
  caching allocator's counters. On CPU (tracemalloc does not see tensors, and resident memory is blind at this
  scale: see docs/suites/memory.md) from torch's CPU allocator itself, which keeps an exact running total of the
  bytes it allocated and has not freed, block by block, while c10's flag FLAGS_caffe2_report_cpu_memory_usage is
  set; the probe sets the flag for the scenario and reads the total at each reading. Only blocks allocated while
  the flag is set count, so a free of an older block cannot be mistaken for one of the scenario's. Where that flag
  cannot be reached, the allocation and free events recorded by torch.profiler (profile_memory=True) give the same
  figures, several times slower.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from cache_conformance import adapter
from cache_conformance.grading import evidence
from cache_conformance.oracles.decoding import call

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


def decode(model, cache, sequence: torch.Tensor, after_each_step: Callable[[int], None], *,
           prompt_length: int | None = None, images=None) -> None:
    """Prefill the first `prompt_length` tokens of `sequence` (default W/2), with their `images` if any, then feed
    the rest one token at a time (logits dropped); after_each_step(step) runs after prefill (step 0) and after each
    decode step."""
    prompt_length = prompt_length or prompt_length_for(adapter.window(model.config))
    call(model, sequence[:, :prompt_length], images=images, cache=cache)
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


def storage_after_each_step(model, cache, sequence: torch.Tensor, *, prompt_length: int | None = None,
                            images=None) -> list[dict[tuple[int, str], Storage]]:
    """The cache's storage map after prefill and after each decode step of `decode`."""
    maps = []
    decode(model, cache, sequence, lambda step: maps.append(storage_map(cache)), prompt_length=prompt_length,
           images=images)
    return maps


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


def assert_storage_stays_put(maps: list[dict], *, after: str = "", counted: str = "decode steps") -> None:
    """Fail unless every cached tensor keeps its storage (address and byte size) from each of `maps` (from
    storage_after_each_step: after prefill, then after each decode step) to the next. The message names the first
    step whose storage changed, "decode step N" followed by `after` (e.g. what the prefill held), up to two of its
    changes, and at how many of the steps, named `counted`, storage changed."""
    moved = moves(maps)
    step, changes = moved[0] if moved else (None, {})
    with evidence.located_as("storage", where=f"decode step {step}{after}", step=step,
                             moved=[list(key) for key in changes]):
        assert not moved, (
            f"decode step {moved[0][0]}{after}: {'; '.join(list(moved[0][1].values())[:2])} (storage changed at "
            f"{len(moved)} of {len(maps) - 1} {counted})"
        )


def growth_unseen(config, dynamic: list[dict]) -> str | None:
    """The positive control of every storage check: the storage maps `dynamic` (a dynamic cache decoding, from
    storage_after_each_step) must show the full-attention layers moving to new, larger storage at every decode step,
    where they grow. None when they do, else why the probe cannot vouch for a static cache."""
    full_layers = [layer for layer, sliding in enumerate(adapter.sliding_layers(config)) if not sliding]
    unseen = steps_without_new_larger_storage(dynamic, full_layers)
    if not unseen:
        return None
    return (f"INVALID (not a pass): the storage probe did not see the dynamic cache's full layers {full_layers} move "
            f"to new, larger storage at decode steps {unseen}, where they grow; it cannot vouch for the static cache")


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
    config = adapter.text_config(config)
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
    peak: int  # the most it held: at any moment (CUDA, profiler events) or at any reading (allocator total)
    method: str


PROBED_DEVICES = ("cpu", "cuda")


def held_bytes(device: str, scenario: Callable[[Reading], None]) -> HeldBytes:
    """Run `scenario(reading)`; it calls reading() after each step it wants measured. Bytes are counted from the
    start of the scenario, so whatever it creates (its cache included) and keeps is in the series."""
    if device == "cuda":
        return _held_bytes_cuda(scenario)
    if device == "cpu":
        return _held_bytes_cpu_total(scenario) if _allocator_flag() is not None else _held_bytes_cpu_events(scenario)
    raise ValueError(f"no held-bytes probe for device {device!r} (there are probes for cpu and cuda)")


def cpu_probes() -> dict[str, Callable[[Callable[[Reading], None]], HeldBytes]]:
    """Both CPU held-bytes probes by name (the project's tests and benchmarks/memory_noise.py compare them); the
    allocator total only where its flag can be reached."""
    probes = {"allocator total": _held_bytes_cpu_total} if _allocator_flag() is not None else {}
    return probes | {"profiler events": _held_bytes_cpu_events}


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


_READING_MARK = "cache_conformance.probes.memory reading"


# ---- CPU: the allocator's running total ----

_C10_LIBRARY = {"linux": "libc10.so", "darwin": "libc10.dylib", "win32": "c10.dll"}
_flag_state: dict = {}


def _allocator_flag() -> ctypes.c_bool | None:
    """c10's FLAGS_caffe2_report_cpu_memory_usage, the switch of torch's default CPU allocator's bookkeeping
    (ProfiledCPUMemoryReporter, c10/core/CPUAllocator.cpp: while set, each allocation is entered in a table with
    its size and the running total; a free found in the table is taken off it), or None where it cannot be found."""
    if "flag" not in _flag_state:
        library = Path(torch.__file__).parent / "lib" / _C10_LIBRARY.get(sys.platform, "libc10.so")
        try:
            _flag_state["flag"] = ctypes.c_bool.in_dll(ctypes.CDLL(str(library)), "FLAGS_caffe2_report_cpu_memory_usage")
        except (OSError, ValueError):
            _flag_state["flag"] = None
    return _flag_state["flag"]


def allocator_total() -> int:
    """The CPU allocator's running total of bytes allocated and not yet freed, counted over the blocks allocated
    while the flag (or a memory profiler) was on: read from the event of a one-byte allocation made under the
    profiler (about 2 ms), which carries the total."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        torch.empty(1, dtype=torch.uint8)
    pending = list(profiler.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        if event.tag == torch._C._profiler._EventType.Allocation and event.extra_fields.alloc_size == 1:
            return event.extra_fields.total_allocated - 1
        pending += event.children
    raise RuntimeError("the profiler recorded no allocation event for a one-byte tensor")


def allocator_flag_is_set() -> bool:
    return bool(_allocator_flag() and _allocator_flag().value)


def _held_bytes_cpu_total(scenario: Callable[[Reading], None]) -> HeldBytes:
    """Held bytes from the allocator's running total. The flag is set for the scenario and cleared after it once
    every block allocated while it was set has been freed (the total is back where it was when it was set): the
    table then holds no entry, so a later free of a block allocated without the flag can never be taken off it.
    While something allocated under the flag lives on (e.g. a cache generate() keeps on the model), the flag stays
    set: allocations cost a little more (about 15%), and a later scenario's readings count that block's free, if it
    happens during the scenario, as memory given back (as on CUDA)."""
    flag = _allocator_flag()
    if flag.value:
        gc.collect()  # what an earlier scenario left under the flag may be garbage only the collector frees
    else:
        _flag_state["total_when_set"] = allocator_total()
        flag.value = True
    start = allocator_total()
    series = []
    try:
        scenario(lambda: series.append(allocator_total() - start))
    finally:
        # A full collection costs about 0.2 s in a process that has imported transformers: only when it can matter.
        if allocator_total() != _flag_state["total_when_set"]:
            gc.collect()
        if allocator_total() == _flag_state["total_when_set"]:
            flag.value = False
    return HeldBytes(series, max(series, default=0),
                     "torch's CPU allocator's running total (c10 FLAGS_caffe2_report_cpu_memory_usage); peak over readings")


# ---- CPU without the flag: the profiler's allocator events ----


def _held_bytes_cpu_events(scenario: Callable[[Reading], None]) -> HeldBytes:
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
