"""Deliberate cache bugs, patched into the installed transformers for one pytest run (`--inject-fault NAME`).

They prove the suites can fail: a run under a fault must turn red with a message that points at the fault.
Most patches wrap the static cache's `update` (the adapter names the class), so they work on every release;
a fault may patch anything else in the installed transformers through the adapter.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import transformers

from cache_conformance import adapter
from cache_conformance.adapter import generation, multimodal
from cache_conformance.probes import offloading
from cache_conformance.records import registry


@dataclass(frozen=True)
class Fault:
    """A deliberate bug; the suite that must catch it names it in suites/registry.toml (`caught_by`)."""

    name: str
    description: str
    patch: Callable[[pytest.MonkeyPatch], None]  # applies the fault; the monkeypatch undoes it
    # The test functions of its suite that its self-test session runs (empty: the suite's whole slice). Only for a
    # fault that by design changes no result, which no other check could see.
    checks: tuple[str, ...] = ()

    @property
    def caught_by(self) -> str:
        return registry.load().suite_of_fault(self.name).name


def cache_update_wrapped_by(wrap_update: Callable) -> Callable[[pytest.MonkeyPatch], None]:
    """A patch that replaces the static cache's `update` with `wrap_update(original update)`."""
    return _static_cache_method_replaced("update", wrap_update)


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
        if adapter.layer_is_sliding(self, layer_idx) and _window_full(self, layer_idx):
            for tensor in (keys, values, *adapter.layer_storage(self, layer_idx)):
                tensor[:, :, 0] = 0
        return keys, values

    return patched


def _window_full(cache, layer: int) -> bool:
    """Whether a sliding layer holds a whole window: as many positions as it has slots, and fewer slots than the
    full-attention layers (a cache smaller than the window only ever holds its capacity, which is no window)."""
    stored = adapter.layer_storage(cache, layer)[0]
    held = int(stored.ne(0).any(dim=3).any(dim=1).any(dim=0).sum())
    return held == stored.shape[2] < adapter.capacity(cache)


def _wrong_slot(update):
    @functools.wraps(update)
    def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
        result = update(self, key_states, value_states, layer_idx, *args, **kwargs)
        if key_states.shape[2] == 1 and adapter.layer_is_sliding(self, layer_idx):
            keys, values = adapter.layer_storage(self, layer_idx)
            written = torch.nonzero((keys == key_states.to(keys.dtype)).all(dim=3).all(dim=1).all(dim=0)).flatten()
            if len(written) == 1 and int(written[0]) > 0:  # swap the new token's slot with its predecessor's
                new = int(written[0])
                for stored in (keys, values):
                    stored[:, :, [new - 1, new]] = stored[:, :, [new, new - 1]]
        return result

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


def _keys_rounded_when_compiled(update):
    """Only while torch compiles or exports the model (dynamo traces it) the keys are stored rounded to multiples of
    1/256: eager runs are untouched, the compiled and exported programs are not. (Not a round trip through
    bfloat16: inductor drops such a pair of casts, and the fault would vanish from its kernels.)"""

    @functools.wraps(update)
    def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
        if torch.compiler.is_compiling():
            key_states = torch.round(key_states * 256) / 256
        return update(self, key_states, value_states, layer_idx, *args, **kwargs)

    return patched


def _updates_counted_in_a_python_list(update):
    """The cache appends to a Python list on every update and branches on its length, as a cache that keeps its
    token count in Python state does: dynamo guards on the length, so every decode step compiles again (a list's
    length is never made dynamic, whatever the compile settings). Results are unchanged."""

    @functools.wraps(update)
    def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
        if not hasattr(self, "_updates_seen"):
            self._updates_seen = []
        self._updates_seen.append(layer_idx)
        if len(self._updates_seen) % 1000 == 999:  # never in these runs; reading the length is the fault
            key_states = key_states + 0
        return update(self, key_states, value_states, layer_idx, *args, **kwargs)

    return patched


def _batch_rows_swapped(update):
    """Rows of a batch stored under each other's index (the kind of bug beam reordering and batch slicing make)."""

    @functools.wraps(update)
    def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
        return update(self, key_states.flip(0), value_states.flip(0), layer_idx, *args, **kwargs)

    return patched


