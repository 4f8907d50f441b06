"""Generation strategies that rewind, reorder or page the cache.

Assisted and prompt-lookup decoding roll the cache back after rejected drafts (crop), beam search reorders it
between beams every step, continuous batching keeps its own paged cache, and a served model reuses one static
cache for batches of different sizes. A sliding-window layer cannot get evicted positions back, so every scenario
crosses the window W. Each run is graded (cache_conformance.strategies): correct; refused clearly (transformers
raised on purpose, naming the cache or the strategy); crashed; or wrong (a comparison with recomputation failed).
The outcome is in the results file; a failure message starts with it.

- Assisted decoding (the embedded draft model, the text model's first sliding and full layer, and an agreeing
  assistant, a copy of the model) and prompt-lookup decoding (on the model's own greedy continuation), with the
  default cache and a user's static cache: the tokens are greedy decoding's, as many as asked for, and each step's
  logits equal recomputation. Each check records what its drafts reached and must reach a regime it certifies
  (cache_conformance/grading/coverage.py): rollbacks past the window, several drafts kept at once.
- Beam search (2 and 3 beams, early stopping on and off, a left-padded batch of two), with the default cache and a
  static cache: each hypothesis' logits at each step equal recomputation of that hypothesis; where the dtype
  demands identical tokens, the sequences and scores equal beam search without cache (use_cache=False).
  End-of-sequence is a token the search produces midway, so hypotheses end early (control: some do), and a
  hypothesis moves between beams past the window (the regime it certifies).
- Rollback: crop() of a dynamic and a static cache, before and after the window has filled, then decoding on:
  every step equals recomputation over the shorter sequence. A crop that needs evicted positions back may be
  refused instead, clearly and leaving the cache as it was; one that needs nothing evicted must work.
- Continuous batching (generate_batch, where the release has it): requests of different lengths, one longer than
  2W, submitted together; each request's tokens are greedy decoding of its own prompt, and the model batched on
  computes afterwards what it computed before.
- One cache, another batch: a static cache made for 3 rows serves 3, then after reset() 1, then 2.
"""

from dataclasses import dataclass

import pytest
import torch

from cache_conformance import adapter
from cache_conformance.adapter import generation
from cache_conformance.grading import coverage, grades, overflow
from cache_conformance.inputs import drafts, scenarios
from cache_conformance.oracles import generated
from cache_conformance.oracles.decoding import (
    chunks_against_recomputation,
    generation_against_recomputation,
    greedy_continuation,
    left_padded,
    prefill_and_decode,
)
from cache_conformance.probes import recorders

CACHES = ("default-cache", "static-cache")


def static_cache_or_default(model, cache_kind: str, *, batch_size: int, capacity: int):
    """A user's static cache, or None for the cache generate() builds by default."""
    if cache_kind == "default-cache":
        return None
    return adapter.make_static_cache(model, batch_size=batch_size, capacity=capacity)


def drafted_generation(model, prompt, cache_kind, compare, metrics, *, what: str, certifies: tuple[str, ...],
                       **strategy):
    """generate() with a drafting strategy, graded, against recomputation and greedy decoding's token count; then
    the precondition that the drafts reached a regime the check certifies (coverage)."""
    window = adapter.window(model.config)
    new_tokens = 2 * window
    cache = static_cache_or_default(model, cache_kind, batch_size=1, capacity=prompt.shape[1] + new_tokens)
    where = f"{what} with the {cache_kind.replace('-', ' ')}, {new_tokens} tokens"
    with grades.graded(metrics):
        with recorders.FedTokens(model) as fed:
            output = generation.generate(model, prompt, max_new_tokens=new_tokens, cache=cache, **strategy)
        generation_against_recomputation(model, prompt.shape[1], output.sequences, adapter.step_logits(output),
                                         compare, where=where, max_new_tokens=new_tokens)
    if cache is not None:
        metrics["user_cache_used"] = adapter.seq_length(cache) > 0
    steps = coverage.draft_steps(fed.calls, output.sequences[0].tolist(), prompt.shape[1])
    coverage.require(coverage.drafting_coverage(steps, window=window, budget_end=prompt.shape[1] + new_tokens),
                     certifies, where=where, metrics=metrics)


