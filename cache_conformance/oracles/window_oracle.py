"""An independent oracle for what each cache layer must hold, and the checks that compare a cache with it.

The oracle runs the model once without any cache over the same tokens and captures, with forward hooks, the keys
and values every attention layer computes: the key norm's output with rotary embedding applied here (not by
transformers' code, though with the cos/sin tables transformers' rotary module computes for the pass), and the
value projection's output. Those are the tensors a cache stores, position by position; the oracle shares no code
with the cache's update, storage or eviction.

What a layer must hold is modelled in pure Python (`Window`, a deque of positions); which slot holds which
position is the adapter's knowledge (`adapter.slot_order`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest
import torch

from cache_conformance import adapter
from cache_conformance.grading import evidence
from cache_conformance.oracles.decoding import call, positions_from_mask, without_padding

UNUSED = None  # a slot that holds no position: it must be all zeros


@dataclass(frozen=True)
class ContentTolerance:
    """How far a stored key or value may be from the oracle's. The same position computed in a prefill, a chunk or
    a decode step goes through different matrix-multiply blockings, and the differences grow with depth.
    Measured on transformers 5.23 (6 schedules of prefill, decode and chunks, every layer and slot,
    eager and sdpa): largest difference float32 3.9e-5, bfloat16 0.30, float16 0.051, with keys and values up
    to 7 in size; a slot holding another position differs by at least 3.3 in every dtype. The tolerances keep
    a 2-5x margin above the largest and 5x below the smallest wrong-position difference."""

    atol: float  # a stored key or value passes when |stored - oracle| <= atol, elementwise


CONTENT_TOLERANCES = {
    torch.float32: ContentTolerance(atol=2e-4),
    torch.bfloat16: ContentTolerance(atol=0.6),
    torch.float16: ContentTolerance(atol=0.12),
}


CALIBRATED_MAGNITUDE = 7.0  # the largest key or value of the embedded checkpoint, where those were measured


def content_tolerance(dtype: torch.dtype) -> ContentTolerance:
    return CONTENT_TOLERANCES[dtype]


def checkpoint_tolerance(oracle, dtype: torch.dtype) -> ContentTolerance:
    """The dtype's content tolerance for the checkpoint in use: rounding is relative to the numbers rounded, so a
    checkpoint whose keys or values are larger than the embedded one's gets a tolerance larger in proportion (never
    a smaller one), measured on the oracle it is compared with."""
    magnitude = max(float(torch.maximum(keys.abs().amax(), values.abs().amax())) for keys, values in oracle)
    return ContentTolerance(atol=CONTENT_TOLERANCES[dtype].atol * max(1.0, magnitude / CALIBRATED_MAGNITUDE))


def indistinct_positions(oracle, tolerance: ContentTolerance, attention_mask=None) -> str | None:
    """Where a slot's contents cannot tell two positions apart: one line naming the layer, batch row and the two
    real positions of the sequence whose keys and values lie within twice the tolerance of each other (a slot
    within the tolerance of one could then be within it of the other), or None where every two are further apart.
    The checkpoint's separation of positions against the same-position noise, measured on it."""
    closest = None
    for layer, (keys, values) in enumerate(oracle):
        apart = _apart(keys, values, keys, values)  # (batch, positions, positions)
        ignored = torch.eye(apart.shape[1], dtype=torch.bool).expand_as(apart)  # a position is not its own neighbour
        if attention_mask is not None:
            padded = ~attention_mask[:, : apart.shape[1]].bool().cpu()
            ignored = ignored | padded[:, :, None] | padded[:, None, :]
        apart = apart.cpu().masked_fill(ignored, float("inf"))
        distance = float(apart.min())
        if closest is None or distance < closest[0]:
            row, first, second = (int(i) for i in torch.nonzero(apart == distance)[0])
            closest = (distance, layer, row, first, second)
    if closest is None or closest[0] > 2 * tolerance.atol:
        return None
    distance, layer, row, first, second = closest
    return (f"not judged: on this checkpoint positions {first} and {second} (layer {layer}, batch {row}) lie "
            f"{distance:.3g} apart, within twice the content tolerance ({tolerance.atol:.3g}): a slot's keys and "
            f"values cannot tell which of them it holds at this dtype")


class Window:
    """The positions a layer must hold after each call, as a plain deque: the last `size` positions fed, oldest
    first (size None: every position)."""

    def __init__(self, size: int | None):
        self.size = size
        self.held: deque[int] = deque(maxlen=size)
        self.seen = 0

    def feed(self, count: int) -> None:
        for _ in range(count):
            self.held.append(self.seen)
            self.seen += 1