def _static_cache_method_replaced(method: str, replacement: Callable) -> Callable[[pytest.MonkeyPatch], None]:
    """A patch that replaces one method of the static cache class with `replacement(original)`."""
    return _method_replaced(lambda: [adapter.static_cache_class()], method, replacement)


def _method_replaced(cache_classes: Callable[[], list[type]], method: str,
                     replacement: Callable) -> Callable[[pytest.MonkeyPatch], None]:
    """A patch that replaces one method of each class `cache_classes()` names (asked when the patch is applied) with
    `replacement(that class's original)`."""

    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        for cache_class in cache_classes():
            monkeypatch.setattr(cache_class, method, replacement(getattr(cache_class, method)))

    return patch


def _reset_ignored(reset):
    return lambda self: None


def _seq_length_one_short(get_seq_length):
    @functools.wraps(get_seq_length)
    def patched(self, *args, **kwargs):
        return max(0, get_seq_length(self, *args, **kwargs) - 1)

    return patched


def _sliding_window_one_wider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Models loaded from now on attend over W+1 positions in their sliding layers, cached and recomputed alike,
    so the equivalence suite cannot see it (a changed mask moves both paths the same way)."""
    config_class = adapter.sliding_window_source()
    original_init = config_class.__init__

    @functools.wraps(original_init)
    def widened_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.sliding_window += 1

    monkeypatch.setattr(config_class, "__init__", widened_init)


def _image_features_rolled_when_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the multimodal model is called with a cache, each image's soft-token features land one position late
    inside the image (the last one's at the first): scattered into the wrong tokens. Without a cache, exact."""
    cached = []  # whether the model call under way passes a cache

    def flag(forward):
        @functools.wraps(forward)
        def flagged(self, *args, **kwargs):
            cached.append(multimodal.cache_given(kwargs))
            try:
                return forward(self, *args, **kwargs)
            finally:
                cached.pop()

        return flagged

    def roll(project):
        @functools.wraps(project)
        def rolled(self, vision_outputs):
            features = project(self, vision_outputs)
            return features.roll(1, dims=1) if cached and cached[-1] else features

        return rolled

    model_class, projector_class = multimodal.model_class(), multimodal.projector_class()
    monkeypatch.setattr(model_class, "forward", flag(model_class.forward))
    monkeypatch.setattr(projector_class, "forward", roll(projector_class.forward))


def _image_mask_shifted_when_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the multimodal model is called with a cache, the two-way image mask reads each token's type from the
    position before: the image block starts one position late (its first soft token attends causally only) and
    takes in the end-of-image token."""
    model_class = multimodal.model_class()
    forward = model_class.forward

    @functools.wraps(forward)
    def shifted(self, *args, **kwargs):
        token_types = kwargs.get("token_type_ids")
        if token_types is not None and multimodal.cache_given(kwargs):
            kwargs["token_type_ids"] = torch.nn.functional.pad(token_types, (1, 0))[:, :-1]
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(model_class, "forward", shifted)


def _cache_offloaded_with_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the call of a decoder layer whose weights are offloaded, accelerate's hook sends that layer's cache
    where the weights rest between calls (the meta device, for weights offloaded to CPU or disk) and never brings it
    back: the layer's keys and values are on the wrong device from then on."""
    hook_class = offloading.offload_hook_class()
    pre_forward, post_forward = hook_class.pre_forward, hook_class.post_forward
    calls = []  # (decoder layer, the cache it was given) for each decoder layer's call under way

    @functools.wraps(pre_forward)
    def remembered(self, module, *args, **kwargs):
        if offloading.layer_index(module) is not None:
            calls.append((module, offloading.cache_passed(kwargs)))
        return pre_forward(self, module, *args, **kwargs)

    @functools.wraps(post_forward)
    def offloaded(self, module, output):
        output = post_forward(self, module, output)
        if calls and calls[-1][0] is module:
            _, cache = calls.pop()
            resting = offloading.resting_device(module)
            if cache is not None and resting != offloading.execution_device(module):
                layer = offloading.layer_index(module)
                keys, values = adapter.layer_storage(cache, layer)
                adapter.replace_layer_storage(cache, layer, keys.to(resting), values.to(resting))
        return output

    monkeypatch.setattr(hook_class, "pre_forward", remembered)
    monkeypatch.setattr(hook_class, "post_forward", offloaded)


