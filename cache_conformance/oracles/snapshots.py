"""Reference logits kept as syrupy snapshots: the run that is recorded, and the syrupy extension that stores it.

A snapshot is one safetensors file (bfloat16 or float32 stored bit for bit, one file per snapshot so pytest-xdist
workers never share one) holding named tensors. Comparison is strict on names, shapes and dtypes; floating
tensors must agree within a tolerance (|actual - expected| <= atol + rtol * |expected|), integer tensors exactly.
A mismatch is reported with pytest-regressions-style statistics.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from syrupy.extensions.single_file import SingleFileSnapshotExtension

from cache_conformance import ROOT, adapter
from cache_conformance.oracles.decoding import call
from cache_conformance.oracles.tolerances import Tolerance
from cache_conformance.plugin import checkpoint
from cache_conformance.plugin.targets import Target

SNAPSHOTS = ROOT / "fixtures" / "snapshots"
REFERENCE_TARGET = Target("float32", "cpu", "eager")  # the target that records; every other compares with it
UPDATE_COMMAND = "pytest suites/test_snapshots.py suites/test_multimodal.py -k reference -p no:xdist --snapshot-update"
SYRUPY_DEFAULT_DIRNAME = "__snapshots__"
WORST_SHOWN = 5


class SnapshotFileError(Exception):
    """A snapshot file that cannot be read; the message is one line naming the file and how to rewrite it."""


@torch.no_grad()
def reference_run(model, prompt: torch.Tensor, steps: int, continuation: torch.Tensor | None = None, *,
                  images=None) -> dict:
    """Prefill `prompt` (shape (1, P)) into a static cache, with its `images` if any, then decode `steps` tokens
    one at a time.

    The decoded tokens are the greedy choices, or `continuation` (the tokens a recorded reference chose) when
    given: a bfloat16 run that ranks two near-equal logits the other way must still be compared on the
    reference's sequence, since one different token changes every later step.
    Returns CPU tensors: "tokens" (P + steps,), "prefill" logits (P, vocab), "decode" logits (steps, vocab),
    row i of "decode" being decode step i + 1 (position P + i); logits in float32.
    """
    cache = adapter.make_static_cache(model, batch_size=1, capacity=prompt.shape[1] + steps)
    logits = call(model, prompt, images=images, cache=cache)
    prefill = logits[0]
    sequence, decoded = prompt, []
    for step in range(steps):
        if continuation is None:
            next_token = logits[:, -1:].argmax(-1)
        else:
            next_token = continuation[step : step + 1].view(1, 1).to(prompt.device)
        logits = adapter.forward(model, next_token, cache=cache, start=sequence.shape[1])
        sequence = torch.cat([sequence, next_token], dim=1)
        decoded.append(logits[0])
    return {
        "tokens": sequence[0].cpu(),
        "prefill": prefill.float().cpu(),
        "decode": torch.cat(decoded).float().cpu(),
    }


def reference_folder(checkpoint_path: Path, chosen: Path | None, committed_for: Path,
                     key: Callable[[Path], str] = checkpoint.key) -> Path | None:
    """Where the reference logits of `checkpoint_path` are kept: <chosen>/<key(checkpoint)>/ when the user chose a
    folder (--reference-folder), fixtures/snapshots/ when it is `committed_for` (the embedded checkpoint whose
    references are committed for the test), else None (none are kept). `key`: checkpoint.key, or a memo of it (it
    reads every weight)."""
    if chosen is not None:
        return chosen / key(checkpoint_path)
    return SNAPSHOTS if checkpoint_path == committed_for else None


def update_command(checkpoint_path: Path, chosen: Path | None) -> str:
    """The command that records (or re-records) the reference logits kept in reference_folder(...)."""
    if chosen is None:
        return UPDATE_COMMAND
    return (f"{UPDATE_COMMAND} --checkpoint={checkpoint_path} --reference-folder={chosen}")


def provenance() -> str:
    """What this process records with. Float32 CPU logits are the same bit for bit only for the same transformers,
    torch and CPU kernels (the same run on AVX2 and AVX-512 machines differs in the last bits), so every snapshot
    file says what made it (safetensors metadata "recorded_with")."""
    import transformers

    return (f"transformers {transformers.__version__}, torch {torch.__version__}, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}")


def recorded_with(data: bytes) -> str:
    """The provenance a snapshot file's bytes carry ("" for a file without it)."""
    (header_length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + header_length]).get("__metadata__", {}).get("recorded_with", "")


