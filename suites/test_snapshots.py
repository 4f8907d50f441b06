"""Property 5: reference logits recorded once still hold.

Equality with recomputation cannot see a change that moves the cached path and recomputation the same way (a
changed mask, RoPE or scaling). These tests compare every release, dtype, device and attention implementation
with logits recorded once, on the newest release in float32 on CPU with eager attention, and kept as syrupy
snapshots under fixtures/snapshots/ (cache_conformance/snapshots.py): for a few fixed prompts to the embedded
checkpoint, the prefill logits and the logits of DECODE_STEPS decode steps with the static cache, far past the
sliding window. Each dtype compares with its tolerance against a float32 reference
(tolerances.reference_tolerance_for); in float32 each step's greedy choice must also be the recorded token.

Record, or re-record after a deliberate change (with the multimodal snapshots):
    pytest suites/test_snapshots.py suites/test_multimodal.py -k reference -p no:xdist --snapshot-update
"""

import pytest
import torch

from cache_conformance import checkpoint
from cache_conformance.snapshots import SnapshotFileError, greedy_choices, recorded, reference_run

# Fixed lengths, not read from the model: the embedded checkpoint's window is 8, and a model whose window changed
# must be compared on the same sequences (and fail on its logits).
PROMPT_LENGTHS = {"prompt-5-shorter-than-window": 5, "prompt-8-equal-to-window": 8, "prompt-13-longer-than-window": 13}
DECODE_STEPS = 20


@pytest.fixture(autouse=True)
def embedded_checkpoint_only(checkpoint_path):
    if checkpoint_path != checkpoint.EMBEDDED:
        pytest.skip("reference logits are recorded for the embedded checkpoint only")


@pytest.mark.parametrize("prompt_length", PROMPT_LENGTHS.values(), ids=PROMPT_LENGTHS.keys())
def test_logits_match_the_recorded_reference(model, recorded_tokens, logits_snapshot, prompt_length):
    prompt = recorded_tokens(1, prompt_length)  # --seed changes every other suite's tokens, not the recorded ones
    try:
        reference = None if logits_snapshot.update_snapshots else recorded(logits_snapshot)
    except SnapshotFileError as error:
        pytest.fail(str(error), pytrace=False)
    fits = reference is not None and reference["tokens"].shape == (prompt_length + DECODE_STEPS,)
    # Decode the recorded tokens where there are some, greedily otherwise (a misfit then fails on its shape).
    run = reference_run(model, prompt, DECODE_STEPS, reference["tokens"][prompt_length:] if fits else None)

    assert logits_snapshot == run

    # This run's greedy choice at each step against the token the reference chose (when recording, the run feeds
    # its own choices: nothing to compare).
    if logits_snapshot.extension.tolerance.greedy_tokens_identical and reference is not None:
        chosen, fed = greedy_choices(run), run["tokens"][prompt_length:]
        for step in torch.nonzero(chosen != fed).flatten().tolist()[:1]:
            pytest.fail(
                f"decode step {step + 1} (position {prompt_length + step}): the logits before it rank token "
                f"{int(chosen[step])} first, the reference chose {int(fed[step])}",
                pytrace=False,
            )