# A draft model that often disagrees rolls back often; a copy of the model agrees always, so its drafts are accepted
# several at once, across the window edge and up to the token budget.
ASSISTANTS = {
    "draft-model": (lambda request, model: request.getfixturevalue("draft_model"),
                    (coverage.ROLLBACK_AFTER_THE_WINDOW_FILLED,)),
    "agreeing-assistant": (lambda request, model: drafts.agreeing_assistant(
        model, scenarios.lookup_drafts(adapter.window(model.config))),
                           (coverage.SEVERAL_ACCEPTED, coverage.ACCEPTED_RUN_ACROSS_THE_WINDOW_EDGE)),
}


@pytest.mark.parametrize("cache_kind", CACHES)
@pytest.mark.parametrize("assistant", ASSISTANTS)
def test_assisted_decoding_matches_recomputation(request, model, window, tokens, compare, metrics, cache_kind,
                                                 assistant):
    make_assistant, certifies = ASSISTANTS[assistant]
    prompt = tokens(1, window + 3)
    drafted_generation(model, prompt, cache_kind, compare, metrics, what=f"assisted decoding ({assistant})",
                       certifies=certifies, assistant_model=make_assistant(request, model))


def test_assisted_decoding_keeps_the_assistants_sliding_layers_within_the_window(model, window, tokens, metrics):
    """An assistant that agrees with the model (a copy of it) has every draft accepted; its cache, built and rolled
    back by generate(), must not grow in the sliding layers with the number of tokens generated (5.25 stopped
    trimming it after fully accepted drafts). Control: the full-attention layers of the same cache do grow, so the
    probe sees growth where there is some."""
    assistant = drafts.copy_of(model)
    prompt = tokens(1, window + 2)
    most = {}
    for new_tokens in (2 * window, 4 * window):
        with recorders.CachesSeen(assistant) as seen:
            generation.generate(model, prompt, max_new_tokens=new_tokens, assistant_model=assistant)
        assert seen.sizes, "the assistant's forward returned no cache: nothing was measured"
        most[new_tokens] = seen.most_held(adapter.sliding_layers(assistant.config))
    metrics["assistant_positions_held"] = {f"{n} new tokens": m for n, m in most.items()}
    short, long = most[2 * window], most[4 * window]
    assert long["full"] > short["full"], (
        f"positive control: the assistant's full-attention layers held {short['full']} positions after "
        f"{2 * window} new tokens and {long['full']} after {4 * window}: the probe saw no growth at all")
    assert long["sliding"] == short["sliding"], (
        f"the assistant's sliding layers (W={window}) grew with the tokens generated: at most {short['sliding']} "
        f"positions held over {2 * window} new tokens, {long['sliding']} over {4 * window}")


@pytest.mark.parametrize("cache_kind", CACHES)
def test_prompt_lookup_decoding_matches_recomputation(model, window, tokens, compare, metrics, cache_kind):
    """On the model's own greedy continuation of a few tokens, where prompt lookup's drafts are accepted several at
    a time, then rolled back past the window and cut at the token budget."""
    prompt = greedy_continuation(model, tokens(1, scenarios.CONTINUATION_START), scenarios.drafting_prompt(window))
    drafted_generation(model, prompt, cache_kind, compare, metrics, what="prompt-lookup decoding",
                       certifies=(coverage.SEVERAL_ACCEPTED, coverage.ROLLBACK_AFTER_THE_WINDOW_FILLED),
                       prompt_lookup_num_tokens=scenarios.lookup_drafts(window))


# ---- beam search ----

EARLY_STOPPING = {"early-stopping": True, "no-early-stopping": False}


