"""Measure how far each dtype's logits are from a float32 reference run, and how far a one-wider window moves them.

Run:  python benchmarks/calibrate_snapshot_tolerances.py [--prompts 30] [--device cpu]

For random prompts (lengths 5, 8 and 13 in turn, as in suites/test_snapshots.py) it records the float32 eager
run the snapshot suite records (prefill, then 20 greedy decode steps with the static cache), then replays the
same tokens in every (dtype, attention) and prints the largest and median per-prompt max abs difference. It
also prints the smallest per-prompt difference that the `sliding-mask-one-wider` fault causes, which a tolerance
must stay below. These figures are where tolerances.reference_tolerance_for comes from.
"""

import argparse
import statistics

import pytest
import torch

from cache_conformance import adapter
from cache_conformance.oracles.snapshots import reference_run
from cache_conformance.plugin import checkpoint
from cache_conformance.plugin.targets import DTYPES
from cache_conformance.selftest import faults

PROMPT_LENGTHS = (5, 8, 13)
DECODE_STEPS = 20


def max_abs_diff(run: dict, reference: dict) -> float:
    return max(float((run[part] - reference[part]).abs().max()) for part in ("prefill", "decode"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = checkpoint.EMBEDDED
    generator = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(3, 256, (1, PROMPT_LENGTHS[i % len(PROMPT_LENGTHS)]), generator=generator)
        for i in range(args.prompts)
    ]
    reference_model = adapter.load_model(path, dtype=torch.float32, device="cpu", attn_implementation="eager")
    references = [reference_run(reference_model, prompt, DECODE_STEPS) for prompt in prompts]
    print(f"transformers {adapter.INSTALLED}, torch {torch.__version__}, device {args.device}, {args.prompts} prompts, "
          f"{DECODE_STEPS} decode steps; per-prompt max abs diff against float32 CPU eager")

    def measure(dtype, attn) -> list[float]:
        model = adapter.load_model(path, dtype=dtype, device=args.device, attn_implementation=attn)
        diffs = []
        for prompt, reference in zip(prompts, references):
            replayed = reference["tokens"][prompt.shape[1] :]  # the reference's greedy tokens
            diffs.append(max_abs_diff(reference_run(model, prompt.to(args.device), DECODE_STEPS, replayed), reference))
        return diffs

    for dtype_name, dtype in DTYPES.items():
        for attn in ("eager", "sdpa"):
            diffs = measure(dtype, attn)
            print(f"{dtype_name:9} {attn:6} largest {max(diffs):.3g}  median {statistics.median(diffs):.3g}")
    with pytest.MonkeyPatch.context() as monkeypatch:
        faults.apply("sliding-mask-one-wider", monkeypatch)
        for dtype_name in ("float32", "bfloat16"):
            diffs = measure(DTYPES[dtype_name], "eager")
            print(f"{dtype_name:9} eager  under sliding-mask-one-wider: smallest {min(diffs):.3g}  "
                  f"median {statistics.median(diffs):.3g}")


if __name__ == "__main__":
    main()
