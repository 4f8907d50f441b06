"""Property 5: reference logits recorded once still hold.

Equality with recomputation cannot see a change that moves the cached path and recomputation the same way (a
changed mask, RoPE or scaling). These tests compare every release, dtype, device and attention implementation
with logits recorded once, in float32 on CPU with eager attention, and kept as syrupy snapshots
(cache_conformance/oracles/snapshots.py): for three prompts (shorter than, as long as and longer than the window W that the
checkpoint's config.json states), the prefill logits and the logits of DECODE_STEPS decode steps with the static
cache. Each dtype compares with its tolerance against a float32 reference (tolerances.reference_tolerance_for); in
float32 each step's greedy choice must also be the recorded token.

The embedded checkpoint's references are committed under fixtures/snapshots/, recorded on the newest release.
Record, or re-record after a deliberate change (with the multimodal snapshots):
    pytest suites/test_snapshots.py suites/test_multimodal.py -k reference -p no:xdist --snapshot-update
Any other checkpoint's are kept in a folder you choose, under a key made from its config and weights: add
--checkpoint=PATH --reference-folder=DIR to that command on the release you trust, and compare on another with
    pytest suites/test_snapshots.py suites/test_multimodal.py -k reference --checkpoint=PATH --reference-folder=DIR
"""

import pytest
import torch

from cache_conformance.oracles.snapshots import greedy_choices, reference_for, reference_run
from cache_conformance.plugin import checkpoint

# Prompt lengths as offsets from the window the checkpoint's config.json states, not the loaded model's: a release
# that reads the window differently must be compared on the same sequences (and fail on its logits). The embedded
# checkpoint's W is 8: prompts of 5, 8 and 13 tokens.
PROMPTS = {"prompt-shorter-than-window": -3, "prompt-equal-to-window": 0, "prompt-longer-than-window": 5}
DECODE_STEPS = 20


@pytest.mark.parametrize("offset", PROMPTS.values(), ids=PROMPTS.keys())
def test_logits_match_the_recorded_reference(model, recorded_tokens, logits_snapshot, checkpoint_path, offset):
    prompt_length = max(1, checkpoint.text_window(checkpoint_path) + offset)
    prompt = recorded_tokens(1, prompt_length)  # --seed changes every other suite's tokens, not the recorded ones
    reference = reference_for(logits_snapshot)
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