def beam_search(model, prompt, attention_mask, *, beams: int, early_stopping: bool, max_new_tokens: int, **options):
    """Every beam returned. Scores are sums of log-probabilities (length_penalty 0), so a hypothesis that ends
    early outscores the longer ones and is returned: the finished-beam bookkeeping is compared too."""
    return generation.generate(model, prompt, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                               num_beams=beams, num_return_sequences=beams,
                               early_stopping=early_stopping, length_penalty=0.0, **options)


@dataclass
class BeamScenario:
    prompt: torch.Tensor
    attention_mask: torch.Tensor
    search: dict
    end: int  # the end-of-sequence token
    without_cache: object  # beam search's output without cache
    ended_early: int  # hypotheses of `without_cache` that ended before the last step


@pytest.fixture(scope="session")
def beam_scenarios(target) -> dict:
    """Each (beams, stopping) scenario's prompt and beam search without cache, run once per target for both caches."""
    return {}


@pytest.fixture(params=[(beams, stopping) for beams in (2, 3) for stopping in EARLY_STOPPING],
                ids=lambda param: f"{param[0]}-beams-{param[1]}")
def beam_scenario(request, beam_scenarios, model, window, named_tokens, metrics) -> BeamScenario:
    """A left-padded batch of two prompts and beam search over it without cache. End-of-sequence is a token that
    search produces early (the third, second or fourth token of the first row's best hypothesis, else of the second
    row's: the first with which some hypothesis ends while others run on). The prompts are the first of a few draws
    whose search without cache also moves a hypothesis between beams past the window."""
    beams, stopping = request.param
    if request.param not in beam_scenarios:
        search = {"beams": beams, "early_stopping": EARLY_STOPPING[stopping], "max_new_tokens": window + 2}
        # The first draw of prompts whose search without cache both ends a hypothesis early and moves one between
        # beams past the window (what the check certifies), of a few: chosen on the oracle, never on the cache.
        for draw in range(BEAM_PROMPT_DRAWS):
            name = f"beam search {beams} {stopping}" + (f" {draw}" if draw else "")
            scenario = beam_scenario_of(model, named_tokens(name), window, search)
            reordered = coverage.beam_reorders(generation.beam_indices(scenario.without_cache), scenario.prompt.shape[1])
            if scenario.ended_early and any(position > window for position in reordered):
                break
        beam_scenarios[request.param] = scenario
    scenario = beam_scenarios[request.param]
    metrics.update(end_of_sequence=scenario.end, hypotheses_ended_early=scenario.ended_early)
    return scenario


BEAM_PROMPT_DRAWS = 8


def beam_scenario_of(model, tokens, window: int, search: dict) -> BeamScenario:
    """A left-padded batch drawn by `tokens`, and an end-of-sequence token that ends some hypothesis of beam search
    without cache early (the first of a few tokens the search produces early that does)."""
    prompt, attention_mask = left_padded(model, tokens, scenarios.left_padded_batch(window))
    probe = beam_search(model, prompt, attention_mask, use_cache=False, **search)
    for row, step in ((0, 2), (0, 1), (0, 3), (search["beams"], 2), (search["beams"], 1), (search["beams"], 3)):
        end = int(probe.sequences[row, prompt.shape[1] + step])
        without_cache = beam_search(model, prompt, attention_mask, use_cache=False, eos_token_id=end, **search)
        ended = generated.finished_early(without_cache.sequences, end, prompt.shape[1])
        if ended:
            break
    return BeamScenario(prompt, attention_mask, search, end, without_cache, ended)


