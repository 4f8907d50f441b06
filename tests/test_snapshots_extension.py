"""The tensor snapshot extension: exact storage, tolerant and strict comparison, clear reports, and the workflow
(regeneration byte for byte, a truncated file, --snapshot-update under xdist) on the real snapshot suite."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cache_conformance.oracles.snapshots import (
    SNAPSHOTS,
    UPDATE_COMMAND,
    SnapshotFileError,
    TensorSnapshotExtension,
    provenance,
    read_tensors,
    recorded_with,
)
from cache_conformance.oracles.tolerances import Tolerance
from cache_conformance.plugin import checkpoint

ROOT = Path(__file__).resolve().parent.parent
RECORDED = sorted((SNAPSHOTS / "test_snapshots").glob("*.safetensors"))
REFERENCE_SLICE = ["suites/test_snapshots.py", "--device", "cpu", "-k", "float32-cpu-eager"]
EXTENSION = TensorSnapshotExtension.configured(Tolerance(atol=0.1, rtol=0.0, greedy_tokens_identical=False),
                                               SNAPSHOTS, UPDATE_COMMAND)


def compared(actual: dict, expected: dict):
    """(matches, failure lines, metrics) of comparing two tensor dicts through the extension's bytes."""
    extension = EXTENSION()
    matches = extension.matches(
        serialized_data=extension.serialize(actual), snapshot_data=extension.serialize(expected)
    )
    return matches, list(extension.diff_lines(None, None)), extension.metrics


def test_bfloat16_is_stored_exactly_and_serialisation_is_deterministic():
    values = {"logits": torch.randn(3, 5, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)}
    data = EXTENSION().serialize(values)
    assert data == EXTENSION().serialize({"logits": values["logits"].clone()})
    assert torch.equal(read_tensors(data, "test data")["logits"], values["logits"])
    assert recorded_with(data) == provenance() and "CPU capability" in provenance()


def test_within_tolerance_matches_and_records_the_worst_difference():
    matches, _, metrics = compared({"x": torch.tensor([1.0, 2.05])}, {"x": torch.tensor([1.0, 2.0])})
    assert matches
    assert metrics["max_abs_diff"] == pytest.approx(0.05, rel=1e-4) and metrics["atol"] == 0.1


def test_a_mismatch_reports_count_share_errors_and_worst_positions():
    expected = torch.zeros(4, 10)
    actual = expected.clone()
    actual[2, 7], actual[3, 1] = 1.5, -0.4
    matches, lines, metrics = compared({"decode": actual}, {"decode": expected})
    assert not matches and metrics["max_abs_diff"] == 1.5
    assert lines[0].startswith("decode: 2 of 40 elements (5.00%) differ beyond atol 0.1 + rtol 0*|expected|")
    assert "max abs diff 1.5 at [2, 7]; rows [2, 3]" in lines[0]
    assert "mean 0.0475" in lines[1]  # (1.5 + 0.4) / 40
    assert lines[3].startswith("  worst: [2, 7] got 1.5, expected 0; [3, 1] got -0.4, expected 0")


def test_nan_where_the_snapshot_has_a_number_is_a_difference():
    matches, lines, _ = compared({"x": torch.tensor([float("nan"), 1.0])}, {"x": torch.tensor([0.0, 1.0])})
    assert not matches and "max abs diff inf at [0]" in lines[0]


@pytest.mark.parametrize(
    "actual, message",
    [
        ({"x": torch.zeros(2, dtype=torch.float64)},
         "x: dtype torch.float64, shape (2,) != recorded torch.float32, (2,)"),
        ({"x": torch.zeros(3)}, "x: dtype torch.float32, shape (3,) != recorded torch.float32, (2,)"),
        ({"y": torch.zeros(2)}, "tensor names ['y'] != recorded ['x']"),
    ],
    ids=["dtype", "shape", "names"],
)
def test_dtype_shape_and_names_are_strict(actual, message):
    matches, lines, _ = compared(actual, {"x": torch.zeros(2)})
    assert not matches and lines == [message]


def test_integers_must_be_equal():
    matches, lines, _ = compared({"tokens": torch.tensor([5, 7])}, {"tokens": torch.tensor([5, 6])})
    assert not matches and lines[0].startswith("tokens: 1 of 2 elements (50.00%) differ")


