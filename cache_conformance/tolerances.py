"""How close a cached result must be to recomputation without a cache, per (dtype, device).

A value passes when |actual - expected| <= atol + rtol * |expected|, elementwise (torch.testing's rule).

The two paths differ only in the order of floating-point reductions (the static cache hands attention a
longer, partly masked key buffer), so the tolerance covers rounding, not behaviour. The numbers come from
benchmarks/calibrate_tolerances.py (300 random chunk schedules on the embedded checkpoint, transformers 5.23,
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