@pytest.mark.parametrize("cache_kind", CACHES)
def test_beam_search_matches_recomputation(model, window, beam_scenario, compare, metrics, cache_kind):
    scenario, beams = beam_scenario, beam_scenario.search["beams"]
    assert scenario.ended_early > 0, "control: no hypothesis of beam search without cache ended early, whichever " \
                                     "early token ended it: the check would not exercise finished beams"
    rows, capacity = scenario.prompt.shape[0] * beams, scenario.prompt.shape[1] + scenario.search["max_new_tokens"]
    cache = static_cache_or_default(model, cache_kind, batch_size=rows, capacity=capacity)
    stopping = "early stopping" if scenario.search["early_stopping"] else "no early stopping"
    where = f"beam search ({beams} beams, {stopping}) with the {cache_kind.replace('-', ' ')}"
    with grades.graded(metrics):
        output = beam_search(model, scenario.prompt, scenario.attention_mask, cache=cache, eos_token_id=scenario.end,
                             **scenario.search)
        indices = generation.beam_indices(output)
        generated.beam_paths_against_recomputation(model, output, indices, scenario.attention_mask, compare,
                                                    beams=beams, where=where)
        if compare.tolerance.greedy_tokens_identical:
            without_cache = scenario.without_cache
            generated.sequences_equal(output.sequences, without_cache.sequences, where=where)
            compare.logits_close(output.sequences_scores[None, :, None], without_cache.sequences_scores[None, :, None],
                                 where=f"{where}: sequence scores against beam search without cache")
    coverage.require(coverage.beam_coverage(indices, prompt_length=scenario.prompt.shape[1], window=window),
                     (coverage.REORDER_AFTER_THE_WINDOW_FILLED,), where=where, metrics=metrics)


# ---- rollback ----

ROLLBACK_CACHES = {
    "dynamic-cache": lambda model, capacity: adapter.make_dynamic_cache(model),
    "static-cache": lambda model, capacity: adapter.make_static_cache(model, batch_size=1, capacity=capacity),
}


@pytest.mark.parametrize("cache_kind", ROLLBACK_CACHES)
@pytest.mark.parametrize("when", scenarios.CROP_WHEN)
def test_crop_then_continue_matches_recomputation(model, window, tokens, compare, metrics, cache_kind, when):
    """The cache holds `held` tokens, the last `cropped` of them rejected drafts (scenarios.crop: W - 2 or 2W + 1
    tokens, the last 3); crop(cropped), then two tokens in one call and W single tokens, each against recomputation
    over the kept tokens and the new ones."""
    sizes = scenarios.crop(when, window)
    held, cropped, kept, continuation = sizes.held, sizes.cropped, sizes.kept, list(sizes.continuation)
    sequence = tokens(1, kept + sum(continuation))
    rejected = tokens(1, cropped)
    cache = ROLLBACK_CACHES[cache_kind](model, held + sum(continuation))
    generation.record_past(cache)
    adapter.forward(model, torch.cat([sequence[:, :kept], rejected], dim=1), cache=cache)
    result = overflow.attempt(lambda: generation.crop(cache, cropped), lambda: overflow.cache_state(cache))
    outcome = grades.grade(result.error)
    metrics.update(outcome=outcome, exception=overflow.describe(result.error)[:500] if result.error else None)
    what = f"crop({cropped}) of a {cache_kind.replace('-', ' ')} holding {held} tokens (window {window})"
    if result.error is not None:
        refusal_failure(result, outcome, what, needs_evicted_positions=held > window)
        return
    with grades.graded(metrics):
        chunks_against_recomputation(model, cache, sequence, continuation, compare, cached=kept, label=f"after {what}")


def refusal_failure(result: overflow.Attempt, outcome: str, what: str, *, needs_evicted_positions: bool) -> None:
    """A crop may refuse only clearly, leaving the cache as it was, and only when it needs evicted positions back."""
    raised = overflow.describe(result.error)
    if outcome != "refused clearly":
        raise AssertionError(f"{outcome}: {what} raised {raised}")
    untouched = overflow.intact_failure(result)
    if untouched is not None:
        raise AssertionError(f"refused clearly, but {untouched}")
    if not needs_evicted_positions:
        raise AssertionError(f"refused clearly: {what}, which needs no evicted position back, raised {raised}")


