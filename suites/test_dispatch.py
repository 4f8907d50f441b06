"""Models loaded through accelerate's dispatch (from_pretrained(device_map=...)): the static cache where layers run
on different devices or are offloaded to CPU or disk behind accelerate's hooks. WORK IN PROGRESS (issue 18).

Scenarios: the whole model on the target's device; one sliding and the first full-attention layer offloaded to disk
and two more layers to CPU (on a CPU-only machine the CPU layers are offloaded too: accelerate moves their weights
in for each call). W is the sliding window.
"""

import pytest

from cache_conformance import adapter, memory
from cache_conformance.adapter import dispatch
from cache_conformance.decoding import prefill_and_decode, recompute
from cache_conformance.window_oracle import follow, static_windows

SCENARIOS = {
    "whole-model-on-one-device": {},
    "layers-offloaded-to-cpu-and-disk": {1: "disk", 2: "cpu", 5: "disk", 6: "cpu"},
}


@pytest.fixture(scope="session")
def dispatched_models(target) -> dict:
    return {}


@pytest.fixture(params=SCENARIOS)
def dispatched(request, dispatched_models, target, checkpoint_path, tmp_path_factory):
    scenario = request.param
    if scenario not in dispatched_models:
        device_map = dispatch.device_map(checkpoint_path, main=target.device, layer_devices=SCENARIOS[scenario])
        dispatched_models[scenario] = dispatch.load_dispatched(
            checkpoint_path, dtype=target.dtype, attn_implementation=target.attn_implementation, device_map=device_map,
            offload_folder=tmp_path_factory.mktemp(f"offload-{scenario}"),
        )
    return dispatched_models[scenario]


def test_device_map_loads_the_same_weights(dispatched, model, tokens, compare):
    """Recomputation through the dispatched model equals recomputation through the model loaded whole."""
    sequence = tokens(1, 12)
    compare.logits_close(recompute(dispatched, sequence), recompute(model, sequence),
                         where="recomputation, dispatched against loaded whole", positions=list(range(12)))


def test_device_map_decode_matches_recomputation(dispatched, window, tokens, compare):
    prompt, steps = tokens(1, window + 3), 2 * window
    cache = adapter.make_static_cache(dispatched, batch_size=1, capacity=prompt.shape[1] + steps)
    sequence = prefill_and_decode(dispatched, cache, prompt, steps, compare, label="dispatched")
    follower = follow(dispatched, cache, sequence, static_windows(dispatched, window))
    follower.fed(sequence.shape[1], where=f"after a prefill of {prompt.shape[1]} and {steps} decode steps")


def test_device_map_cache_on_each_layers_execution_device(dispatched, window, tokens):
    prompt = tokens(1, window + 3)
    cache = adapter.make_static_cache(dispatched, batch_size=1, capacity=prompt.shape[1] + 2)
    adapter.forward(dispatched, prompt, cache=cache)
    wrong = []
    for layer, module in enumerate(dispatch.decoder_layer_modules(dispatched)):
        runs_on = dispatch.execution_device(module)
        for kind, tensor in zip(("keys", "values"), adapter.layer_storage(cache, layer), strict=True):
            if tensor.device.type != runs_on.type:
                wrong.append(f"layer {layer} {kind} on {tensor.device}, the layer runs on {runs_on}")
    assert not wrong, "; ".join(wrong)


def test_device_map_cache_storage_stays_put(dispatched, window, tokens):
    capacity = 3 * window
    sequence = tokens(1, capacity)
    maps = memory.storage_after_each_step(dispatched, adapter.make_static_cache(dispatched, batch_size=1,
                                                                                  capacity=capacity), sequence)
    moved = {step: memory.storage_changes(maps[0], later) for step, later in enumerate(maps[1:], start=1)}
    moved = {step: changes for step, changes in moved.items() if changes}
    assert not moved, f"storage moved while decoding: {dict(list(moved.items())[:3])}"