def greedy_choices(run: dict) -> torch.Tensor:
    """The token each step's logits rank first: what greedy decoding of this run would have fed next."""
    return torch.cat([run["prefill"][-1:], run["decode"][:-1]]).argmax(-1)


@dataclass(frozen=True)
class Mismatch:
    """How one tensor differs from its snapshot (pytest-regressions' ndarrays_regression statistics)."""

    name: str
    shape: tuple
    differing: int  # elements out of tolerance
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_diff: float
    mean_rel_diff: float
    worst: list  # [(index, got, expected)], largest difference first
    rows: list  # indices along the first dimension that hold an element out of tolerance

    @property
    def total(self) -> int:
        return int(torch.Size(self.shape).numel())

    def lines(self, tolerance: Tolerance) -> Iterator[str]:
        yield (
            f"{self.name}: {self.differing} of {self.total} elements ({100 * self.differing / self.total:.2f}%) "
            f"differ beyond {tolerance.describe()}; max abs diff {self.max_abs_diff:.3g} at {self.worst[0][0]}; "
            f"rows {self.rows[:12]}"
        )
        yield f"  abs diff: max {self.max_abs_diff:.4g}, mean {self.mean_abs_diff:.4g}"
        yield f"  rel diff: max {self.max_rel_diff:.4g}, mean {self.mean_rel_diff:.4g}"
        yield "  worst: " + "; ".join(
            f"{index} got {got:.5g}, expected {expected:.5g}" for index, got, expected in self.worst
        )


def compare_tensors(
    actual: torch.Tensor, expected: torch.Tensor, tolerance: Tolerance, name: str
) -> tuple[float, Mismatch | None]:
    """(max abs diff, None) when `actual` matches `expected`, else (max abs diff, how they differ).

    Callers check shape and dtype first. Integer tensors must be equal; NaN or inf differing from the snapshot
    counts as an infinite difference.
    """
    if actual.numel() == 0:
        return 0.0, None
    a, e = actual.double(), expected.double()
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    diff = torch.where(same, torch.zeros_like(a), (a - e).abs().nan_to_num(nan=float("inf")))
    allowed = tolerance.atol + tolerance.rtol * e.abs() if actual.is_floating_point() else torch.zeros_like(e)
    bad = diff > allowed
    max_abs = float(diff.max())
    if not bad.any():
        return max_abs, None
    rel = diff / e.abs().clamp(min=torch.finfo(torch.float64).tiny)
    order = diff.flatten().argsort(descending=True)[:WORST_SHOWN]
    worst = []
    for flat in order.tolist():
        index = [int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)]
        worst.append((index, float(a.flatten()[flat]), float(e.flatten()[flat])))
    rows = sorted({int(i) for i in torch.nonzero(bad)[:, 0]}) if bad.dim() else [0]
    return max_abs, Mismatch(
        name=name,
        shape=tuple(actual.shape),
        differing=int(bad.sum()),
        max_abs_diff=max_abs,
        mean_abs_diff=float(diff.nan_to_num(posinf=0.0).mean()),
        max_rel_diff=float(rel.max()),
        mean_rel_diff=float(rel.nan_to_num(posinf=0.0).mean()),
        worst=worst,
        rows=rows,
    )


