"""Models loaded as users load large checkpoints, through accelerate's dispatch (from_pretrained(device_map=...)),
and the static cache's offloaded form.

Dispatch scenarios: the whole model on the target's device; layer 1 (sliding) and the first full-attention layer
offloaded to disk (their weights rest on the meta device and accelerate's hooks load them for each call) and the
layer after each to CPU (on a CUDA target offloaded likewise; on a CPU target they simply stay on CPU); on CUDA with
two GPUs, every other layer on the second GPU.
On each: the same weights as the model loaded whole, static-cache decoding past the window W against recomputation
and the window oracle, each layer's cache on the device the layer runs on after every call, storage that stays put.

The offloaded static cache keeps layers in CPU memory and brings each to the accelerator for its call; it needs an
accelerator on every release (4.50-5.24 refuse a CPU-only machine), so it runs on CUDA targets only.
"""

import pytest
import torch

from cache_conformance import adapter
from cache_conformance.adapter import dispatch as dispatch_adapter
from cache_conformance.grading import evidence
from cache_conformance.oracles.decoding import located, prefill_and_decode, recompute
from cache_conformance.oracles.window_oracle import follow, static_windows
from cache_conformance.probes import memory, offloading

SCENARIOS = ("whole-model-on-one-device", "layers-offloaded-to-cpu-and-disk", "every-other-layer-on-a-second-gpu")


def layer_devices(scenario: str, target, sliding: list[bool]) -> dict[int, str]:
    """Layer index -> where the device map puts it (every other layer stays on the target's device). `sliding`:
    whether each layer is a sliding one."""
    layers = len(sliding)
    if scenario == "layers-offloaded-to-cpu-and-disk":
        first_full = sliding.index(False)
        placed = {1: "disk", 2: "cpu", first_full: "disk", first_full + 1: "cpu"}
        return {layer: device for layer, device in placed.items() if layer < layers}
    if scenario == "every-other-layer-on-a-second-gpu":
        if target.device != "cuda" or torch.cuda.device_count() < 2:
            pytest.skip("needs a CUDA target and two CUDA devices")
        return {layer: "cuda:1" for layer in range(1, layers, 2)}
    return {}


@pytest.fixture(scope="session")
def dispatched_models(target) -> dict:
    return {}


@pytest.fixture(params=SCENARIOS)
def dispatched(request, dispatched_models, model, target, checkpoint_path, tmp_path_factory):
    scenario = request.param
    if scenario not in dispatched_models:
        placed = layer_devices(scenario, target, adapter.sliding_layers(model.config))
        device_map = offloading.device_map(checkpoint_path, main=target.device, layer_devices=placed)
        dispatched_models[scenario] = offloading.load_dispatched(
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
    """After the prefill and after each of W decode steps, every layer's keys and values are on the device that
    layer runs on (an offloaded layer's weights rest elsewhere between calls; its cache must not follow them)."""
    prompt, steps = tokens(1, window + 3), window
    cache = adapter.make_static_cache(dispatched, batch_size=1, capacity=prompt.shape[1] + steps)
    layers = offloading.decoder_layer_modules(dispatched)
    sliding = adapter.sliding_layers(dispatched.config)
    for step in range(steps + 1):
        where = f"prefill of {prompt.shape[1]} tokens" if step == 0 else f"decode step {step}"
        start = 0 if step == 0 else prompt.shape[1] + step - 1
        adapter.forward(dispatched, prompt if step == 0 else prompt[:, -1:], cache=cache, start=start)
        wrong = {
            (layer, kind): f"layer {layer} ({'sliding' if sliding[layer] else 'full-attention'}) {kind} on "
                           f"{tensor.device}, the layer runs on {offloading.execution_device(module)}"
            for layer, module in enumerate(layers)
            for kind, tensor in zip(("keys", "values"), adapter.layer_storage(cache, layer), strict=True)
            if tensor.device.type != offloading.execution_device(module).type
        }
        with evidence.located_as("placement", where=where, misplaced=[list(key) for key in wrong]):
            assert not wrong, f"after the {where}: " + "; ".join(wrong.values())


def test_device_map_cache_storage_stays_put(dispatched, window, tokens):
    """Every cached tensor keeps its storage while decoding to 3W. Positive control: a dynamic cache's full layers
    move to new, larger storage at every step of the same decoding."""
    capacity = 3 * window
    sequence = tokens(1, capacity)
    static = memory.storage_after_each_step(dispatched, adapter.make_static_cache(dispatched, batch_size=1,
                                                                                    capacity=capacity), sequence)
    with located("the control, decoding into a dynamic cache,"):
        dynamic = memory.storage_after_each_step(dispatched, adapter.make_dynamic_cache(dispatched), sequence)
    unseen = memory.growth_unseen(dispatched.config, dynamic)
    assert unseen is None, unseen
    memory.assert_storage_stays_put(static)


@pytest.fixture
def accelerator_target(target):
    if target.device != "cuda":
        pytest.skip("the offloaded static cache moves layers between CUDA and CPU memory with CUDA streams; every "
                    "release refuses it without CUDA (pin_memory or torch.cuda)")
    return target


def test_offloaded_static_cache_matches_recomputation(accelerator_target, model, window, tokens, compare):
    prompt, steps = tokens(1, window + 3), 2 * window
    cache = dispatch_adapter.make_offloaded_static_cache(model, batch_size=1, capacity=prompt.shape[1] + steps)
    sequence = prefill_and_decode(model, cache, prompt, steps, compare, label="offloaded static cache")
    follower = follow(model, cache, sequence, static_windows(model, window))
    follower.fed(sequence.shape[1], where=f"after a prefill of {prompt.shape[1]} and {steps} decode steps")


def test_offloaded_static_cache_keeps_its_promise_on_the_device(accelerator_target, model, window, tokens):
    """Between decode steps the accelerator holds no more cache than the release's offloading promises
    (dispatch.offloaded_cache_device_bytes), where the plain static cache would hold every layer."""
    prompt, steps = tokens(1, window + 3), 2 * window
    capacity = prompt.shape[1] + steps
    promised, whole = offloading.offloaded_cache_device_bytes(model, batch_size=1, capacity=capacity)
    sequence = torch.cat([prompt, tokens(1, steps)], dim=1)

    def scenario(reading):
        cache = dispatch_adapter.make_offloaded_static_cache(model, batch_size=1, capacity=capacity)
        memory.decode(model, cache, sequence, lambda step: reading(), prompt_length=prompt.shape[1])

    held = memory.held_bytes(accelerator_target.device, scenario).series
    worst = max(held)
    assert worst <= promised, (
        f"the device held {worst} bytes after decode step {held.index(worst)} (counted from before the cache); the "
        f"offloading promises at most {promised} bytes of cache there (the static cache would hold {whole})"
    )
