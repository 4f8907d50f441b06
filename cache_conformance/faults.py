"""Deliberate cache bugs, patched into the installed transformers for one pytest run (`--inject-fault NAME`).

They prove the suites can fail: a run under a fault must turn red with a message that points at the fault.
Most patches wrap the static cache's `update` (the adapter names the class), so they work on every release;
a fault may patch anything else in the installed transformers through the adapter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from cache_conformance import adapter


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    caught_by: str  # the property (suite) that must fail under this fault
    patch: Callable[[pytest.MonkeyPatch], None]  # applies the fault; the monkeypatch undoes it


def cache_update_wrapped_by(wrap_update: Callable) -> Callable[[pytest.MonkeyPatch], None]:
    """A patch that replaces the static cache's `update` with `wrap_update(original update)`."""

    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        cache_class = adapter.static_cache_class()
        monkeypatch.setattr(cache_class, "update", wrap_update(cache_class.update))

    return patch


def _reduced_precision_keys(update):
    @functools.wraps(update)
    def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
        key_states = key_states.to(torch.bfloat16).to(key_states.dtype)
        return update(self, key_states, value_states, layer_idx, *args, **kwargs)

    return patched


def _early_eviction(update):
    @functools.wraps(update)
    def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = update(self, key_states, value_states, layer_idx, *args, **kwargs)
        window_full = bool(keys[:, :, -1].any())  # sliding buffers fill from the left, oldest first
        if adapter.layer_is_sliding(self, layer_idx) and window_full:
            keys[:, :, 0] = 0
            values[:, :, 0] = 0
        return keys, values

    return patched


def _silent_overflow(wrap_around: bool):
    """A full layer that cannot take the new positions swallows the error: it either writes them over its oldest
    positions (wrap-around) or drops them, and attention goes on over whatever the buffer holds."""

    def wrap_update(update):
        @functools.wraps(update)
        def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
            try:
                return update(self, key_states, value_states, layer_idx, *args, **kwargs)
            except (IndexError, RuntimeError):
                keys, values = adapter.layer_storage(self, layer_idx)
                if wrap_around:
                    for stored, new in ((keys, key_states), (values, value_states)):
                        stored.copy_(torch.cat([stored, new.to(stored.dtype)], dim=2)[:, :, -stored.shape[2] :])
                return keys, values

        return patched

    return wrap_update


CATALOGUE = {
    fault.name: fault
    for fault in (
        Fault(
            "reduced-precision-keys",
            "the cache stores keys rounded to bfloat16, whatever the model's dtype",
            "equivalence",
            cache_update_wrapped_by(_reduced_precision_keys),
        ),
        Fault(
            "early-eviction",
            "a full sliding layer drops its oldest token one step early (the window holds W-1 tokens)",
            "equivalence",
            cache_update_wrapped_by(_early_eviction),
        ),
        Fault(
            "overflow-wraps-around",
            "a full layer asked for positions past its capacity silently overwrites its oldest positions",
            "overflow",
            cache_update_wrapped_by(_silent_overflow(wrap_around=True)),
        ),
        Fault(
            "overflow-dropped",
            "a full layer asked for positions past its capacity silently drops them",
            "overflow",
            cache_update_wrapped_by(_silent_overflow(wrap_around=False)),
        ),
    )
}


def apply(name: str, monkeypatch: pytest.MonkeyPatch) -> Fault:
    fault = CATALOGUE[name]
    fault.patch(monkeypatch)
    return fault