# ---- continuous batching ----

@dataclass
class BatchingRun:
    lengths: list[int]
    prompts: list[list[int]]
    max_new_tokens: int
    generated: list[list[int]] | None
    error: Exception | None
    attention_before: str
    attention_after: str
    logits_before: torch.Tensor  # the batching model's forward without cache on a probe, before and after
    logits_after: torch.Tensor


@pytest.fixture(scope="session")
def batching_runs(target) -> dict:
    return {}


@pytest.fixture
def batching_run(batching_runs, target, checkpoint_path, model, window, named_tokens) -> BatchingRun:
    """generate_batch on requests of different lengths (one longer than 2W) submitted together, once per target,
    on a model loaded for it alone: 5.0-5.8 leave the model they batch on changed, which must not reach the other
    checks. A probe's logits without cache are kept from before and after."""
    problem = generation.continuous_batching_problem(model)
    if problem is not None:
        pytest.skip(problem)
    if "run" not in batching_runs:
        batching_model = adapter.load_model(checkpoint_path, dtype=target.dtype, device=target.device,
                                            attn_implementation=target.attn_implementation)
        tokens = named_tokens("continuous batching")
        lengths, max_new_tokens = scenarios.continuous_batching_requests(window), window + 2
        prompts = [tokens(1, length)[0].tolist() for length in lengths]
        probe = tokens(2, window + 3)
        attention_before, logits_before = (generation.attention_implementation(batching_model),
                                           adapter.forward(batching_model, probe))
        batched = error = None
        try:
            batched = generation.generate_batch(batching_model, prompts, max_new_tokens=max_new_tokens)
        except Exception as raised:  # noqa: BLE001 - graded by the test
            error = raised
        batching_runs["run"] = BatchingRun(lengths, prompts, max_new_tokens, batched, error, attention_before,
                                           generation.attention_implementation(batching_model), logits_before,
                                           adapter.forward(batching_model, probe))
    return batching_runs["run"]


def test_continuous_batching_matches_greedy_decoding(model, batching_run, compare, metrics):
    """Each request's tokens are greedy decoding of its own prompt: each the greedy choice of recomputation without
    cache (by the untouched model) over the request's sequence so far."""
    run = batching_run
    eos_token_id = adapter.text_config(model.config).eos_token_id
    with grades.graded(metrics):
        if run.error is not None:
            raise run.error
        for request, (prompt, tokens_out) in enumerate(zip(run.prompts, run.generated, strict=True)):
            generated.greedy_choices_against_recomputation(
                model, prompt, tokens_out, compare, max_new_tokens=run.max_new_tokens, eos_token_id=eos_token_id,
                where=f"continuous batching: request {request} (prompt of {len(prompt)} tokens, lengths {run.lengths})",
            )


def test_continuous_batching_leaves_the_model_as_it_was(batching_run, compare, metrics):
    """After generate_batch, whatever it returned, the model it ran on computes what it computed before."""
    run = batching_run
    metrics.update(attention_before=run.attention_before, attention_after=run.attention_after)
    compare.logits_close(run.logits_after, run.logits_before,
                         where=f"forward without cache after generate_batch (attention implementation "
                               f"{run.attention_after!r}, before {run.attention_before!r}) against before")


# ---- one cache, another batch ----

def test_static_cache_serves_another_batch_size_after_reset(model, window, tokens, compare, metrics):
    made_for, batch_sizes = 3, (3, 1, 2)
    prompt_length, steps = window + 1, window + 2
    cache = adapter.make_static_cache(model, batch_size=made_for, capacity=prompt_length + steps)
    with grades.graded(metrics):
        for batch_size in batch_sizes:
            adapter.reset(cache)
            prefill_and_decode(model, cache, tokens(batch_size, prompt_length), steps, compare,
                               label=f"batch of {batch_size} after reset() (cache made for {made_for} rows, batches "
                                     f"{list(batch_sizes)})")
