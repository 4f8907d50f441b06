"""Positive controls for the memory suite's probes: the CPU held-bytes probe counts exactly the bytes a scenario
keeps (not its temporaries, not frees of older blocks), and the storage probe sees a move and a resize."""

import pytest
import torch

from cache_conformance import adapter, checkpoint, memory


@pytest.fixture(scope="module")
def model():
    return adapter.load_model(checkpoint.resolve(None), dtype=torch.float32, device="cpu", attn_implementation="eager")


def test_held_bytes_count_what_a_scenario_keeps_and_not_its_temporaries():
    def scenario(reading):
        kept = []
        reading()
        for _ in range(4):
            kept.append(torch.empty(1000, dtype=torch.uint8))
            torch.ones(4096)  # 16384 bytes, freed at once
            reading()

    held = memory.held_bytes("cpu", scenario)
    assert held.series == [0, 1000, 2000, 3000, 4000]
    assert held.peak == 3000 + 1000 + 16384  # the last temporary beside everything kept
    assert memory.growth_per_step(held.series, 0) == 1000
    assert memory.largest_increase(held.series, 0) == (1000, 1)


def test_held_bytes_ignore_a_block_allocated_before_the_scenario():
    older = [torch.empty(10_000, dtype=torch.uint8)]

    def scenario(reading):
        reading()
        older.clear()  # freeing it must not look like the scenario giving memory back
        kept = torch.empty(512, dtype=torch.uint8)  # noqa: F841 (held until the scenario returns)
        reading()

    assert memory.held_bytes("cpu", scenario).series == [0, 512]


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
