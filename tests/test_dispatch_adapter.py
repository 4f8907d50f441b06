"""The dispatch harness and adapter: device maps accelerate accepts (every module once, no key inside another), the
cache found among a decoder layer's arguments, and the offloaded cache's promised device bytes per release."""

import pytest
import torch
from packaging.version import Version

from cache_conformance.adapter import dispatch as dispatch_adapter
from cache_conformance.plugin import checkpoint
from cache_conformance.probes import offloading


@pytest.mark.parametrize("path", [checkpoint.EMBEDDED, checkpoint.OTHER_EMBEDDED, checkpoint.MULTIMODAL_EMBEDDED],
                         ids=["text", "other", "multimodal"])
def test_a_device_map_names_every_module_once_and_no_key_lies_inside_another(path):
    layers, _ = offloading.module_names(path)
    device_map = offloading.device_map(path, main="cpu", layer_devices={1: "disk", 2: "cpu"})
    keys = list(device_map)
    assert not [(a, b) for a in keys for b in keys if a != b and b.startswith(a + ".")]
    assert [device_map[name] for name in layers[:3]] == ["cpu", "disk", "cpu"]
    assert set(device_map.values()) == {"cpu", "disk"}


def test_the_cache_is_found_whatever_keyword_the_release_passes_it_under():
    import transformers

    cache = transformers.DynamicCache()
    for keyword in ("past_key_value", "past_key_values", "cache"):
        assert offloading.cache_passed({"hidden_states": torch.zeros(1), keyword: cache}) is cache
    assert offloading.cache_passed({"hidden_states": torch.zeros(1)}) is None


class TinyConfig:
    """The text config fields the promise is computed from: 4 layers, the last full-attention."""

    num_key_value_heads, head_dim, sliding_window, num_hidden_layers = 2, 8, 4, 4
    layer_types = ["sliding_attention"] * 3 + ["full_attention"]

    def get_text_config(self):
        return self


class TinyModel:
    config, dtype = TinyConfig(), torch.float32


# One position of one layer: keys and values x batch 1 x 2 heads x head_dim 8 x 4 bytes = 128 bytes; capacity 10.
FULL_LAYER, SLIDING_LAYER = 128 * 10, 128 * 4


@pytest.mark.parametrize(("release", "promised"), [
    ("4.50.3", 3 * FULL_LAYER),  # layer 0 and two buffers, all full-size
    ("4.55.4", 3 * SLIDING_LAYER + 2 * FULL_LAYER),  # the sliding layers and two buffers
    ("5.24.0", 3 * SLIDING_LAYER + 2 * FULL_LAYER),  # the sliding layers, the full layer in use and the prefetched one
])
def test_the_offloaded_cache_promise_per_release(monkeypatch, release, promised):
    monkeypatch.setattr(dispatch_adapter, "INSTALLED", Version(release))
    got, whole = offloading.offloaded_cache_device_bytes(TinyModel(), batch_size=1, capacity=10)
    assert (got, whole) == (promised, 3 * SLIDING_LAYER + FULL_LAYER)
