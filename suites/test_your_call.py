"""Your own generate() call, on the checkpoint in use, graded as the user-call suite grades every call
(cache_conformance/grading/user_calls.py): correct, refused clearly, refused misleadingly, crashed, wrong,
substituted or oversized, with the cache that ran and its layer sizes in the record. The call comes from
`--user-call FILE` (cache_conformance/inputs/user_call.py: generate()'s arguments, a cache_implementation or a cache
class, prompt lengths, a batch size, or a generation_config.json); without it every test here skips.

    tox -e py311-transformers-5.10 -- suites/test_your_call.py --user-call=my_call.toml --checkpoint=/path/to/model
    python -m cache_conformance.releases.matrix --releases 4.53 5.10 5.25 -- suites/test_your_call.py --user-call=my_call.toml

Prompts are random tokens of each length asked for (default 2W+3, past two windows); prompt lookup's is the model's
own greedy continuation, as in the user-call suite, so that its drafts are accepted.
"""

import pytest

from cache_conformance import adapter
from cache_conformance.adapter import generation
from cache_conformance.grading import user_calls
from cache_conformance.inputs import scenarios
from cache_conformance.oracles.decoding import greedy_continuation
from cache_conformance.plugin.suite_fixtures import USER_CALL_KEY

DEFAULT_LENGTH = "past-two-windows"  # 2W+3, W read from the checkpoint


def pytest_generate_tests(metafunc):
    if "prompt_length" in metafunc.fixturenames:
        call = metafunc.config.stash.get(USER_CALL_KEY, None)
        lengths = list(call.prompt_lengths) if call is not None and call.prompt_lengths else [DEFAULT_LENGTH]
        named = f"{call.path.stem}-" if call is not None else ""  # the file's name tells two teams' calls apart
        metafunc.parametrize("prompt_length", lengths, ids=[f"{named}prompt-{length}" for length in lengths])


def test_your_call(your_call, model, window, tokens, compare, metrics, prompt_length):
    if your_call.cache_class is not None and your_call.cache_class not in generation.user_cache_classes():
        pytest.skip(f"transformers {adapter.INSTALLED} offers no {your_call.cache_class} for a user to pass")
    length = 2 * window + 3 if prompt_length == DEFAULT_LENGTH else prompt_length
    if your_call.strategy == "prompt-lookup":
        start = tokens(your_call.batch_size, min(length, scenarios.CONTINUATION_START))
        prompt = greedy_continuation(model, start, length)
    else:
        prompt = tokens(your_call.batch_size, length)
    choice = your_call.choice()
    metrics["user_call"] = str(your_call.path)
    where = (f"your call ({your_call.path.name}): generate() with {choice.id}, {your_call.strategy}, "
             f"{your_call.batch_size} x {length} prompt tokens (W={window})")
    options = {name: value for name, value in your_call.arguments.items() if name != "max_new_tokens"}
    user_calls.call_and_grade(model, compare, metrics, choice, your_call.strategy, prompt,
                              new_tokens=your_call.new_tokens, options=options, where=where,
                              capacity=your_call.capacity)
