"""Deprecations: the cache calls users have written since Gemma 3 appeared still work, and what each release
tells them will break next.

Each call is written the way users wrote it on every release 4.50-5.23: the cache passed to forward() and
generate() as `past_key_values`, and generate()'s cache read back as `output.past_key_values`. A check fails when
the call no longer works: the old name removed, or the cache it was given not used. The deprecation warnings a
call triggers (Python warnings and transformers' log, with the release each names for removal) are findings, not
failures: they go into the results file as `metrics.deprecations` and into the report's "Deprecations" section.
The harness itself uses the release's own names (adapter.CACHE_KEYWORD); the gate (tox.ini,
py311-transformers-adopted) fails on any FutureWarning it triggers on the pinned release.
"""

from cache_conformance import adapter
from cache_conformance.grading import evidence
from cache_conformance.probes import deprecations

OLD_NAME = adapter.LEGACY_CACHE_KEYWORD
# Fewer tokens than W - 1 in every call, in caches larger than the window: the calls' own results must not depend
# on sliding-window eviction (which 4.50-4.51 get wrong: see the expectations file).
PROMPT, NEW_TOKENS = 4, 3


def test_forward_with_the_cache_as_past_key_values(model, window, tokens, metrics):
    prompt = tokens(1, PROMPT)
    cache = adapter.make_static_cache(model, batch_size=1, capacity=window + PROMPT)
    with deprecations.recorded() as found:
        logits = adapter.forward(model, prompt, cache=cache, cache_keyword=OLD_NAME)
        adapter.forward(model, logits[:, -1:].argmax(-1), cache=cache, start=PROMPT, cache_keyword=OLD_NAME)
    metrics["deprecations"] = [d.as_dict() for d in found]
    with evidence.located_as("cache-not-used", call="forward", held=adapter.seq_length(cache), expected=PROMPT + 1):
        assert adapter.seq_length(cache) == PROMPT + 1, (
            f"forward(past_key_values=cache) on a prompt of {PROMPT} and one more token: the cache reports "
            f"{adapter.seq_length(cache)} tokens, not {PROMPT + 1}: the cache passed under the old name was not used"
        )


def test_generate_into_a_cache_passed_as_past_key_values(model, window, tokens, metrics):
    prompt = tokens(1, PROMPT)
    cache = adapter.make_static_cache(model, batch_size=1, capacity=window + PROMPT + NEW_TOKENS)
    with deprecations.recorded() as found:
        sequences, _ = adapter.generate_with_static_cache(
            model, prompt, cache=cache, max_new_tokens=NEW_TOKENS, cache_keyword=OLD_NAME
        )
    metrics["deprecations"] = [d.as_dict() for d in found]
    assert sequences.shape == (1, PROMPT + NEW_TOKENS)
    # generate() feeds the prompt and every new token but the last
    expected = PROMPT + NEW_TOKENS - 1
    with evidence.located_as("cache-not-used", call="generate", held=adapter.seq_length(cache), expected=expected):
        assert adapter.seq_length(cache) == expected, (
            f"generate(past_key_values=cache, max_new_tokens={NEW_TOKENS}) after a prompt of {PROMPT}: the cache "
            f"reports {adapter.seq_length(cache)} tokens, not {expected}: generate() did not use it"
        )


def test_generate_returns_its_cache_as_past_key_values(model, tokens, metrics):
    prompt = tokens(1, PROMPT)
    with deprecations.recorded() as found:
        _, cache = adapter.generate_with_default_cache(
            model, prompt, max_new_tokens=NEW_TOKENS, cache_keyword=OLD_NAME
        )
    metrics["deprecations"] = [d.as_dict() for d in found]
    assert cache is not None, "generate()'s output.past_key_values is None: the cache is no longer returned there"
    assert adapter.seq_length(cache) == PROMPT + NEW_TOKENS - 1, (
        f"output.past_key_values of generate(max_new_tokens={NEW_TOKENS}) after a prompt of {PROMPT} reports "
        f"{adapter.seq_length(cache)} tokens, not {PROMPT + NEW_TOKENS - 1}"
    )
