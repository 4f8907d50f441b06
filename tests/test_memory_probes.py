"""Positive controls for the memory suite's probes: both CPU held-bytes probes (the allocator's running total and
the profiler's events) count exactly the bytes a scenario keeps (not its temporaries, not frees of older blocks),
and the storage probe sees a move and a resize."""

import pytest
import torch

from cache_conformance import adapter
from cache_conformance.plugin import checkpoint
from cache_conformance.probes import memory


@pytest.fixture(scope="module")
def model():
    return adapter.load_model(checkpoint.resolve(None), dtype=torch.float32, device="cpu", attn_implementation="eager")


CPU_PROBES = memory.cpu_probes()


def keep_four_blocks(reading):
    kept = []
    reading()
    for _ in range(4):
        kept.append(torch.empty(1000, dtype=torch.uint8))
        torch.ones(4096)  # 16384 bytes, freed at once
        reading()


@pytest.mark.parametrize("probe", CPU_PROBES.values(), ids=CPU_PROBES.keys())
def test_held_bytes_count_what_a_scenario_keeps_and_not_its_temporaries(probe):
    held = probe(keep_four_blocks)
    assert held.series == [0, 1000, 2000, 3000, 4000]
    assert memory.growth_per_step(held.series, 0) == 1000
    assert memory.largest_increase(held.series, 0) == (1000, 1)


def test_the_event_probe_sees_the_peak_between_readings_and_the_total_probe_at_readings():
    assert CPU_PROBES["profiler events"](keep_four_blocks).peak == 3000 + 1000 + 16384  # the last temporary too
    assert CPU_PROBES["allocator total"](keep_four_blocks).peak == 4000


@pytest.mark.parametrize("probe", CPU_PROBES.values(), ids=CPU_PROBES.keys())
def test_held_bytes_ignore_a_block_allocated_before_the_scenario(probe):
    older = [torch.empty(10_000, dtype=torch.uint8)]

    def scenario(reading):
        reading()
        older.clear()  # freeing it must not look like the scenario giving memory back
        kept = torch.empty(512, dtype=torch.uint8)  # noqa: F841 (held until the scenario returns)
        reading()

    assert probe(scenario).series == [0, 512]


def test_the_cpu_probe_is_the_allocator_total_here():
    assert "allocator total" in CPU_PROBES, "c10's FLAGS_caffe2_report_cpu_memory_usage not found in this torch"
    assert memory.held_bytes("cpu", lambda reading: reading()).method.startswith("torch's CPU allocator's running total")


def test_the_allocator_flag_is_cleared_once_nothing_allocated_under_it_lives():
    survivor = []
    CPU_PROBES["allocator total"](lambda reading: survivor.append(torch.empty(256, dtype=torch.uint8)))
    assert memory.allocator_flag_is_set(), "cleared while a block allocated under it is alive"
    survivor.clear()
    CPU_PROBES["allocator total"](lambda reading: reading())
    assert not memory.allocator_flag_is_set(), "left set after everything allocated under it was freed"


def test_a_device_without_a_probe_is_refused():
    with pytest.raises(ValueError, match="no held-bytes probe for device 'mps'"):
        memory.held_bytes("mps", lambda reading: None)


def test_storage_changes_name_a_move_and_a_resize():
    before = {(0, "keys"): memory.Storage(0x1000, 512, 8), (0, "values"): memory.Storage(0x2000, 512, 8)}
    after = {(0, "keys"): memory.Storage(0x3000, 512, 8), (0, "values"): memory.Storage(0x2000, 1024, 16)}
    assert memory.storage_changes(before, after) == {
        (0, "keys"): "layer 0 keys moved to new storage (0x1000 -> 0x3000, 512 -> 512 bytes)",
        (0, "values"): "layer 0 values storage changed size (512 -> 1024 bytes)",
    }
    assert memory.storage_changes(before, dict(before)) == {}


def test_storage_map_sees_a_layer_replaced_by_a_copy(model):
    cache = adapter.make_static_cache(model, batch_size=1, capacity=12)
    before = memory.storage_map(cache)
    keys, values = adapter.layer_storage(cache, 3)
    adapter.replace_layer_storage(cache, 3, keys.clone(), values)
    assert list(memory.storage_changes(before, memory.storage_map(cache))) == [(3, "keys")]


@pytest.mark.parametrize("capacity", [5, 8, 24])  # shorter than, equal to and longer than the window
def test_the_config_figure_is_what_a_static_cache_allocates(model, capacity):
    cache = adapter.make_static_cache(model, batch_size=2, capacity=capacity)
    assert memory.cache_storage_bytes(cache) == memory.static_cache_bytes_from_config(
        model.config, batch_size=2, capacity=capacity, dtype=torch.float32
    )


def test_one_position_of_one_layer_is_512_bytes_in_float32(model):
    assert memory.position_bytes(model.config, batch_size=1, dtype=torch.float32) == 2 * 2 * 32 * 4


def maps_of(*steps: list[tuple[int, int]]) -> list[dict]:
    """Storage maps of one layer: each step's (address, bytes) for its keys; values alike at address + 1."""
    return [{(0, "keys"): memory.Storage(address, nbytes, nbytes // 4),
             (0, "values"): memory.Storage(address + 1, nbytes, nbytes // 4)} for address, nbytes in steps]


def test_the_growth_control_needs_new_larger_storage_at_every_consecutive_step():
    assert memory.steps_without_new_larger_storage(maps_of((100, 8), (200, 12), (300, 16)), [0]) == []
    # the control made to fail: step 2 keeps its storage, step 3 moves without growing, step 4 returns to an
    # address seen at step 0 (an allocator handing a freed block back) but larger: that one is a real growth
    growing_badly = maps_of((100, 8), (200, 12), (200, 12), (300, 12), (100, 16))
    assert memory.steps_without_new_larger_storage(growing_badly, [0]) == [2, 3]


def test_a_move_to_an_address_seen_before_is_still_a_move():
    # comparing with step 0 only would see nothing at step 2
    [(first, _), (second, changes)] = memory.moves(maps_of((100, 8), (200, 8), (100, 8)))
    assert (first, second) == (1, 2) and "moved to new storage (0xc8 -> 0x64" in changes[0, "keys"]


def test_growth_before_the_window_fills_counts_from_the_first_decode_step():
    # a static cache that allocates one position per step until the window is full, then stays flat
    series = [163_840] + [163_840 + 2_048 * min(step, 4) for step in range(1, 21)]
    assert memory.growth_per_step(series, 0) >= memory.DETECTION_THRESHOLD_BYTES_PER_STEP
    assert memory.growth_per_step(series, memory.first_steady_reading(8)) == 0  # what judging from step 5 missed
