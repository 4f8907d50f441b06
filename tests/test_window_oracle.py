"""The sliding-window suite's helpers: the deque model, the slot layout, and the oracle checks' ability to fail."""

from pathlib import Path

import pytest
import torch

from cache_conformance import adapter
from cache_conformance.oracles.decoding import random_tokens
from cache_conformance.oracles.window_oracle import (
    UNUSED,
    ContentTolerance,
    Window,
    attention_output_changes,
    check_layer,
    checkpoint_tolerance,
    content_tolerance,
    held_positions,
    indistinct_positions,
    oracle_keys_values,
)

CHECKPOINT = Path(__file__).resolve().parent.parent / "fixtures" / "tiny-gemma3"


def test_a_window_holds_the_last_positions_oldest_first():
    window = Window(3)
    window.feed(2)
    assert list(window.held) == [0, 1]
    window.feed(3)
    assert list(window.held) == [2, 3, 4] and window.seen == 5


def test_an_unbounded_window_holds_every_position():
    window = Window(None)
    window.feed(5)
    assert list(window.held) == [0, 1, 2, 3, 4]


def test_slot_order_puts_unused_slots_after_the_held_positions():
    assert adapter.slot_order([5, 6, 7], 5) == [5, 6, 7, UNUSED, UNUSED]
    assert adapter.slot_order([5, 6], 2) == [5, 6]


@pytest.fixture(scope="module")
def filled():
    """A real static cache after a prefill longer than the window, with the oracle for the same tokens."""
    model = adapter.load_model(CHECKPOINT, dtype=torch.float32, device="cpu", attn_implementation="eager")
    window = adapter.window(model.config)
    sequence = random_tokens(model, 1, window + 3, torch.Generator().manual_seed(0))
    cache = adapter.make_static_cache(model, batch_size=1, capacity=window + 5)
    adapter.forward(model, sequence, cache=cache)
    return model, cache, oracle_keys_values(model, sequence), window


def expected_slots(cache, layer, window, seen=None):
    seen = seen or window + 3
    slots = adapter.layer_storage(cache, layer)[0].shape[2]
    held = list(range(seen))[-window:] if layer == 0 else list(range(seen))
    return adapter.slot_order(held, slots)


def test_the_oracle_matches_what_a_real_cache_stores(filled):
    _, cache, oracle, window = filled
    tolerance = content_tolerance(torch.float32)
    assert check_layer(cache, 0, oracle, expected_slots(cache, 0, window), tolerance, where="prefill", kind="sliding") == window
    assert held_positions(cache, 0, oracle, 0, tolerance) == list(range(3, window + 3))


def test_swapped_slots_fail_with_layer_slot_and_positions(filled):
    _, cache, oracle, window = filled
    keys, values = (t.clone() for t in adapter.layer_storage(cache, 0))
    try:
        for stored in adapter.layer_storage(cache, 0):
            stored[:, :, [0, 1]] = stored[:, :, [1, 0]]
        with pytest.raises(AssertionError, match=r"step 2: layer 0 \(sliding\), slot 0, batch 0: should hold position 3 "
                           r"but holds position 4; max abs diff [0-9.]+ exceeds tolerance"):
            check_layer(cache, 0, oracle, expected_slots(cache, 0, window), content_tolerance(torch.float32),
                        where="step 2", kind="sliding")
    finally:
        for stored, original in zip(adapter.layer_storage(cache, 0), (keys, values)):
            stored.copy_(original)


def test_a_slot_that_should_be_unused_must_be_zero(filled):
    model, cache, oracle, window = filled
    layer = next(i for i, sliding in enumerate(adapter.sliding_layers(model.config)) if not sliding)
    fewer = adapter.slot_order(list(range(window + 2)), adapter.layer_storage(cache, layer)[0].shape[2])
    with pytest.raises(AssertionError, match=rf"layer {layer} \(full-attention\), slot {window + 2}, batch 0: should "
                       rf"hold zeros \(unused\) but holds position {window + 2}"):
        check_layer(cache, layer, oracle, fewer, content_tolerance(torch.float32), where="x", kind="full-attention")


def test_a_perturbed_pass_stops_at_its_layer_and_a_run_that_skips_the_model_is_refused(filled):
    model = filled[0]
    sequence = random_tokens(model, 1, 6, torch.Generator().manual_seed(1))
    attentions = [layer.self_attn for layer in model.model.layers]
    calls = [0] * len(attentions)
    counters = [attention.register_forward_hook(lambda *_, index=index: calls.__setitem__(index, calls[index] + 1))
                for index, attention in enumerate(attentions)]
    try:
        changes = attention_output_changes(model, lambda: adapter.forward(model, sequence), query=5, perturbed=[0, 4])
    finally:
        for counter in counters:
            counter.remove()
    # the baseline pass goes through every layer; layer i's two perturbed passes end with it, so layer i runs once
    # for the baseline and twice for each layer up to it
    assert calls == [1 + 2 * (len(attentions) - index) for index in range(len(attentions))]
    assert sorted(changes) == list(range(len(attentions))) and all(changes[layer][4] > 0 for layer in changes)

    with pytest.raises(RuntimeError, match="ended without layer 0's attention"):
        attention_output_changes(model, lambda: None, query=5, perturbed=[0])


def stand_in_oracle(position_values: list[float]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One layer, one row, one head, head_dim 1: position p's key and value are both position_values[p]."""
    keys = torch.tensor(position_values)[None, None, :, None]
    return [(keys, keys.clone())]


class StandInCache:
    """A one-layer cache whose slots hold `stored` (keys and values alike), read through adapter.layer_storage."""

    def __init__(self, stored: list[float]):
        self.keys = torch.tensor(stored)[None, None, :, None]


def test_a_slot_is_read_as_its_best_match_not_the_latest_within_the_tolerance(monkeypatch):
    monkeypatch.setattr(adapter, "layer_storage", lambda cache, layer: (cache.keys, cache.keys))
    oracle = stand_in_oracle([1.0, 1.5, 9.0])  # positions 0 and 1 lie within the tolerance 0.6 of each other
    found = held_positions(StandInCache([1.05, 1.45, 0.0]), 0, oracle, 0, ContentTolerance(atol=0.6))
    assert found == [0, 1, UNUSED]


def test_positions_closer_than_twice_the_tolerance_are_named_instead_of_judged():
    tolerance = ContentTolerance(atol=0.6)
    assert indistinct_positions(stand_in_oracle([1.0, 3.0, 5.0]), tolerance) is None
    line = indistinct_positions(stand_in_oracle([1.0, 4.0, 3.5]), tolerance)
    assert line.startswith("not judged: on this checkpoint positions 1 and 2 (layer 0, batch 0) lie 0.5 apart")
    padded_first = torch.tensor([[0, 1, 1]])  # the close pair includes a padded position: not a real one
    assert indistinct_positions(stand_in_oracle([2.9, 3.0, 5.0]), tolerance, padded_first) is None


def test_the_tolerance_grows_with_the_checkpoints_magnitudes_and_never_shrinks():
    base = content_tolerance(torch.bfloat16).atol
    assert checkpoint_tolerance(stand_in_oracle([1.0, -2.0]), torch.bfloat16).atol == base
    assert checkpoint_tolerance(stand_in_oracle([14.0, -2.0]), torch.bfloat16).atol == pytest.approx(2 * base)
