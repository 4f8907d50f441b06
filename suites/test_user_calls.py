"""The calls users write: generate() with every cache choice the release offers, every strategy, prompts shorter
than the window W, longer than W and longer than 2W, each made as a user writes it and graded.

The other suites make the harness's calls: where a release needs a workaround to reach a cache (a generation config
rewritten so that a user's cache is accepted, the cache implementation that works on that release), the adapter
applies it, because those suites inspect a working cache. This suite makes the plain call instead, so what a user
meets is what it grades (cache_conformance/grading/user_calls.py): correct (logits equal recomputation without cache, and
the cache that ran is the kind asked for), refused clearly, crashed, wrong, substituted (right output, another
cache: a user's object not used, a growing cache for a static request) or oversized (right output, a static cache
whose sliding layers hold more than W positions). Correct and refused clearly conform.
Prompt lookup, assisted decoding and beam search also run on drawn inputs (hypothesis), since where drafts and
beams land relative to the window decides some failures. A drafting or beam-search call also records what its inputs
reached (cache_conformance/grading/coverage.py) and fails as "precondition not met" where they reached none of the regimes
it certifies: prompt lookup takes the model's own greedy continuation as its prompt, so drafts are accepted.
"""

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from cache_conformance import adapter
from cache_conformance.grading import coverage, grades, user_calls
from cache_conformance.inputs import drafts, images, scenarios
from cache_conformance.oracles.decoding import (
    greedy_continuation,
    one_token_per_call,
    random_tokens,
)
from cache_conformance.plugin.suite_fixtures import fresh_draft

CHOICES = user_calls.cache_choices()
STRATEGIES = ("greedy", "beam-2", "beam-3", "prompt-lookup", "assisted")
PROMPT_LENGTHS = {
    "shorter-than-window": lambda window: max(1, window - 2),
    "longer-than-window": lambda window: window + 3,
    "longer-than-two-windows": lambda window: 2 * window + 3,
}
# The default run makes every call on one target with the longest prompt; --include-slow adds the other targets
# and the shorter prompts.
IN_THE_DEFAULT_RUN = "float32-cpu-eager"
PROMPTS = [pytest.param(kind, marks=pytest.mark.slow(except_on=IN_THE_DEFAULT_RUN) if kind == "longer-than-two-windows"
                        else pytest.mark.slow) for kind in PROMPT_LENGTHS]


def strategy_options(request, strategy: str, window: int) -> dict:
    """generate()'s arguments that select the strategy, as a user writes them."""
    if strategy.startswith("beam-"):
        return {"num_beams": int(strategy.removeprefix("beam-"))}
    if strategy == "prompt-lookup":
        return {"prompt_lookup_num_tokens": scenarios.lookup_drafts(window)}
    if strategy == "assisted":
        return {"assistant_model": request.getfixturevalue("draft_model")}
    return {}


# What each drafting call must reach to certify anything (cache_conformance/grading/coverage.py). Prompt lookup takes the
# model's own greedy continuation as its prompt, so its drafts are accepted several at a time; assisted decoding takes
# random text, which the draft model often continues otherwise than the model, so it rolls back.
CERTIFIES = {
    "prompt-lookup": (coverage.SEVERAL_ACCEPTED, coverage.ROLLBACK_AFTER_THE_WINDOW_FILLED),
    "assisted": (coverage.ROLLBACK_AFTER_THE_WINDOW_FILLED,),
}


