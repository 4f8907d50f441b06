"""Grading what a call does when it asks a static cache for more positions than the cache was made with.

Each grade returns None when the behaviour conforms, else a sentence saying what is wrong. They work on plain
snapshots of cache state, so the project's own tests can check them on stand-in callables.

On CUDA an overflow can end in a device-side assert, which poisons the process: every later CUDA call fails. There
each scenario runs in a child process (`attempt_in_child`, through cache_conformance.isolation); a child that dies,
or whose device no longer answers after the call, has `lost` its cache: raises is yes (an error, not silent
corruption), clear is graded from the error where there is one (no when the process died), intact is unknown, and
nothing is recoverable.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cache_conformance import adapter
from cache_conformance.oracles.compare import Comparison
from cache_conformance.oracles.decoding import prefill_and_decode
from cache_conformance.oracles.tolerances import tolerance_for


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
    before: CacheState | None
    after: CacheState | None
    lost: str | None = None  # why the cache could not be read after the call (its process died or its device failed)


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
    """An overflow must raise: returning normally means silent wrap-around, truncation or garbage. A process that
    died in the call did not return normally."""
    if result.error is None and result.lost is None:
        return "the call returned normally: the cache wrapped around, dropped tokens or wrote out of bounds silently"
    return None


def clarity_failure(result: Attempt, *, capacity: int, requested: set[int]) -> str | None:
    """The error is a ValueError (or one of transformers' own) whose message is about the cache and names the
    capacity and the requested length, not a low-level error from inside the cache or attention."""
    if result.error is None and result.lost is not None:
        return f"no error message: {result.lost}"
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


def intact_unknown(result: Attempt) -> str | None:
    """Why it cannot be known whether the cache stayed intact (it was lost with its process), or None."""
    return None if result.lost is None else f"unknown: {result.lost}"


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


# ---- in a child process (CUDA) ----


@dataclass(frozen=True)
class ChildOverflow:
    """What `attempt_in_child` sends back: the attempt (states on CPU), the lengths the call asked for and the
    recovery check's failure, if any."""

    result: Attempt
    requested: set[int]
    recovery_failure: str | None


def attempt_in_child(checkpoint_path, target, scenario: Callable, sequence: torch.Tensor, capacity: int,
                     recovery_prompt: torch.Tensor) -> ChildOverflow:
    """Run in a child process: load the checkpoint for `target`, run `scenario` (the overflow suite's: it fills a
    cache of `capacity` and returns the overflowing call) as attempt() does, then check that after reset() the cache
    serves `recovery_prompt` and its decoding as recomputation does. The device state goes back as CPU copies."""
    model = adapter.load_model(checkpoint_path, dtype=target.dtype, device=target.device,
                               attn_implementation=target.attn_implementation)
    cache = adapter.make_static_cache(model, batch_size=1, capacity=capacity)
    call, requested = scenario(model, cache, sequence.to(target.device), capacity, adapter.window(model.config))
    before = _on_cpu(cache_state(cache))
    try:
        call()
        error = None
    except Exception as exception:  # noqa: BLE001 - graded by the parent
        error = _picklable(exception)
    try:
        after = _on_cpu(cache_state(cache))
    except Exception as exception:  # noqa: BLE001 - a poisoned device fails every later call
        lost = f"the device failed after the call ({describe(exception)[:300]})"
        return ChildOverflow(Attempt(error, before, None, lost=lost), requested, recovery_failure=lost)
    adapter.reset(cache)
    prompt = recovery_prompt.to(target.device)
    try:
        prefill_and_decode(model, cache, prompt, capacity - prompt.shape[1],
                           Comparison(tolerance_for(target.dtype_name, target.device)), label="after reset()")
        recovery_failure = None
    except Exception as failure:  # noqa: BLE001 - graded by the parent
        recovery_failure = f"{type(failure).__name__}: {failure}"
    return ChildOverflow(Attempt(error, before, after), requested, recovery_failure)


def lost_in_child(death: str) -> ChildOverflow:
    """The outcome of a child that died (`death` says how) before sending anything back."""
    lost = f"the process died during the overflow ({death})"
    return ChildOverflow(Attempt(None, None, None, lost=lost), set(), recovery_failure=lost)


def _on_cpu(state: CacheState) -> CacheState:
    return CacheState({name: tensor.cpu() for name, tensor in state.tensors.items()}, state.length)


def _picklable(error: Exception) -> Exception:
    """`error` itself when it survives the trip to the parent, else a RuntimeError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure to round-trip
        return RuntimeError(describe(error))
    return error