def _crop_one_short(crop):
    """A rollback that removes one position fewer than asked: the last rejected draft stays in every layer and
    is counted in the cache's length (crop(-k) removes k-1 positions; crop(n), the older form, keeps n+1)."""

    @functools.wraps(crop)
    def patched(self, tokens, *args, **kwargs):
        return crop(self, tokens + 1 if tokens != 0 else tokens, *args, **kwargs)

    return patched


def _crop_one_too_many_across_the_window_edge(crop):
    @functools.wraps(crop)
    def patched(self, max_length):
        held = self.get_seq_length()
        # crop(-n) removes n positions (crop(0), as 5.x's rollback calls it, none); crop(n > 0) keeps n
        removed = -max_length if max_length <= 0 else held - max_length
        windows = [getattr(layer, "sliding_window", None) for layer in getattr(self, "layers", [])]
        window = next((w for w in windows if w), None)
        if removed > 0 and window is not None and held - removed < window <= held:  # drafts straddle the edge
            max_length = max_length - 1 if max_length < 0 else held - removed - 1
        return crop(self, max_length)

    return patched


def _second_draft_value_lost(update):
    """A verifying call (a cache that already holds tokens, fed the last token and two drafts or more) stores zeros
    as the value of the second draft: wrong only where that draft is kept, i.e. where a step accepts several drafts
    at once (a rejected one is rolled back with its zeros)."""

    @functools.wraps(update)
    def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
        if key_states.shape[-2] >= 3 and self.get_seq_length(layer_idx) > 0:
            value_states = value_states.clone()
            value_states[:, :, 2] = 0
        return update(self, key_states, value_states, layer_idx, *args, **kwargs)

    return patched


def _reorder_one_step_late(reorder_cache):
    """Beam search's reorder applies the previous step's beam indices (the first step's none): each beam
    continues on the cache of the beam it descended from one step earlier."""

    @functools.wraps(reorder_cache)
    def patched(self, beam_idx, *args, **kwargs):
        previous = self.__dict__.get("_previous_beam_idx", torch.arange(len(beam_idx), device=beam_idx.device))
        self.__dict__["_previous_beam_idx"] = beam_idx.clone()
        return reorder_cache(self, previous, *args, **kwargs)

    return patched


def _reorder_skips_sliding_layers(reorder_cache):
    """reorder_cache reorders the full-attention layers only: each sliding layer keeps its rows where they were."""

    @functools.wraps(reorder_cache)
    def patched(self, beam_idx, *args, **kwargs):
        sliding = [layer for layer in range(adapter.layer_count(self)) if adapter.layer_is_sliding(self, layer)]
        kept = {layer: [tensor.clone() for tensor in adapter.layer_storage(self, layer)] for layer in sliding}
        result = reorder_cache(self, beam_idx, *args, **kwargs)
        for layer, (keys, values) in kept.items():
            adapter.replace_layer_storage(self, layer, keys, values)
        return result

    return patched


def _select_ignores_the_indices(batch_select_indices):
    """batch_select_indices keeps the first rows, as many as asked for, whichever rows were named."""

    @functools.wraps(batch_select_indices)
    def patched(self, indices, *args, **kwargs):
        return batch_select_indices(self, torch.arange(len(indices), device=indices.device), *args, **kwargs)

    return patched


def _storage_reallocated_each_step(update):
    """After each update the layer's keys and values live in fresh copies: same contents, new storage."""

    @functools.wraps(update)
    def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
        result = update(self, key_states, value_states, layer_idx, *args, **kwargs)
        keys, values = adapter.layer_storage(self, layer_idx)
        adapter.replace_layer_storage(self, layer_idx, keys.clone(), values.clone())
        return result

    return patched


