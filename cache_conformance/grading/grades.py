"""The one grading of every suite that grades calls (strategies, user calls, the cache contract, the quantized
cache, the rewind): one exception on one call gets one grade everywhere.

A call ends one of these ways, graded apart (`grade`, `graded`), the same exception on the same call alike everywhere:
- correct: it ran and every comparison with recomputation held;
- refused clearly: transformers itself raised a ValueError, RuntimeError or NotImplementedError (or one of its own
  exceptions) whose message names the cache, a strategy or an operation on the cache (SUBJECTS);
- refused misleadingly: such a refusal that says the call passed an argument it did not (where the caller knows what
  was passed: the user calls);
- crashed: any other exception (a TypeError or AttributeError from deep inside, an error or assert of torch's);
- wrong: it ran and a comparison failed.
"""

from __future__ import annotations

import contextlib
import re
import traceback
from pathlib import Path

import torch
import transformers

from cache_conformance.grading import evidence
from cache_conformance.grading.overflow import describe

TRANSFORMERS_SOURCE = Path(transformers.__file__).resolve().parent
REFUSAL_TYPES = (ValueError, RuntimeError, NotImplementedError)
# What a clear refusal names (any one of them): the cache, or a strategy or operation on it in the words transformers
# uses. One list for every suite, so that the same exception on the same call gets the same grade everywhere.
SUBJECTS = ("cache", "assist", "candidate", "draft", "lookup", "speculative", "beam", "crop", "batch", "quantiz",
            "offload", "sliding")


def raised_by_transformers(error: BaseException) -> bool:
    """Whether the innermost frame of the error's traceback is transformers' own code (not torch's, not ours)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(TRANSFORMERS_SOURCE)


def refusal_is_clear(error: BaseException) -> bool:
    """A refusal is clear when transformers raised it on purpose (a ValueError, RuntimeError or NotImplementedError,
    or one of its own exceptions, from its own code) and its message names one of SUBJECTS (e.g. "cache",
    "assist"): the user learns what is not supported, not where the code broke."""
    on_purpose = isinstance(error, REFUSAL_TYPES) or type(error).__module__.startswith("transformers")
    named = re.search("|".join(map(re.escape, SUBJECTS)), str(error), re.IGNORECASE) is not None
    return on_purpose and named and raised_by_transformers(error)


# A refusal that says what the call passed: "Passing both `a` and `b`", "`a` was passed".
SAYS_PASSED = re.compile(r"\b(?:passing|passed|both)\b[^.]*", re.IGNORECASE)


def arguments_named_but_not_passed(error: BaseException, passed: set[str]) -> list[str]:
    """The generate() arguments a refusal says the call passed (in backticks, in a sentence about passing) that it
    did not pass."""
    named = {name for sentence in SAYS_PASSED.findall(str(error)) for name in re.findall(r"`(\w+)`", sentence)}
    arguments = set(vars(transformers.GenerationConfig())) | {"past_key_values", "cache", "assistant_model"}
    return sorted(name for name in named & arguments if name not in passed)


TORCH_SOURCE = Path(torch.__file__).resolve().parent


def asserted_upstream(error: AssertionError) -> bool:
    """Whether an AssertionError was raised by an assert inside torch or transformers ("Torch not compiled with CUDA
    enabled"), not by a comparison of the suites'."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and any(Path(frames[-1].filename).resolve().is_relative_to(folder)
                                for folder in (TORCH_SOURCE, TRANSFORMERS_SOURCE))


def grade(error: BaseException | None, *, passed: set[str] | None = None) -> str:
    """The outcome of a strategy's call that raised `error` (None: it returned): correct, refused clearly, refused
    misleadingly (a clear refusal whose message says the call passed an argument it did not; only where `passed`,
    the arguments the call passed, is known) or crashed. (Wrong is for the comparisons afterwards to say.)"""
    if error is None:
        return "correct"
    if not refusal_is_clear(error):
        return "crashed"
    if passed is not None and arguments_named_but_not_passed(error, passed):
        return "refused misleadingly"
    return "refused clearly"


@contextlib.contextmanager
def graded(metrics: dict):
    """Run a strategy and its comparisons inside the block: an exception from the strategy fails the test as
    "refused clearly: ..." or "crashed: ..." (also when a step wrapped by decoding.located raised), a failed
    comparison (AssertionError) as "wrong: ...". The outcome goes to `metrics["outcome"]` (the release -> outcome
    tables are read from it)."""
    try:
        yield
    except AssertionError as error:
        cause = error.__cause__
        step_raised = (evidence.of(error) or {}).get("kind") == evidence.CRASH  # decoding.located; torch's asserts too
        if cause is None and asserted_upstream(error):  # torch's own assert ("not compiled with CUDA")
            metrics["outcome"] = "crashed"
            metrics["exception"] = describe(error)[:500]
        elif cause is None or (isinstance(cause, AssertionError) and not step_raised):
            metrics["outcome"] = "wrong"
        else:  # a step that raised, named by decoding.located
            metrics["outcome"] = grade(cause)
            metrics["exception"] = describe(cause)[:500]
        raise AssertionError(f"{metrics['outcome']}: {error}") from error
    except Exception as error:  # every exception is graded
        metrics["outcome"] = grade(error)
        metrics["exception"] = describe(error)[:500]
        raise AssertionError(f"{metrics['outcome']}: {describe(error)}") from error
    metrics["outcome"] = "correct"


@contextlib.contextmanager
def graded_where_a_clear_refusal_conforms(metrics: dict):
    """`graded`, for a check whose promise is "correct or refused clearly": a clear refusal is recorded and the
    block's failure swallowed; any other failure is re-raised."""
    try:
        with graded(metrics):
            yield
    except AssertionError:
        if metrics.get("outcome") != "refused clearly":
            raise