@pytest.mark.parametrize("prompt_kind", PROMPTS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("choice", CHOICES, ids=[choice.id for choice in CHOICES])
def test_generate_as_users_call_it(request, model, window, tokens, compare, metrics, choice, strategy, prompt_kind):
    length = PROMPT_LENGTHS[prompt_kind](window)
    if strategy == "prompt-lookup":
        prompt = greedy_continuation(model, tokens(1, min(length, scenarios.CONTINUATION_START)), length)
    elif strategy == "assisted":
        prompt = tokens(1, length)  # random text, which the draft model often continues otherwise than the model
    else:
        prompt = drafts.repeating_prompt(tokens, length, period=max(2, window // 2))
    options = strategy_options(request, strategy, window)
    where = f"generate() with {choice.id}, {strategy}, a prompt of {prompt.shape[1]} tokens (W={window})"
    # assisted decoding runs twice as many steps, so that some draft is rejected past the window
    new_tokens = 2 * window + 2 if strategy == "assisted" else window + 2
    user_calls.call_and_grade(model, compare, metrics, choice, strategy, prompt, new_tokens=new_tokens, options=options,
                   where=where, certifies=CERTIFIES.get(strategy, ()))


@pytest.mark.slow(except_on=IN_THE_DEFAULT_RUN)
@pytest.mark.parametrize("choice", CHOICES, ids=[choice.id for choice in CHOICES])
def test_prompt_lookup_rolling_back_across_the_window_edge(model, window, tokens, compare, metrics, choice):
    """Prompt lookup whose first drafts are rejected across the sliding window's edge: a block of two tokens repeated
    to W-1 tokens, chosen so that the model does not continue it as the lookup does, so the cache holds W positions or
    more when the drafts are rolled back and fewer after, and the sliding layers go back from full to not full. The
    fixed calls above reach rollbacks after the window filled; this one reaches the edge itself, on every run, not by
    a drawn example."""
    prompt = drafts.rejected_lookup_prompt(model, tokens, window - 1)
    options = {"prompt_lookup_num_tokens": scenarios.lookup_drafts(window)}
    where = (f"generate() with {choice.id}, prompt-lookup rolled back across the window edge, a prompt of "
             f"{prompt.shape[1]} tokens (W={window})")
    user_calls.call_and_grade(model, compare, metrics, choice, "prompt-lookup", prompt, new_tokens=window + 2, options=options,
                   where=where, certifies=(coverage.ROLLBACK_ACROSS_THE_WINDOW_EDGE,))


IMAGE_SEED = 1234  # the multimodal prompt's pixel values


# Where drafts land relative to the window decides some failures, so these calls draw their placement.
DRAWN = {
    "prompt-lookup": pytest.mark.slow(except_on=IN_THE_DEFAULT_RUN),
    "assisted": pytest.mark.slow,
    "beam-search": pytest.mark.slow,
}


@pytest.mark.parametrize("strategy", [pytest.param(name, marks=mark) for name, mark in DRAWN.items()])
def test_drawn_calls_are_correct_or_refused_clearly(request, model, window, compare, metrics, strategy):
    """Prompt lookup and assisted decoding with no cache choice (what most users write), and beam search with a
    drawn one, on drawn calls: a prompt around W or 2W long, either the model's own greedy continuation (drafts
    taken from it are accepted) or a random block repeated, up to 4W new tokens, 1 to 2W drafts (prompt lookup,
    assisted decoding with the draft model or an agreeing copy of the model) or 2 to 4 beams. Every run is correct
    or refused clearly; the failure message names the drawn call. The search is steered (hypothesis' `target`)
    toward long runs of accepted drafts and reorders past the window, and the examples together must reach a regime
    the check certifies (coverage)."""
    reached, refused = [], []

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # `compare` keeps the worst case on purpose
    @given(data=st.data())
    def drawn_call(data):
        length = data.draw(st.one_of(st.integers(max(1, window - 3), window + 3),
                                     st.integers(2 * window - 3, 2 * window + 3)), label="prompt length")
        agreeing = data.draw(st.booleans(), label="prompt: the model's greedy continuation (else a block repeated)")
        period = length if agreeing else data.draw(st.integers(1, length), label="repeated block length")
        new_tokens = data.draw(st.integers(1, 4 * window), label="new tokens")
        token_seed = data.draw(st.integers(0, 2**16), label="token seed")
        choice = user_calls.DEFAULT
        if strategy == "prompt-lookup":
            options = {"prompt_lookup_num_tokens": data.draw(st.integers(1, 2 * window), label="drafts")}
        elif strategy == "assisted":
            assistant = data.draw(st.sampled_from(["draft model", "agreeing copy of the model"]), label="assistant")
            drafted = data.draw(st.integers(1, 2 * window), label="drafts")
            options = {"assistant_model": fresh_draft(request.getfixturevalue("loaded_draft_model"))
                       if assistant == "draft model" else agreeing_assistant(request, model, drafted),
                       "num_assistant_tokens": drafted}
        else:
            options = {"num_beams": data.draw(st.integers(2, 4), label="beams")}
            choice = data.draw(st.sampled_from(CHOICES), label="cache choice")
        generator = torch.Generator().manual_seed(token_seed)
        draw_tokens = lambda batch, n: random_tokens(model, batch, n, generator)
        if agreeing:
            prompt = greedy_continuation(model, draw_tokens(1, min(length, scenarios.CONTINUATION_START)), length)
        else:
            prompt = drafts.repeating_prompt(draw_tokens, length, period)
        shown = {name: value for name, value in options.items() if name != "assistant_model"}
        kind = "the model's greedy continuation" if agreeing else f"a block of {period} repeated"
        where = (f"generate() with {choice.id}, {strategy} {shown}, a prompt of {length} tokens ({kind}, token seed "
                 f"{token_seed}), {new_tokens} new tokens (W={window})")
        ran = user_calls.call_and_grade(model, compare, metrics, choice, strategy, prompt, new_tokens=new_tokens,
                             options=options, where=where)
        if ran is None:
            refused.append(where)  # refused clearly: nothing ran
            return
        reached.append(ran)
        for regime, count in ran.get("regimes", {}).items():
            event(f"reached {regime}")
            target(float(count), label=regime)
        target(float(ran.get("longest_accepted_run", 0)), label="longest accepted run")

    drawn_call()
    merged = coverage.merged(reached)
    if refused and not any(merged.get("regimes", {}).get(regime) for regime in DRAWN_CERTIFIES[strategy]):
        # The release refused clearly what the inputs drew (often exactly the calls that would reach the regimes):
        # it conforms, and nothing is certified. Inputs that reached nothing while nothing was refused fail below.
        metrics.update(outcome="refused clearly", coverage={**merged, "refused_calls": len(refused)})
        return
    coverage.require(merged, DRAWN_CERTIFIES[strategy], metrics=metrics,
                     where=f"{len(reached)} drawn calls of {strategy} that ran (W={window})")


DRAWN_CERTIFIES = {
    "prompt-lookup": (coverage.ROLLBACK_AFTER_THE_WINDOW_FILLED, coverage.RUN_TO_THE_TOKEN_BUDGET),
    "assisted": (coverage.ROLLBACK_AFTER_THE_WINDOW_FILLED, coverage.RUN_TO_THE_TOKEN_BUDGET),
    "beam-search": (coverage.REORDER_AFTER_THE_WINDOW_FILLED,),
}


def agreeing_assistant(request, model, drafted: int):
    """A copy of the model as its assistant, asked for `drafted` drafts a step (drafts.agreeing_assistant): one
    copy per test, its drafts set per call."""
    cached = request.node.stash.setdefault(AGREEING_KEY, {})
    if "assistant" not in cached:
        cached["assistant"] = drafts.agreeing_assistant(model, drafted)
    cached["assistant"].generation_config.num_assistant_tokens = drafted
    return cached["assistant"]


AGREEING_KEY = pytest.StashKey[dict]()


@pytest.mark.slow(except_on=IN_THE_DEFAULT_RUN)
@pytest.mark.parametrize("choice", CHOICES, ids=[choice.id for choice in CHOICES])
def test_multimodal_generate_as_users_call_it(multimodal_model, multimodal_window, multimodal_tokens, compare,
                                              metrics, choice):
    """The multimodal model, greedy, with every cache choice, on a prompt longer than W with two images: one
    that has left the last window by the first new token, one inside it (all but its begin-of-image token)."""
    window = multimodal_window
    starts, length = scenarios.images_at("two-images", window, images.image_length(multimodal_model))
    prompt, placed = images.place_images(multimodal_model, multimodal_tokens(1, length),
                                         [(0, start) for start in starts], seed=IMAGE_SEED)
    where = (f"generate() on the multimodal model with {choice.id}, greedy, a prompt of {length} tokens with images "
             f"at {starts} (W={window})")
    user_calls.call_and_grade(multimodal_model, compare, metrics, choice, "greedy", prompt, new_tokens=window + 2, options={},
                   where=where, prompt_images=placed)


# forward() as users loop over it: no cache_position (the adapter passes one before 5.4). With no cache choice the
# user passes back the cache each call returned; a user's own cache object is passed again each call, as it was made.
FORWARD_CHOICES = [choice for choice in CHOICES if choice.implementation is None]


@pytest.mark.slow(except_on=IN_THE_DEFAULT_RUN)
@pytest.mark.parametrize("choice", FORWARD_CHOICES, ids=[choice.id for choice in FORWARD_CHOICES])
def test_forward_as_users_call_it(model, window, tokens, compare, metrics, choice):
    prompt = tokens(1, PROMPT_LENGTHS["shorter-than-window"](window))
    steps = window + 6  # the sequence ends 2W + 4 tokens long: past the window twice
    passed = {}

    def step(token_ids, position):
        output = model(input_ids=token_ids, **{adapter.CACHE_KEYWORD: passed["cache"]}, use_cache=True)
        if choice.object_class is None:
            passed["cache"] = adapter.returned_cache(output)
        return output.logits

    where = f"forward() one token per call with {choice.id}, no cache_position (W={window})"
    metrics.update(choice=choice.id, strategy="forward", prompt_length=prompt.shape[1])
    with grades.graded_where_a_clear_refusal_conforms(metrics):
        arguments = choice.arguments(model, batch_size=1, capacity=prompt.shape[1] + steps)
        passed["cache"] = arguments.get(adapter.CACHE_KEYWORD)
        one_token_per_call(model, step, prompt, steps, compare, label=where)
