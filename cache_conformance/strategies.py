"""The one grading of every suite that grades calls (strategies, user calls, the cache contract, the quantized
cache), and the probes that show a strategy did what it is checked for (the tokens each verifying call was fed,
hypotheses finished early; what drafts reached is cache_conformance/coverage.py).

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

from cache_conformance import adapter, findings
from cache_conformance.compare import Comparison
from cache_conformance.decoding import recompute
from cache_conformance.overflow import describe

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
        step_raised = (findings.of(error) or {}).get("kind") == findings.CRASH  # decoding.located; torch's asserts too
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


# ---- drafts proposed and accepted (assisted and prompt-lookup decoding): cache_conformance.coverage ----

def agreeing_assistant(model, drafts: int):
    """A copy of `model` as its own assistant: it agrees with every step. Its generation config asks for `drafts`
    drafts every step, without the confidence threshold that stops drafting where a tiny model's probabilities are
    flat (so that several drafts are accepted at once)."""
    assistant = copy_of(model)
    assistant.generation_config.num_assistant_tokens = drafts
    assistant.generation_config.num_assistant_tokens_schedule = "constant"
    assistant.generation_config.assistant_confidence_threshold = 0.0
    return assistant


def copy_of(model):
    """A new model with `model`'s configuration and weights (dtype, device, eval mode): not copy.deepcopy, which
    also copies whatever a release left on the model (a cache generate() kept, holding a torch.Stream that cannot be
    copied)."""
    copied = type(model)(model.config).to(dtype=model.dtype, device=model.device)
    copied.load_state_dict(model.state_dict())
    return copied.eval()


class FedTokens:
    """Records the input ids (first row) of every forward call of `model` while active (a forward pre-hook)."""

    def __init__(self, model):
        self.model = model
        self.calls: list[list[int]] = []
        self._handle = None

    def __enter__(self):
        def record(module, args, kwargs):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            self.calls.append(input_ids[0].tolist())

        self._handle = self.model.register_forward_pre_hook(record, with_kwargs=True)
        return self

    def __exit__(self, *exc_info):
        self._handle.remove()


class PositionsHeld:
    """The most positions each kind of layer (sliding, full) of `model`'s cache held after any forward call while
    active: read from the cache every call returns (a forward hook), so it sees a cache generate() builds inside,
    such as an assistant model's."""

    def __init__(self, model):
        self.model = model
        self.most = {"sliding": 0, "full": 0}
        self.calls = 0
        self._handle = None

    def __enter__(self):
        sliding = adapter.sliding_layers(self.model.config)

        def record(module, args, kwargs, output):
            cache = adapter.returned_cache(output)
            if cache is None:
                return
            self.calls += 1
            for layer in range(adapter.layer_count(cache)):
                kind = "sliding" if sliding[layer] else "full"
                keys = adapter.layer_storage(cache, layer)[0]
                held = keys.shape[-2] if keys is not None and keys.dim() == 4 else 0
                self.most[kind] = max(self.most[kind], held)

        self._handle = self.model.register_forward_hook(record, with_kwargs=True)
        return self

    def __exit__(self, *exc_info):
        self._handle.remove()


# ---- beam search ----

def beam_paths_against_recomputation(model, output, beam_indices, prompt_mask, compare: Comparison, *,
                                     beams: int, where: str) -> None:
    """Each returned hypothesis' logits at each step (the row of that step's logits its token was chosen from)
    against recomputation of the hypothesis without cache: a reorder that hands a beam another beam's cache shows
    here even when the search still picks plausible tokens."""
    sequences = output.sequences
    prompt_length = prompt_mask.shape[1]
    batch_rows = torch.arange(sequences.shape[0]) // (sequences.shape[0] // prompt_mask.shape[0])
    mask = torch.cat([prompt_mask[batch_rows], torch.ones_like(sequences[:, prompt_length:])], dim=1)
    reference = recompute(model, sequences, mask)
    for hypothesis in range(sequences.shape[0]):
        steps = [step for step in range(beam_indices.shape[1]) if int(beam_indices[hypothesis, step]) >= 0]
        if not steps:
            continue
        actual = torch.stack([output.logits[step][int(beam_indices[hypothesis, step])] for step in steps])
        positions = [prompt_length - 1 + step for step in steps]
        compare.logits_close(actual[None], reference[hypothesis, positions][None],
                             where=f"{where}: hypothesis {hypothesis} (batch row {int(batch_rows[hypothesis])}, "
                                   f"{beams} beams)", positions=positions)


def sequences_equal(actual: torch.Tensor, expected: torch.Tensor, *, where: str) -> None:
    """Beam search's sequences are the same tokens, hypothesis by hypothesis."""
    assert actual.shape == expected.shape, f"{where}: sequences of shape {tuple(actual.shape)}, without cache " \
                                           f"{tuple(expected.shape)}"
    differ = torch.nonzero(actual != expected)
    if len(differ):
        hypothesis, position = (int(i) for i in differ[0])
        raise findings.failure(
            f"{where}: hypothesis {hypothesis} differs from beam search without cache at position {position}: "
            f"token {int(actual[hypothesis, position])}, without cache {int(expected[hypothesis, position])} "
            f"({len(differ)} tokens differ)",
            "beam", where=where, hypothesis=hypothesis, position=position,
        )


def finished_early(sequences: torch.Tensor, eos_token_id: int, prompt_length: int) -> int:
    """How many hypotheses ended with end-of-sequence before the last step (positive control of early stopping)."""
    generated = sequences[:, prompt_length:-1]
    return int((generated == eos_token_id).any(dim=1).sum())


# ---- continuous batching ----

def greedy_choices_against_recomputation(model, prompt: list[int], generated: list[int], compare: Comparison, *,
                                         max_new_tokens: int, eos_token_id: int, where: str) -> None:
    """A request's generated tokens are greedy decoding's: each is the argmax of recomputation without cache over
    the request's own sequence so far (within the tolerance where the dtype allows near-ties), and the request
    stops only at end-of-sequence or after `max_new_tokens`."""
    ended = generated and generated[-1] == eos_token_id
    assert len(generated) == max_new_tokens or (ended and len(generated) < max_new_tokens), (
        f"{where}: {len(generated)} tokens generated, asked for {max_new_tokens} (last token {generated[-1:]}, "
        f"end-of-sequence is {eos_token_id})"
    )
    sequence = torch.tensor([prompt + generated], device=model.device)
    reference = recompute(model, sequence[:, :-1])[:, len(prompt) - 1 :]
    positions = list(range(len(prompt) - 1, sequence.shape[1] - 1))
    compare.chosen_tokens_are_greedy(sequence[:, len(prompt):], reference, where=where, positions=positions)

