"""The quantized cache (generate(cache_implementation="quantized"), optimum-quanto backend) with Gemma 3's sliding
layers: decoding past the window W either stays within a stated tolerance of recomputation without any cache, or
the release refuses clearly; a crash or silent garbage fails (graded as in the strategies suite: correct, refused
clearly, crashed, wrong).

4-bit keys and values cannot match recomputation elementwise. The tolerance is on the shape of each decode step's
logits: their correlation over the vocabulary with recomputation's must be at least
tolerances.QUANTIZED_MIN_CORRELATION (4-bit noise stays above 0.87 on the embedded checkpoint; a lost prompt or a
missing window falls to 0.34 or below). Positive control, in the same run: recomputation of the decoded tokens
without the prompt (a cache that lost what it held) must fall below the bound at some step.
"""

import pytest

from cache_conformance import adapter
from cache_conformance.adapter import generation
from cache_conformance.grading import evidence, grades
from cache_conformance.oracles.compare import logit_correlation
from cache_conformance.oracles.decoding import recompute
from cache_conformance.oracles.tolerances import QUANTIZED_MIN_CORRELATION

QUANTIZATION = {"nbits": 4, "residual_length": 2, "group_size": 16}  # residual 2: almost everything is quantized


def test_quantized_cache_decodes_within_tolerance_or_refuses_clearly(model, window, tokens, metrics):
    problem = generation.quantized_cache_problem()
    if problem:
        pytest.skip(problem)
    prompt, steps = tokens(1, window + 3), 2 * window
    length = prompt.shape[1]
    with grades.graded_where_a_clear_refusal_conforms(metrics):
        output = generation.generate_with_quantized_cache(model, prompt, max_new_tokens=steps, **QUANTIZATION)
        sequence, cached = output.sequences, adapter.step_logits(output)
        reference = recompute(model, sequence)[:, length - 1 : length - 1 + cached.shape[1]]
        per_step = logit_correlation(cached, reference)[0]
        metrics.update(min_correlation=float(per_step.min()), bound=QUANTIZED_MIN_CORRELATION,
                       max_abs_diff=float((cached.float() - reference.float()).abs().max()))

        lost = logit_correlation(recompute(model, sequence[:, length:])[:, :-1], reference[:, 1:])[0]
        metrics["control_min_correlation"] = float(lost.min())
        assert lost.min() < QUANTIZED_MIN_CORRELATION, (
            f"INVALID (not a pass): recomputation without the prompt still correlates {float(lost.min()):.3g} or "
            f"more with recomputation, above the bound {QUANTIZED_MIN_CORRELATION}: the check could not see a "
            f"cache that lost what it held"
        )
        for step, value in enumerate(per_step.tolist(), start=1):
            with evidence.located_as("correlation", step=step, position=length + step - 1, correlation=value,
                                     bound=QUANTIZED_MIN_CORRELATION):
                assert value >= QUANTIZED_MIN_CORRELATION, (
                    f"quantized cache, {QUANTIZATION['nbits']}-bit: decode step {step} (position "
                    f"{length + step - 1}, {length + step} tokens seen): the logits correlate {value:.3g} with "
                    f"recomputation's, below the bound {QUANTIZED_MIN_CORRELATION} (max abs diff "
                    f"{float((cached - reference)[0, step - 1].float().abs().max()):.3g})"
                )