def _hidden_copy(update):
    """The cache keeps a clone of every key and value it receives, on itself, for as long as it lives."""

    @functools.wraps(update)
    def patched(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.__dict__.setdefault("_hidden_copies", []).append((key_states.clone(), value_states.clone()))
        return update(self, key_states, value_states, layer_idx, *args, **kwargs)

    return patched


def _generate_copies_the_given_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    generate = transformers.GenerationMixin.generate

    @functools.wraps(generate)
    def patched(self, *args, **kwargs):
        for keyword in {adapter.CACHE_KEYWORD, adapter.LEGACY_CACHE_KEYWORD}:
            if kwargs.get(keyword) is not None:
                kwargs[keyword] = copy.deepcopy(kwargs[keyword])
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(transformers.GenerationMixin, "generate", patched)


def _generate_with_cache_arguments_replaced(replace: Callable[[dict], None]):
    """A patch of generate() that rewrites its keyword arguments with `replace` before generating."""

    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        generate = transformers.GenerationMixin.generate

        @functools.wraps(generate)
        def patched(self, *args, **kwargs):
            replace(kwargs)
            return generate(self, *args, **kwargs)

        monkeypatch.setattr(transformers.GenerationMixin, "generate", patched)

    return patch


def _static_request_made_dynamic(kwargs: dict) -> None:
    if kwargs.get("cache_implementation") == "static":
        kwargs["cache_implementation"] = "dynamic"


def _users_dynamic_cache_dropped(kwargs: dict) -> None:
    for keyword in {adapter.CACHE_KEYWORD, adapter.LEGACY_CACHE_KEYWORD}:
        if type(kwargs.get(keyword)) is transformers.DynamicCache:
            kwargs[keyword] = transformers.DynamicCache()


CATALOGUE = {
    fault.name: fault
    for fault in (
        Fault(
            "reduced-precision-keys",
            "the cache stores keys rounded to bfloat16, whatever the model's dtype",
            cache_update_wrapped_by(_reduced_precision_keys),
        ),
        Fault(
            "early-eviction",
            "a full sliding layer drops its oldest token one step early (the window holds W-1 tokens)",
            cache_update_wrapped_by(_early_eviction),
        ),
        Fault(
            "wrong-slot",
            "a sliding layer writes each decoded token into its predecessor's slot (and the predecessor into the "
            "new token's): the right tokens in the wrong order, invisible in the logits",
            cache_update_wrapped_by(_wrong_slot),
        ),
        Fault(
            "batch-rows-swapped",
            "each sequence of a batch is stored in another sequence's row",
            cache_update_wrapped_by(_batch_rows_swapped),
        ),
        Fault(
            "reset-ignored",
            "reset() leaves the previous sequence in the cache (and its position counters)",
            _static_cache_method_replaced("reset", _reset_ignored),
        ),
        Fault(
            "seq-length-one-short",
            "get_seq_length() reports one token fewer than the cache holds, so generate() places tokens wrongly",
            _static_cache_method_replaced("get_seq_length", _seq_length_one_short),
        ),
        Fault(
            "overflow-wraps-around",
            "a full layer asked for positions past its capacity silently overwrites its oldest positions",
            cache_update_wrapped_by(_silent_overflow(wrap_around=True)),
        ),
        Fault(
            "overflow-dropped",
            "a full layer asked for positions past its capacity silently drops them",
            cache_update_wrapped_by(_silent_overflow(wrap_around=False)),
        ),
        Fault(
            "sliding-mask-one-wider",
            "the sliding-window attention mask (and the sliding cache layers with it) spans one position more than W",
            _sliding_window_one_wider,
        ),
        Fault(
            "compiled-keys-rounded",
            "only in compiled and exported programs, the cache stores keys rounded to multiples of 1/256 (eager is "
            "exact)",
            cache_update_wrapped_by(_keys_rounded_when_compiled),
        ),
        Fault(
            "recompile-every-step",
            "the cache counts its updates in a Python list whose length it reads, so torch.compile recompiles the "
            "decode step at every step (results unchanged)",
            cache_update_wrapped_by(_updates_counted_in_a_python_list),
            # Results are unchanged, so only the checks that count compilations can see it; the compiled decode and
            # generate() checks would pass after compiling every step again (about 100 s more on a cold cache).
            checks=("test_compilations_do_not_grow_with_decode_steps",),
        ),
        Fault(
            "image-features-rolled-when-cached",
            "with a cache in use, each image's soft-token features are scattered one position late inside the image",
            _image_features_rolled_when_cached,
        ),
        Fault(
            "image-mask-shifted-when-cached",
            "with a cache in use, the two-way image mask is shifted one position late (the first soft token attends "
            "causally, end-of-image joins the image)",
            _image_mask_shifted_when_cached,
        ),
        Fault(
            "crop-one-short",
            "crop() removes one position fewer than asked: a rolled-back draft stays in the cache and in its length",
            _method_replaced(generation.croppable_cache_classes, "crop", _crop_one_short),
        ),
        Fault(
            "second-draft-lost-when-several-are-accepted",
            "the default (dynamic) cache stores zeros as the value of the second draft a verifying call feeds: only a "
            "step that accepts several drafts at once keeps it",
            _method_replaced(lambda: [transformers.DynamicCache], "update", _second_draft_value_lost),
        ),
        Fault(
            "beam-reorder-one-step-late",
            "beam search's cache reorder applies the previous step's beam indices",
            _method_replaced(generation.reorderable_cache_classes, "reorder_cache", _reorder_one_step_late),
        ),
        Fault(
            "cache-offloaded-with-the-weights",
            "after an offloaded decoder layer's call, accelerate's hook moves the layer's cache to where the weights "
            "rest (the meta device) and never brings it back",
            _cache_offloaded_with_the_weights,
        ),
        Fault(
            "storage-reallocated-each-step",
            "every update moves the layer's keys and values to new storage (fresh copies, same contents)",
            cache_update_wrapped_by(_storage_reallocated_each_step),
        ),
        Fault(
            "hidden-copy",
            "the cache keeps a hidden clone of every key and value it receives",
            cache_update_wrapped_by(_hidden_copy),
        ),
        Fault(
            "generate-copies-the-given-cache",
            "generate() works on a copy of the cache object passed to it (under either name), so the user's "
            "cache is left as it was",
            _generate_copies_the_given_cache,
        ),
        Fault(
            "crop-one-too-many-across-the-window-edge",
            "crop() removes one position more than asked, only when the rolled-back drafts straddle the sliding "
            "window's edge (the cache held at least W positions and keeps fewer)",
            _method_replaced(generation.croppable_cache_classes, "crop", _crop_one_too_many_across_the_window_edge),
        ),
        Fault(
            "reorder-skips-sliding-layers-of-one-class",
            "the static cache class's reorder_cache (beam search's, and a user's call) leaves the sliding layers' rows "
            "where they were; every other class reorders every layer",
            _method_replaced(lambda: [generation.static_cache_class()], "reorder_cache", _reorder_skips_sliding_layers),
        ),
        Fault(
            "batch-select-keeps-the-first-rows",
            "DynamicCache.batch_select_indices (a member the harness and the adapter never call) keeps the first rows "
            "rather than the rows named",
            _method_replaced(lambda: [transformers.DynamicCache], "batch_select_indices",
                             _select_ignores_the_indices),
        ),
        Fault(
            "static-request-served-by-a-growing-cache",
            "generate(cache_implementation=\"static\") quietly builds a dynamic cache: the output is right, the memory "
            "grows with every token",
            _generate_with_cache_arguments_replaced(_static_request_made_dynamic),
        ),
        Fault(
            "users-dynamic-cache-replaced",
            "generate() given a user's DynamicCache generates into a new one of its own: the output is right, the "
            "user's cache stays empty",
            _generate_with_cache_arguments_replaced(_users_dynamic_cache_dropped),
        ),
    )
}


def apply(name: str, monkeypatch: pytest.MonkeyPatch) -> Fault:
    fault = CATALOGUE[name]
    fault.patch(monkeypatch)
    return fault
