"""What a model's forward calls were fed and what cache they ran with, read by forward hooks while a block runs, so
that they see what generate() builds inside (an assistant's cache, a cache it substituted): the one recorder of the
cache that ran."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cache_conformance import adapter


class FedTokens:
    """Records the input ids (first row) of every forward call of `model` while active (a forward pre-hook)."""

    def __init__(self, model):
        self.model = model
        self.calls: list[list[int]] = []
        self._handle = None

    def __enter__(self):
        def record(module, args, kwargs):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            self.calls.append(input_ids[0].tolist())

        self._handle = self.model.register_forward_pre_hook(record, with_kwargs=True)
        return self

    def __exit__(self, *exc_info):
        self._handle.remove()


@dataclass
class CachesSeen:
    """The cache object each forward call of `model` returned while active (a forward hook), and each layer's size
    (positions its key tensor holds) after every call."""

    model: torch.nn.Module
    objects: list = field(default_factory=list)  # distinct cache objects, in the order first seen
    sizes: list[list[int]] = field(default_factory=list)  # per call, per layer
    _handle: object = None

    def __enter__(self):
        def record(module, args, kwargs, output):
            cache = adapter.returned_cache(output)
            if cache is None:
                return
            if not any(cache is seen for seen in self.objects):
                self.objects.append(cache)
            self.sizes.append([_positions(adapter.layer_storage(cache, layer)[0])
                               for layer in range(adapter.layer_count(cache))])

        self._handle = self.model.register_forward_hook(record, with_kwargs=True)
        return self

    def __exit__(self, *exc_info):
        self._handle.remove()

    @property
    def classes(self) -> list[str]:
        return [type(cache).__name__ for cache in self.objects]

    def resized_layers(self) -> dict[int, list[int]]:
        """Each layer whose size changed between forward calls, with its sizes in order (unallocated: 0, skipped)."""
        resized = {}
        for layer in range(max((len(sizes) for sizes in self.sizes), default=0)):
            series = [sizes[layer] for sizes in self.sizes if layer < len(sizes) and sizes[layer]]
            if len(set(series)) > 1:
                resized[layer] = list(dict.fromkeys(series))
        return resized

    def most_held(self, sliding: list[bool]) -> dict[str, int]:
        """The most positions each kind of layer ("sliding", "full" by the model's `sliding` flags) held after any
        call."""
        most = {"sliding": 0, "full": 0}
        for sizes in self.sizes:
            for size, is_sliding in zip(sizes, sliding):
                kind = "sliding" if is_sliding else "full"
                most[kind] = max(most[kind], size)
        return most

    def as_metrics(self) -> dict:
        return {"caches_that_ran": self.classes, "layer_sizes_after_last_call": self.sizes[-1] if self.sizes else []}


def _positions(keys) -> int:
    return keys.shape[-2] if isinstance(keys, torch.Tensor) and keys.dim() == 4 else 0
