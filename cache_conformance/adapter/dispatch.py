"""Release differences of the offloaded static cache, the cache for models loaded through accelerate's dispatch that
keeps layers in CPU memory between calls (every release needs an accelerator for it). The dispatch plumbing itself
(device maps, accelerate's hooks, placement) is the same on every release: `cache_conformance.probes.offloading`."""

from __future__ import annotations

import transformers
from packaging.version import Version

from cache_conformance.adapter import INSTALLED, STATIC_CACHE_WITH_SLIDING_LAYERS, sliding_layers, text_config

OFFLOADED_HYBRID_CACHE = Version("4.53")  # OffloadedHybridCache: sliding layers stay, full layers are offloaded


def make_offloaded_static_cache(model, *, batch_size: int, capacity: int):
    """The release's static cache that keeps layers in CPU memory between calls: OffloadedStaticCache (4.50-4.52,
    every layer full-size), OffloadedHybridCache (4.53-4.55), StaticCache(offloading=True) from 4.56 (full-attention
    layers offloaded, sliding layers kept on the device)."""
    config = text_config(model.config)
    sizes = {"max_batch_size": batch_size, "max_cache_len": capacity, "device": model.device, "dtype": model.dtype}
    if INSTALLED < OFFLOADED_HYBRID_CACHE:
        return transformers.cache_utils.OffloadedStaticCache(config=config, **sizes)
    if INSTALLED < STATIC_CACHE_WITH_SLIDING_LAYERS:
        return transformers.cache_utils.OffloadedHybridCache(config=config, **sizes)
    cache = transformers.StaticCache(config=config, max_cache_len=capacity, offloading=True)
    cache.early_initialization(batch_size=batch_size, num_heads=config.num_key_value_heads, head_dim=config.head_dim,
                               dtype=model.dtype, device=model.device)
    return cache


def offloaded_cache_device_layers(config) -> tuple[int, int]:
    """(how many layers sized to the sliding window, how many full-size layers) of cache the offloaded static cache
    keeps on the accelerator between calls at most. From the releases' code: 4.50-4.52 keep layer 0 and two
    full-size buffers the offloaded layers are brought into; 4.53-4.55 keep the sliding layers and two full-size
    buffers; from 4.56 the sliding layers stay and at most two full-attention layers are on the device (the one in
    use, the one prefetched for the next call)."""
    if INSTALLED < OFFLOADED_HYBRID_CACHE:
        return 0, 3
    return sum(sliding_layers(config)), 2
