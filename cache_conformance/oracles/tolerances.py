"""How close a cached result must be to recomputation without a cache, per (dtype, device).

A value passes when |actual - expected| <= atol + rtol * |expected|, elementwise (torch.testing's rule).

The two paths differ only in the order of floating-point reductions (the static cache hands attention a
longer, partly masked key buffer), so the tolerance covers rounding, not behaviour. The numbers come from
benchmarks/calibrate_tolerances.py (random chunk schedules, 200 by default, on the embedded checkpoint, transformers 5.23,
torch 2.13 CPU), whose logits have a standard deviation of about 1; one token lost or misplaced moves them by
1 to 5 (measured with the early-eviction fault).
- float32: largest difference 2.6e-5 (eager and sdpa). transformers' own generate comparisons use 1e-5, which
  this checkpoint's sharp attention exceeds; 1e-4 keeps a 4x margin, and keys rounded to bfloat16 (a real bug
  class) still move the logits by 1e-2.
- bfloat16: largest 0.15 (eager), 0.35 (sdpa, 99th percentile 0.30). 0.6 is 1.7x the largest, and below the
  smallest lost-token effect (1.0).
- float16: largest 0.018 (eager), 0.059 (sdpa); 0.12 is 2x the largest.
CUDA and MPS use the CPU numbers until measured there (their kernels reduce in other orders).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    greedy_tokens_identical: bool  # whether argmax tokens must agree exactly, not only logits within tolerance

    def describe(self) -> str:
        return f"atol {self.atol:g} + rtol {self.rtol:g}*|expected|"


_CPU = {
    "float32": Tolerance(atol=1e-4, rtol=1e-5, greedy_tokens_identical=True),
    "bfloat16": Tolerance(atol=0.6, rtol=0.0, greedy_tokens_identical=False),
    "float16": Tolerance(atol=0.12, rtol=0.0, greedy_tokens_identical=False),
}

TOLERANCES: dict[tuple[str, str], Tolerance] = {
    (dtype, device): tolerance for device in ("cpu", "cuda", "mps") for dtype, tolerance in _CPU.items()
}


def tolerance_for(dtype_name: str, device: str) -> Tolerance:
    return TOLERANCES[(dtype_name, device)]


# Against the float32 CPU reference recorded once (suites/test_snapshots.py) a run in another dtype differs by its
# whole rounding, not only by the order of reductions. benchmarks/calibrate_snapshot_tolerances.py (30 prompts,
# prefill and 20 decode steps replaying the reference's tokens, transformers 5.23, torch 2.13 CPU) measured the
# largest per-prompt max abs diff: float32 1.1e-5 (sdpa), bfloat16 0.46 (eager) and 0.56 (sdpa), float16 0.071;
# a sliding window one position wider moves the logits by at least 2.1 (median 3.2), in float32 and bfloat16.
# - float32: the float32 tolerance above (9x the largest).
# - bfloat16: 1.0 is 1.8x the largest and half the smallest effect of the one-wider window; 0.6 left 1.1x.
# - float16: 0.12, as above, is 1.7x the largest.
_REFERENCE_CPU = {
    "float32": _CPU["float32"],
    "bfloat16": Tolerance(atol=1.0, rtol=0.0, greedy_tokens_identical=False),
    "float16": _CPU["float16"],
}

REFERENCE_TOLERANCES: dict[tuple[str, str], Tolerance] = {
    (dtype, device): tolerance for device in ("cpu", "cuda", "mps") for dtype, tolerance in _REFERENCE_CPU.items()
}


def reference_tolerance_for(dtype_name: str, device: str) -> Tolerance:
    """How close a run in this dtype and device must be to the float32 CPU reference logits."""
    return REFERENCE_TOLERANCES[(dtype_name, device)]


# The quantized cache (4-bit optimum-quanto, groups of 16, 2 positions kept in full precision) against recomputation:
# the Pearson correlation, over the vocabulary, of each decode step's logits with recomputation's. 4-bit keys move
# single logits by up to 1.9 and the mean absolute difference by up to 1.0, as much as a cache that lost the prompt
# does, so neither elementwise nor mean differences can tell noise from garbage on this model; the correlation can.
# Measured on 4.57.6, float32 and bfloat16, 8 prompts each on the embedded checkpoint: quantized 0.87-0.98 at every
# step; a cache that lost the prompt (recomputation without it) 0.12-0.34; recomputation without the sliding window
# -0.18-0.30. The bound sits between them.
QUANTIZED_MIN_CORRELATION = 0.75