def test_an_unreadable_snapshot_is_a_one_line_error_naming_the_rewrite_command():
    data = EXTENSION().serialize({"x": torch.zeros(8)})
    with pytest.raises(SnapshotFileError) as error:
        read_tensors(data[: len(data) // 2], "snapshot file some.safetensors")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("snapshot file some.safetensors is unreadable (")
    assert message.endswith("rewrite it with: pytest suites/test_snapshots.py suites/test_multimodal.py -k reference -p no:xdist --snapshot-update")


def test_snapshot_update_regenerates_the_committed_files_byte_for_byte(run_suites, tmp_path):
    assert RECORDED, "no committed snapshots under fixtures/snapshots/test_snapshots"
    made_with = {recorded_with(path.read_bytes()) for path in RECORDED}
    assert len(made_with) == 1, f"the committed snapshots were recorded with different setups: {made_with}"
    if made_with != {provenance()}:
        # tox -e tests pins transformers and torch (constraints/project-tests.txt): only the CPU can differ.
        pytest.skip(f"the committed snapshots were recorded with {made_with.pop()}, this is {provenance()}: float32 "
                    "logits are bit-exact only for the same releases and CPU kernels (the snapshot suite still "
                    "compares them within tolerance)")
    code, output, _ = run_suites(*REFERENCE_SLICE, "--snapshot-update", f"--snapshot-dirname={tmp_path}")
    assert code == 0, output
    regenerated = sorted((tmp_path / "test_snapshots").glob("*.safetensors"))
    assert [p.name for p in regenerated] == [p.name for p in RECORDED]
    for new, committed in zip(regenerated, RECORDED):
        assert new.read_bytes() == committed.read_bytes(), f"{new.name} differs from the committed snapshot"


def test_a_truncated_snapshot_fails_with_one_line_naming_the_file_and_the_command(run_suites, tmp_path):
    copied = tmp_path / "test_snapshots"
    copied.mkdir()
    for path in RECORDED:
        (copied / path.name).write_bytes(path.read_bytes())
    victim = copied / RECORDED[0].name
    victim.write_bytes(victim.read_bytes()[:1000])
    code, output, results = run_suites(*REFERENCE_SLICE, f"--snapshot-dirname={tmp_path}")
    assert code == 1, output
    failed = [t for t in results["tests"] if t["outcome"] == "failed"]
    assert len(failed) == 1, output
    message = failed[0]["message"]
    assert "\n" not in message and str(victim) in message and "is unreadable" in message, message
    assert "rewrite it with: pytest suites/test_snapshots.py suites/test_multimodal.py -k reference -p no:xdist --snapshot-update" in message
    assert "Traceback" not in output


def test_snapshot_update_is_refused_under_xdist():
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", *REFERENCE_SLICE, "--snapshot-update"],
        cwd=ROOT, capture_output=True, text=True, env=os.environ | {"PYTHONHASHSEED": "0"}, check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 4, output
    assert "--snapshot-update is refused under pytest-xdist (-n): record in one process" in output
    assert "Traceback" not in output


def test_another_seed_leaves_the_recorded_prompts_alone(run_suites):
    code, output, _ = run_suites(*REFERENCE_SLICE, "--seed", "7")
    assert code == 0, output


OTHER_SLICE = ["suites/test_snapshots.py", "--device", "cpu", "-k", "float32-cpu-eager",
               f"--checkpoint={checkpoint.OTHER_EMBEDDED}"]


def test_another_checkpoints_references_are_recorded_under_its_key_then_compared(run_suites, tmp_path):
    folder = tmp_path / "references"
    code, output, _ = run_suites(*OTHER_SLICE, f"--reference-folder={folder}", "--snapshot-update")
    assert code == 0, output
    kept = folder / checkpoint.key(checkpoint.OTHER_EMBEDDED) / "test_snapshots"
    assert len(list(kept.glob("*.safetensors"))) == 3, output
    code, output, results = run_suites(*OTHER_SLICE, f"--reference-folder={folder}")
    assert code == 0, output
    assert [t["outcome"] for t in results["tests"]] == ["passed"] * 3


def test_another_checkpoint_without_recorded_references_fails_with_the_record_command(run_suites, tmp_path):
    folder = tmp_path / "empty"
    code, output, results = run_suites(*OTHER_SLICE, f"--reference-folder={folder}")
    assert code == 1, output
    message = results["tests"][0]["message"]
    assert "\n" not in message and message.startswith("Failed: no reference logits recorded at"), message
    assert message.endswith(f"--snapshot-update --checkpoint={checkpoint.OTHER_EMBEDDED} --reference-folder={folder}")
    assert "Traceback" not in output and "During handling" not in output


def test_another_checkpoint_without_a_reference_folder_skips_saying_how_to_record(run_suites):
    code, output, results = run_suites(*OTHER_SLICE, "-rs")
    assert code == 0, output
    assert {t["outcome"] for t in results["tests"]} == {"skipped"}
    assert "choose a folder for them with --reference-folder=DIR" in output


def test_the_key_changes_with_any_weight_byte_and_with_the_config(tmp_path):
    copy = tmp_path / "checkpoint"
    shutil.copytree(checkpoint.OTHER_EMBEDDED, copy)
    first = checkpoint.key(copy)
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    second = checkpoint.key(copy)
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    assert len({first, second, checkpoint.key(copy)}) == 3
    assert first.startswith("checkpoint-")