def read_tensors(data: bytes, source: str, command: str = UPDATE_COMMAND) -> dict[str, torch.Tensor]:
    """The tensors of a snapshot file's bytes; a SnapshotFileError names `source` and the `command` that rewrites
    it."""
    try:
        return load_tensors(data)
    except (SafetensorError, ValueError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SnapshotFileError(f"{source} is unreadable ({reason}); rewrite it with: {command}") from None


class TensorSnapshotExtension(SingleFileSnapshotExtension):
    """One safetensors file per snapshot under <reference folder>/<test file>/, compared within `tolerance`.

    Snapshot names leave out the target (dtype, device, attention): every target compares against the one
    reference recorded on float32 CPU. Use `configured` to get the extension for a target's tolerance and a
    checkpoint's reference folder.
    """

    file_extension = "safetensors"
    tolerance = Tolerance(atol=0.0, rtol=0.0, greedy_tokens_identical=True)
    folder = SNAPSHOTS  # the checkpoint's reference folder (snapshots.reference_folder)
    command = UPDATE_COMMAND  # the command that records into `folder`

    def __init__(self):
        self.metrics: dict = {}  # the latest comparison's figures; a test may bind this to its results metrics
        self.mismatches: list[str] = []  # the latest comparison's failure lines

    def serialize(self, data: dict[str, torch.Tensor], **_) -> bytes:
        return save_tensors({name: tensor.detach().cpu().contiguous() for name, tensor in data.items()},
                            metadata={"recorded_with": provenance()})

    def matches(self, *, serialized_data: bytes, snapshot_data: bytes) -> bool:
        actual = load_tensors(serialized_data)
        try:
            expected = read_tensors(snapshot_data, "the recorded snapshot", self.command)
        except SnapshotFileError as error:  # unreadable: a mismatch, so that --snapshot-update rewrites it
            self.mismatches = [str(error)]
            return False
        self.mismatches = []
        if actual.keys() != expected.keys():
            self.mismatches.append(f"tensor names {sorted(actual)} != recorded {sorted(expected)}")
            return False
        worst = 0.0
        for name in sorted(expected):
            got, want = actual[name], expected[name]
            if got.dtype != want.dtype or got.shape != want.shape:
                self.mismatches.append(
                    f"{name}: dtype {got.dtype}, shape {tuple(got.shape)} != recorded {want.dtype}, {tuple(want.shape)}"
                )
                continue
            max_abs, mismatch = compare_tensors(got, want, self.tolerance, name)
            worst = max(worst, max_abs)
            if mismatch is not None:
                self.mismatches.extend(mismatch.lines(self.tolerance))
                # the first mismatching tensor is the evidence (the test fails on this comparison)
                self.metrics.setdefault("evidence", {
                    "kind": "snapshot", "where": name, "at": list(mismatch.worst[0][0]),
                    "differing": mismatch.differing, "difference": mismatch.max_abs_diff, "limit": self.tolerance.atol,
                })
        self.metrics.update(max_abs_diff=worst, atol=self.tolerance.atol, rtol=self.tolerance.rtol)
        return not self.mismatches

    def diff_lines(self, serialized_data, snapshot_data) -> Iterator[str]:
        yield from self.mismatches or ["no recorded snapshot to compare with"]

    @classmethod
    def dirname(cls, *, test_location) -> str:
        """<reference folder>/<test file>/, or <folder>/<test file>/ when --snapshot-dirname names another folder
        than syrupy's default (the project's tests record into a temporary one)."""
        if str(cls.snapshot_dirname) == SYRUPY_DEFAULT_DIRNAME:
            return str(cls.folder / test_location.basename)
        return str(Path(test_location.filepath).parent / cls.snapshot_dirname / test_location.basename)

    @classmethod
    def get_snapshot_name(cls, *, test_location, index=0) -> str:
        name = super().get_snapshot_name(test_location=test_location, index=index)
        target = test_location.item.callspec.params.get("target")
        if target is None:
            return name
        return name.replace(f"[{target.id}]", "", 1).replace(f"{target.id}-", "", 1)

    @classmethod
    def matches_test_location(cls, *, test_location, snapshot_location: str) -> bool:
        """Whether `snapshot_location` is this test's file (its name without the target)."""
        return Path(snapshot_location) == Path(cls.get_location(test_location=test_location, index=0))

    @classmethod
    @functools.cache
    def configured(cls, tolerance: Tolerance, folder: Path, command: str) -> type[TensorSnapshotExtension]:
        """The extension comparing within `tolerance` with the references in `folder`, recorded by `command` (one
        class per setting: syrupy instantiates classes)."""
        return type(cls.__name__, (cls,), {"tolerance": tolerance, "folder": folder, "command": command})


def recorded(snapshot) -> dict[str, torch.Tensor]:
    """The tensors recorded for a syrupy `snapshot` assertion using this extension. SnapshotFileError, with the
    command that records them, when there are none or they cannot be read."""
    extension = snapshot.extension
    location = extension.get_location(test_location=snapshot.test_location, index=snapshot.index)
    if not Path(location).exists():
        raise SnapshotFileError(f"no reference logits recorded at {_shown(location)}; record them, on the release "
                                f"you trust, with: {extension.command}")
    return read_tensors(Path(location).read_bytes(), f"snapshot file {_shown(location)}", extension.command)


def reference_for(snapshot) -> dict[str, torch.Tensor] | None:
    """What a test compares with: the recorded tensors, or None while recording (--snapshot-update on the target
    that records). A missing or unreadable recording fails the test with one line saying how to record it."""
    if snapshot.update_snapshots:
        return None
    try:
        return recorded(snapshot)
    except SnapshotFileError as error:
        problem = str(error)
    pytest.fail(problem, pytrace=False)


def _shown(location: str) -> str:
    path = Path(location)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
