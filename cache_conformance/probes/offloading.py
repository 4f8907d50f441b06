"""Models as users load large checkpoints: from_pretrained(device_map=...) through accelerate, with decoder layers
on devices, offloaded to CPU or to disk behind accelerate's hooks.

The plumbing is the same on every release: device maps, accelerate's hooks and where a module runs. What differs
per transformers release (the offloaded static cache's class and what it keeps on the accelerator) is in
`cache_conformance.adapter.dispatch`.
"""

from __future__ import annotations

import accelerate
import accelerate.hooks
import torch
import transformers

from cache_conformance import adapter
from cache_conformance.adapter import dispatch as dispatch_adapter
from cache_conformance.probes import memory


def load_dispatched(path, *, dtype: torch.dtype, attn_implementation: str, device_map: dict[str, str],
                    offload_folder=None):
    """The checkpoint loaded with `device_map` (module name -> device, "cpu" or "disk"), in eval mode."""
    options = {"device_map": device_map}
    if offload_folder is not None:
        options["offload_folder"] = str(offload_folder)
    model, _ = adapter.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation, **options)
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
    return names[: adapter.text_config(model.config).num_hidden_layers]


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
    """The cache among a decoder layer's keyword arguments, or None: found by its type, since the keyword it is
    passed under changed across releases."""
    return next((value for value in kwargs.values() if isinstance(value, transformers.cache_utils.Cache)), None)


def layer_index(decoder_layer) -> int | None:
    """The index of the layer a decoder layer module is, as its attention (and the cache) numbers it."""
    return getattr(getattr(decoder_layer, "self_attn", None), "layer_idx", None)


def offloaded_cache_device_bytes(model, *, batch_size: int, capacity: int) -> tuple[int, int]:
    """(the most cache bytes the offloaded static cache keeps on the accelerator between calls, what the plain static
    cache keeps there), from the layers the release keeps there (adapter.dispatch.offloaded_cache_device_layers)."""
    config = adapter.text_config(model.config)
    per_position = memory.position_bytes(config, batch_size=batch_size, dtype=model.dtype)
    windowed, full = dispatch_adapter.offloaded_cache_device_layers(config)
    promised = per_position * (windowed * min(adapter.window(config), capacity) + full * capacity)
    whole = memory.static_cache_bytes_from_config(config, batch_size=batch_size, capacity=capacity, dtype=model.dtype)
    return promised, whole