def _attention_modules(model) -> list:
    """Each decoder layer's attention module, in layer order."""
    found = [m for m in model.modules() if hasattr(m, "k_norm") and hasattr(m, "v_proj") and hasattr(m, "layer_idx")]
    return sorted(found, key=lambda m: m.layer_idx)


def _with_rotary(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, written out here: keys (batch, heads, seq, dim); cos/sin (batch, seq, dim)."""
    half = keys.shape[-1] // 2
    rotated = torch.cat((-keys[..., half:], keys[..., :half]), dim=-1)
    return keys * cos[:, None] + rotated * sin[:, None]


def oracle_keys_values(model, input_ids, *, attention_mask=None, position_ids=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the (keys, values) a cache must store for every position of `input_ids`, each of shape
    (batch, kv_heads, seq, head_dim), from one forward pass without cache."""
    return oracle_pass(model, input_ids, attention_mask=attention_mask, position_ids=position_ids)[0]


@torch.no_grad()
def oracle_pass(model, input_ids, *, attention_mask=None, position_ids=None, images=None):
    """(oracle_keys_values, logits) of one forward pass without cache: the logits are that pass's own, i.e. the
    recomputation a cached run is compared with. `images`: the sequence's images (multimodal model)."""
    captured: dict[int, dict[str, torch.Tensor]] = {}
    handles = []
    kv_heads = adapter.text_config(model.config).num_key_value_heads
    for module in _attention_modules(model):
        slot = captured.setdefault(module.layer_idx, {})

        def take_rotary(_module, _args, kwargs, slot=slot):
            slot["cos"], slot["sin"] = kwargs["position_embeddings"]

        def take_normed_keys(_module, _args, output, slot=slot):
            slot["keys"] = output

        def take_values(_module, _args, output, slot=slot, heads=kv_heads):
            batch, seq, _ = output.shape
            slot["values"] = output.view(batch, seq, heads, -1).transpose(1, 2)

        handles += [
            module.register_forward_pre_hook(take_rotary, with_kwargs=True),
            module.k_norm.register_forward_hook(take_normed_keys),
            module.v_proj.register_forward_hook(take_values),
        ]
    try:
        logits = call(model, input_ids, images=images, attention_mask=attention_mask, position_ids=position_ids)
    finally:
        for handle in handles:
            handle.remove()
    keys_values = [(_with_rotary(c["keys"], c["cos"], c["sin"]), c["values"]) for _, c in sorted(captured.items())]
    return keys_values, logits


def _apart(keys, values, other_keys, other_values) -> torch.Tensor:
    """Max abs difference (keys and values) between every position of one (keys, values) pair and every position of
    another, each (batch, heads, positions, head_dim): (batch, positions, other positions)."""
    key_diff = (keys[:, :, :, None].double() - other_keys[:, :, None].double()).abs().amax(dim=(1, 4))
    value_diff = (values[:, :, :, None].double() - other_values[:, :, None].double()).abs().amax(dim=(1, 4))
    return torch.maximum(key_diff, value_diff)


def _slot_diffs(cache, layer: int, oracle) -> torch.Tensor:
    """Max abs difference (keys and values) between every stored slot and every oracle position:
    (batch, slots, positions)."""
    return _apart(*adapter.layer_storage(cache, layer), *oracle[layer])


def held_positions(cache, layer: int, oracle, row: int, tolerance: ContentTolerance) -> list[int | None | str]:
    """What each slot of `layer` actually holds for batch `row`: the oracle position it matches best, if within
    the tolerance (the latest of equally close ones, e.g. identical padding), UNUSED if all zeros, or "?" if it
    matches no position."""
    keys, values = adapter.layer_storage(cache, layer)
    unused = (keys[row] == 0).all(dim=(0, 2)) & (values[row] == 0).all(dim=(0, 2))
    diffs = _slot_diffs(cache, layer, oracle)[row]
    found: list[int | None | str] = []
    for slot in range(keys.shape[2]):
        best = float(diffs[slot].min())
        closest = torch.nonzero(diffs[slot] == best).flatten().tolist()
        found.append(UNUSED if unused[slot] else closest[-1] if best <= tolerance.atol else "?")
    return found


def _describe(held) -> str:
    return "zeros (unused)" if held is UNUSED else "keys and values of no position in the sequence" if held == "?" else f"position {held}"


def check_layer(cache, layer: int, oracle, expected_slots: list[int | None], tolerance: ContentTolerance, *,
                where: str, kind: str, attention_mask=None) -> int:
    """Assert every slot of `layer` holds the oracle's keys and values of the position `expected_slots` names
    (UNUSED: all zeros), for every batch row; slots holding a padded position of a row are not compared.
    `kind` names the layer's attention in the message. Returns the number of (slot, row) pairs compared."""
    keys, values = adapter.layer_storage(cache, layer)
    diffs = _slot_diffs(cache, layer, oracle)
    magnitude = torch.maximum(keys.abs().amax(dim=(1, 3)), values.abs().amax(dim=(1, 3))).double()  # (batch, slots)
    diff = torch.stack([magnitude[:, slot] if position is UNUSED else diffs[:, slot, position]
                        for slot, position in enumerate(expected_slots)], dim=1)
    compared = torch.ones_like(diff, dtype=torch.bool)
    if attention_mask is not None:
        for slot, position in enumerate(expected_slots):
            if position is not UNUSED:
                compared[:, slot] = attention_mask[:, position].bool()
    bad = (diff > tolerance.atol) & compared
    if bad.any():
        slot, row = (int(i) for i in torch.nonzero(bad.T)[0])  # the first slot, then the first row
        position = expected_slots[slot]
        actually = held_positions(cache, layer, oracle, row, tolerance)[slot]
        wanted = "zeros (unused)" if position is UNUSED else f"position {position}"
        raise evidence.failure(
            f"{where}: layer {layer} ({kind}), slot {slot}, batch {row}: should hold {wanted} but holds "
            f"{_describe(actually)}; max abs diff {float(diff[row, slot]):.3g} exceeds tolerance (atol "
            f"{tolerance.atol:g}); slots should hold {_slots(expected_slots)}",
            "window-contents", where=where, layer=layer, slot=slot, batch=row,
            position=None if position is UNUSED else position, difference=float(diff[row, slot]),
            limit=tolerance.atol,
        )
    return int(compared.sum())


def _slots(expected_slots) -> str:
    return "[" + ", ".join("-" if p is UNUSED else str(p) for p in expected_slots) + "]"


def _span(positions: list[int]) -> str:
    """Positions as 'a..b' when consecutive, else listed."""
    if positions and positions == list(range(positions[0], positions[-1] + 1)):
        return f"{positions[0]}..{positions[-1]}" if len(positions) > 1 else str(positions[0])
    return str(positions)


class CacheFollower:
    """Follows one cache through a run. After each call that fed it tokens, every layer must hold, slot by slot in
    the release's order, the oracle's keys and values of the positions its `Window` holds. With an attention
    mask, padded positions are not compared (their hidden states are not defined by the model) and each row's
    sliding layers must hold that row's last min(W, real tokens) real tokens: padding takes no window slot a
    real token needs. `log` records what each layer held after each call, for the results file.
    `recomputed_logits` are the logits of the oracle's pass (recomputation over the whole sequence), when known."""

    def __init__(self, cache, oracle, windows: list[Window], sliding: list[bool], tolerance: ContentTolerance, *,
                 attention_mask=None, recomputed_logits=None):
        self.cache, self.oracle, self.windows, self.tolerance = cache, oracle, windows, tolerance
        self.recomputed_logits = recomputed_logits
        self.kinds = ["sliding" if s else "full-attention" for s in sliding]
        self.attention_mask = attention_mask
        self.log: list[dict] = []

    def fed(self, count: int, *, where: str) -> None:
        for window in self.windows:
            window.feed(count)
        compared = 0
        for layer, window in enumerate(self.windows):
            slots = adapter.layer_storage(self.cache, layer)[0].shape[2]
            kind = self.kinds[layer]
            assert len(window.held) <= slots, (
                f"{where}: layer {layer} ({kind}) has {slots} slots but must hold {len(window.held)} positions "
                f"({_span(list(window.held))})"
            )
            expected = adapter.slot_order(list(window.held), slots)
            compared += check_layer(self.cache, layer, self.oracle, expected, self.tolerance, where=where, kind=kind,
                                    attention_mask=self.attention_mask)
            if self.attention_mask is not None and window.size is not None:
                self._padding_takes_no_real_slot(layer, window, where)
        self.log.append({
            "after": where,
            "tokens_seen": self.windows[0].seen,
            "held": {str(layer): _span(list(w.held)) for layer, w in enumerate(self.windows)},
            "slots_compared": compared,
        })

    def _padding_takes_no_real_slot(self, layer: int, window: Window, where: str) -> None:
        mask = self.attention_mask[:, : window.seen]
        for row in range(mask.shape[0]):
            real = [p for p in range(window.seen) if mask[row, p]]
            needed = real[-window.size :]
            held = [p for p in held_positions(self.cache, layer, self.oracle, row, self.tolerance)
                    if isinstance(p, int) and mask[row, p]]
            assert held == needed, (
                f"{where}: layer {layer} (sliding), batch {row}: holds real positions {_span(held)} but its last "
                f"{len(needed)} real tokens are positions {_span(needed)}: padding took window slots from real tokens"
            )


def feed_chunks(model, follower: CacheFollower, sequence, sizes, *, attention_mask=None, label="chunk",
                compare=None, images=None) -> None:
    """Feed `sequence` (with its `images`, if any) through the follower's cache in chunks of `sizes`, checking every
    layer after each and, given `compare`, each chunk's logits against recomputation. With label "decode" the
    first chunk is the prefill and each later one a decode step."""
    positions = positions_from_mask(attention_mask)
    reference = without_padding(follower.recomputed_logits, attention_mask) if compare else None
    start = 0
    for number, size in enumerate(sizes, start=1):
        end = start + size
        logits = call(
            model, sequence[:, start:end], images=images, cache=follower.cache, start=start,
            attention_mask=attention_mask[:, :end] if attention_mask is not None else None,
            position_ids=positions[:, start:end] if positions is not None else None,
        )
        if label == "decode":
            step = "prefill" if number == 1 else f"decode step {number - 1}"
        else:
            step = f"{label} {number} of {len(sizes)} (sizes {list(sizes)})"
        where = f"{step} (positions {start}..{end - 1}, {end} tokens seen)"
        follower.fed(size, where=where)
        if compare:
            compare.logits_close(logits, reference[:, start:end], where=where, positions=list(range(start, end)))
        start = end


def static_windows(model, window: int) -> list[Window]:
    """What each layer of a static cache must hold: the last W positions (sliding) or every position (full)."""
    return [Window(window if sliding else None) for sliding in adapter.sliding_layers(model.config)]


def follow(model, cache, sequence, windows, *, attention_mask=None, images=None) -> CacheFollower:
    """A follower of `cache` over `sequence` (with its `images`, if any), with the oracle computed for it."""
    oracle, logits = oracle_pass(model, sequence, attention_mask=attention_mask,
                                 position_ids=positions_from_mask(attention_mask), images=images)
    tolerance = checkpoint_tolerance(oracle, model.dtype)
    indistinct = indistinct_positions(oracle, tolerance, attention_mask)
    if indistinct is not None:
        pytest.skip(indistinct)
    return CacheFollower(cache, oracle, windows, adapter.sliding_layers(model.config), tolerance,
                         attention_mask=attention_mask, recomputed_logits=logits)


class _PerturbedLayerDone(Exception):
    """Ends a perturbed pass once the perturbed layer's output is taken: the layers after it cannot change it."""


@torch.no_grad()
def attention_output_changes(model, run, *, query: int, perturbed: list[int]) -> dict[int, dict[int, float]]:
    """For each layer, and each position p in `perturbed`: the max abs change of the layer's attention output at
    position `query` when that layer's input at p is negated (inside the layer, so nothing else it sees changes).
    `run()` makes one forward pass of `model` over the positions (a fresh cache each time if it uses one); one
    unperturbed pass gives every layer's baseline, then one pass per layer and position, which stops at that
    layer."""
    modules = _attention_modules(model)
    latest: dict[int, torch.Tensor] = {}  # each layer's output at `query` in the last pass
    negated: list[int] = []
    perturbed_layer: list[int] = []  # the layer whose input is negated in this pass (none in the baseline)

    def take_output(module, _args, output):
        latest[module.layer_idx] = output[0][:, query].double()
        if perturbed_layer and module.layer_idx == perturbed_layer[0]:
            raise _PerturbedLayerDone

    def negate_one_position(_module, args, kwargs):
        hidden = kwargs["hidden_states"].clone()
        hidden[:, negated[-1]] = -hidden[:, negated[-1]]
        return args, kwargs | {"hidden_states": hidden}

    handles = [module.register_forward_hook(take_output) for module in modules]
    try:
        run()
        baselines = dict(latest)
        changes: dict[int, dict[int, float]] = {}
        for module in modules:
            layer = module.layer_idx
            negation = module.register_forward_pre_hook(negate_one_position, with_kwargs=True)
            perturbed_layer.append(layer)
            try:
                for position in perturbed:
                    negated.append(position)
                    try:
                        run()
                    except _PerturbedLayerDone:
                        pass
                    else:
                        raise RuntimeError(f"a pass of run() ended without layer {layer}'s attention: "
                                           "attention_output_changes needs one forward pass through every layer")
                    changes.setdefault(layer, {})[position] = float((latest[layer] - baselines[layer]).abs().max())
            finally:
                negation.remove()
                perturbed_layer.clear()
    finally:
        for handle in handles:
            handle.remove()
    return changes
