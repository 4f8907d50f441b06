"""Comparisons that fail with the numbers a reader needs, and remember the worst difference they saw."""

from __future__ import annotations

import torch

from cache_conformance.grading import evidence
from cache_conformance.oracles.tolerances import Tolerance


class Comparison:
    """Compares logits for one test and keeps its metrics (worst difference, tolerance) for the results file."""

    def __init__(self, tolerance: Tolerance):
        self.tolerance = tolerance
        self.max_abs_diff = 0.0
        self.compared = 0

    @property
    def metrics(self) -> dict:
        return {
            "max_abs_diff": self.max_abs_diff,
            "atol": self.tolerance.atol,
            "rtol": self.tolerance.rtol,
            "comparisons": self.compared,
        }

    def logits_close(self, actual: torch.Tensor, expected: torch.Tensor, *, where: str, positions=None) -> None:
        """Assert logits of shape (batch, seq, vocab) agree; `positions[j]` is the sequence position of column j.

        `expected` may hold NaN where no comparison is wanted (e.g. padding); those entries are skipped.
        """
        assert actual.shape == expected.shape, f"{where}: logits shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        actual, expected = actual.double(), expected.double()
        wanted = ~torch.isnan(expected)
        diff = torch.where(wanted, (actual - expected).abs(), torch.zeros_like(actual))
        diff = torch.nan_to_num(diff, nan=float("inf"))  # NaN in actual is a difference, not a skip
        allowed = self.tolerance.atol + self.tolerance.rtol * expected.abs().nan_to_num()
        worst = float(diff.max()) if diff.numel() else 0.0
        self.max_abs_diff = max(self.max_abs_diff, worst)
        self.compared += 1
        bad = (diff > allowed) & wanted
        if not bad.any():
            return
        b, j, v = (int(i) for i in torch.nonzero(bad)[0])
        wb, wj, wv = (int(i) for i in torch.unravel_index(torch.argmax(diff), diff.shape))
        position = positions[j] if positions is not None else j
        worst_position = positions[wj] if positions is not None else wj
        bad_positions = sorted({positions[i] if positions is not None else i for i in torch.nonzero(bad)[:, 1].tolist()})
        raise evidence.failure(
            f"{where}: max abs diff {worst:.3g} exceeds tolerance ({self.tolerance.describe()}); "
            f"first failing position {position} (batch {b}, vocab {v}); worst at position {worst_position} "
            f"(batch {wb}, vocab {wv}: got {float(actual[wb, wj, wv]):.5g}, expected {float(expected[wb, wj, wv]):.5g}); "
            f"{int(bad.sum())} of {int(wanted.sum())} logits out of tolerance at positions {bad_positions[:12]}",
            "logits", where=where, position=position, batch=b, difference=worst, limit=self.tolerance.atol,
        )

    def greedy_tokens_match(self, tokens: torch.Tensor, reference_logits: torch.Tensor, *, where: str, positions,
                            forbidden: tuple[int, ...] = ()) -> None:
        """Where the tolerance demands it, the chosen tokens are the argmax of the recomputed logits, over the tokens
        generate() was allowed to choose (`forbidden`: end-of-sequence where the harness forced the length)."""
        if not self.tolerance.greedy_tokens_identical:
            return
        if forbidden:
            reference_logits = reference_logits.clone()
            reference_logits[..., list(forbidden)] = float("-inf")
        expected = reference_logits.argmax(-1)
        mismatch = tokens != expected
        if mismatch.any():
            b, j = (int(i) for i in torch.nonzero(mismatch)[0])
            raise AssertionError(
                f"{where}: greedy token at position {positions[j]} (batch {b}) is {int(tokens[b, j])}, "
                f"recomputation without cache gives {int(expected[b, j])}"
            )

    def chosen_tokens_are_greedy(self, tokens: torch.Tensor, reference_logits: torch.Tensor, *, where: str,
                                 positions) -> None:
        """Tokens chosen without the logits at hand (continuous batching returns tokens only) are greedy choices
        of the recomputed logits: the argmax where the tolerance demands identical tokens, else a token whose
        recomputed logit is within the tolerance of the largest (a near-tie the dtype may break either way)."""
        self.compared += 1
        if self.tolerance.greedy_tokens_identical:
            self.greedy_tokens_match(tokens, reference_logits, where=where, positions=positions)
            return
        reference = reference_logits.double()
        best = reference.max(-1).values
        chosen = reference.gather(-1, tokens[..., None]).squeeze(-1)
        short = best - chosen
        allowed = self.tolerance.atol + self.tolerance.rtol * best.abs()
        bad = short > allowed
        if bad.any():
            b, j = (int(i) for i in torch.nonzero(bad)[0])
            raise AssertionError(
                f"{where}: token {int(tokens[b, j])} at position {positions[j]} (batch {b}) has recomputed logit "
                f"{float(chosen[b, j]):.5g}, {float(short[b, j]):.3g} below the greedy choice "
                f"{int(reference[b, j].argmax())} ({float(best[b, j]):.5g}; tolerance {self.tolerance.describe()})"
            )


def logit_correlation(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of `logits` with `reference` over the last dimension (the vocabulary), one value per
    leading index: how alike the two distributions' shapes are, whatever their offset and scale."""
    logits, reference = (x.float() - x.float().mean(dim=-1, keepdim=True) for x in (logits, reference))
    return (logits * reference).sum(dim=-1) / (logits.norm(dim=-1) * reference.norm(dim=-1))
