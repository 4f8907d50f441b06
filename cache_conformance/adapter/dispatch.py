"""Models as users load large checkpoints: from_pretrained(device_map=...) through accelerate, with decoder layers
on devices, offloaded to CPU or to disk behind accelerate's hooks."""

from __future__ import annotations

import accelerate
import accelerate.hooks
import torch
import transformers
from packaging.version import Version

from cache_conformance.adapter import (
    INSTALLED,
    STATIC_CACHE_WITH_SLIDING_LAYERS,
    from_pretrained,
    sliding_layers,
    text_config,
)


def load_dispatched(path, *, dtype: torch.dtype, attn_implementation: str, device_map: dict[str, str],
                    offload_folder=None):
    """The checkpoint loaded with `device_map` (module name -> device, "cpu" or "disk"), in eval mode."""
    options = {"device_map": device_map}
    if offload_folder is not None:
        options["offload_folder"] = str(offload_folder)
    model, _ = from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation, **options)
    return model.eval()


def module_names(path) -> tuple[list[str], list[str]]:
    """(the decoder layers' module names in order, the names of the other modules that together with them cover
    the model once) for the model the causal-LM auto class loads the checkpoint as, built on the meta device. A
    device map needs keys that do not overlap: every ancestor of a decoder layer is split into its children."""
    config = transformers.AutoConfig.from_pretrained(path)
    with accelerate.init_empty_weights():
        model = transformers.AutoModelForCausalLM.from_config(config)
    layers = _decoder_layer_names(model)
    others = []

    def split(prefix: str, module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            if name in layers:
                continue
            if any(layer.startswith(name + ".") for layer in layers):
                split(name, child)
            else:
                others.append(name)

    split("", model)
    return layers, others


def _decoder_layer_names(model) -> list[str]:
    names = [name for name, _ in model.named_modules()
             if name.rsplit(".", 1)[-1].isdigit() and name.rsplit(".", 1)[0].endswith("layers") and "vision" not in name]
    return names[: text_config(model.config).num_hidden_layers]


def execution_device(module) -> torch.device:
    """Where a module runs: the execution device of accelerate's hook where it has one (offloaded weights live on
    the meta device between calls), else its parameters' device."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device)
    return next(module.parameters()).device


def resting_device(module) -> torch.device:
    """Where a module's weights are between calls: the meta device when accelerate offloads them (to CPU or disk)
    and loads them for each call."""
    return next(module.parameters()).device


def decoder_layer_modules(model) -> list[torch.nn.Module]:
    """The decoder layers, in order."""
    modules = dict(model.named_modules())
    return [modules[name] for name in _decoder_layer_names(model)]


def device_map(path, *, main: str, layer_devices: dict[int, str]) -> dict[str, str]:
    """A device map that puts every module on `main` except the decoder layers listed in `layer_devices`
    (layer index -> "cpu", "disk" or a device)."""
    layers, others = module_names(path)
    return {**{name: main for name in others},
            **{name: layer_devices.get(index, main) for index, name in enumerate(layers)}}


def offload_hook_class() -> type:
    """accelerate's hook that moves a module's inputs (and, when it offloads, its weights) to its execution device
    for each call."""
    return accelerate.hooks.AlignDevicesHook


def cache_passed(kwargs: dict):
    """The cache among a decoder layer's keyword arguments (its keyword changed across releases), or None."""
    return next((value for value in kwargs.values() if isinstance(value, transformers.cache_utils.Cache)), None)


def layer_index(decoder_layer) -> int | None:
    """The index of the layer a decoder layer module is, as its attention (and the cache) numbers it."""
    return getattr(getattr(decoder_layer, "self_attn", None), "layer_idx", None)


# ---- the offloaded static cache (every release needs an accelerator for it) ----

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


def offloaded_cache_device_bytes(model, *, batch_size: int, capacity: int) -> tuple[int, int]:
    """(the most cache bytes the offloaded static cache keeps on the accelerator between calls, what the plain static
    cache keeps there). From the releases' code: 4.50-4.52 keep layer 0 and two full-size buffers the offloaded layers
    are brought into; 4.53-4.55 keep the sliding layers and two full-size buffers; from 4.56 the sliding layers stay
    and at most two full-attention layers are on the device (the one in use, the one prefetched for the next call)."""
    config = text_config(model.config)
    per_position = 2 * batch_size * config.num_key_value_heads * config.head_dim * model.dtype.itemsize
    sliding, window = sliding_layers(config), config.sliding_window
    whole = per_position * sum(min(window, capacity) if is_sliding else capacity for is_sliding in sliding)
    full_layer = per_position * capacity
    if INSTALLED < OFFLOADED_HYBRID_CACHE:
        return 3 * full_layer, whole
    return per_position * min(window, capacity) * sum(sliding) + 2 * full_layer, whole
