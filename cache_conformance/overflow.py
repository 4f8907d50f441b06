"""Grading what a call does when it asks a static cache for more positions than the cache was made with.

Each grade returns None when the behaviour conforms, else a sentence saying what is wrong. They work on plain
snapshots of cache state, so the project's own tests can check them on stand-in callables.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cache_conformance import adapter


@dataclass(frozen=True, repr=False)
class CacheState:
    """Copies of every stored tensor, named, and the length the cache reports."""

    tensors: dict[str, torch.Tensor]
    length: int

    def __repr__(self) -> str:
        return f"CacheState({len(self.tensors)} tensors, reported length {self.length})"


@dataclass(frozen=True)
class Attempt:
    error: Exception | None
    before: CacheState
    after: CacheState


def cache_state(cache) -> CacheState:
    tensors = {}
    for layer in range(adapter.layer_count(cache)):
        keys, values = adapter.layer_storage(cache, layer)
        tensors[f"layer {layer} keys"] = keys.detach().clone()
        tensors[f"layer {layer} values"] = values.detach().clone()
    return CacheState(tensors, adapter.seq_length(cache))


def attempt(call: Callable[[], object], read_state: Callable[[], CacheState]) -> Attempt:
    """Run `call`, keeping the exception it raises (if any) and the cache state before and after."""
    before = read_state()
    try:
        call()
        error = None
    except Exception as exception:  # noqa: BLE001 - any exception is graded, not propagated
        error = exception
    return Attempt(error, before, read_state())


def describe(error: Exception | None) -> str:
    if error is None:
        return "no exception"
    return f"{type(error).__module__}.{type(error).__qualname__}: {error}"


def raise_failure(result: Attempt) -> str | None:
    """An overflow must raise: returning normally means silent wrap-around, truncation or garbage."""
    if result.error is None:
        return "the call returned normally: the cache wrapped around, dropped tokens or wrote out of bounds silently"
    return None


def clarity_failure(result: Attempt, *, capacity: int, requested: set[int]) -> str | None:
    """The error is a ValueError (or one of transformers' own) whose message is about the cache and names the
    capacity and the requested length, not a low-level error from inside the cache or attention."""
    if result.error is None:
        return "there is no error to judge: the call returned normally"
    problems = []
    error_type = type(result.error)
    if not (issubclass(error_type, ValueError) or error_type.__module__.startswith("transformers")):
        problems.append(f"{error_type.__name__} is neither a ValueError nor a transformers exception")
    message = str(result.error)
    numbers = {int(n) for n in re.findall(r"\d+", message)}
    if "cache" not in message.lower():
        problems.append("the message does not mention the cache")
    if capacity not in numbers:
        problems.append(f"the message does not name the capacity {capacity}")
    if not numbers & requested:
        problems.append(f"the message does not name the requested length ({' or '.join(map(str, sorted(requested)))})")
    if problems:
        return "; ".join(problems) + f". Got {describe(result.error)}"
    return None


def intact_failure(result: Attempt) -> str | None:
    """After the failed call the cache holds exactly what it held before, and reports the same length."""
    problems = []
    if result.after.length != result.before.length:
        problems.append(f"the reported length changed from {result.before.length} to {result.after.length}")
    for name, before in result.before.tensors.items():
        after = result.after.tensors[name]
        if before.shape != after.shape:
            problems.append(f"{name} changed shape {tuple(before.shape)} -> {tuple(after.shape)}")
        elif not torch.equal(before, after):
            changed = (before != after).sum().item()
            problems.append(f"{name} changed ({changed} of {before.numel()} elements)")
    if problems:
        shown = problems[:6] + ([f"... {len(problems) - 6} more"] if len(problems) > 6 else [])
        return "the cache was modified by the call: " + "; ".join(shown) + f" (after {describe(result.error)})"
    return None
