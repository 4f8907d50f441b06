"""A team's own call (--user-call FILE, cache_conformance/inputs/user_call.py): the files it reads, the one line a bad
file gets, and the call graded end to end by suites/test_your_call.py."""

import json

import pytest

from cache_conformance import ROOT
from cache_conformance.inputs import user_call

EXAMPLES = ROOT / "docs" / "user-calls"


def test_the_examples_read_as_the_calls_they_describe():
    lookup = user_call.load(EXAMPLES / "static-prompt-lookup.toml")
    assert (lookup.choice().id, lookup.strategy, lookup.new_tokens) == ("implementation-static", "prompt-lookup", 10)
    beam = user_call.load(EXAMPLES / "beam-users-static-cache.toml")
    assert (beam.choice().id, beam.choice().static, beam.strategy, beam.prompt_lengths) == (
        "object-StaticCache", True, "beam-2", (19,))


def test_a_generation_config_makes_the_call_with_its_own_keys_only(tmp_path):
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({"bos_token_id": 2, "eos_token_id": 1, "cache_implementation": "hybrid",
                                "max_new_tokens": 7, "transformers_version": "5.25.0"}))
    call = user_call.load(path)
    assert (call.choice().id, call.arguments, call.strategy) == ("implementation-hybrid", {"max_new_tokens": 7},
                                                                 "greedy")


@pytest.mark.parametrize(("text", "complaint"), [
    ("[generate]\ntemperature = 0.7\n", "unknown generate() arguments ['temperature']"),
    ("[generate]\ndo_sample = true\n", "a sampled call has no single right answer"),
    ('[generate]\ncache_implementation = "static"\n[cache]\nclass = "StaticCache"\n', "both cache_implementation"),
    ("[cache]\nmax_cache_len = 8\n", "[cache] needs class"),
    ("batch_size = 0\n", "batch_size 0 is not a positive whole number"),
    ('prompt_lengths = "long"\n', "prompt_lengths must be a list"),
    ("colour = 1\n[generate]\n", "unknown keys ['colour']"),
    ("[generate\n", "not valid TOML"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, text, complaint):
    path = tmp_path / "call.toml"
    path.write_text(text)
    with pytest.raises(user_call.UserCallError) as raised:
        user_call.load(path)
    assert str(path) in str(raised.value) and complaint in str(raised.value) and "\n" not in str(raised.value)


def test_your_call_is_graded_and_recorded(run_suites):
    """End to end on the pinned release: the beam-search example is graded correct, its cache recorded; a bad file
    stops the run with one line and exit code 4."""
    code, output, results = run_suites("suites/test_your_call.py", "--device", "cpu", "-k", "float32-cpu-eager",
                                       f"--user-call={EXAMPLES / 'beam-users-static-cache.toml'}")
    assert code == 0, output[-3000:]
    [record] = results["tests"]
    assert record["suite"] == "your_call" and record["metrics"]["outcome"] == "correct"
    assert record["metrics"]["choice"] == "object-StaticCache" and record["metrics"]["caches_that_ran"]


def test_a_bad_call_file_stops_the_run_with_one_line(run_suites, tmp_path):
    path = tmp_path / "call.toml"
    path.write_text("[generate]\ntemperature = 0.7\n")
    code, output, _ = run_suites("suites/test_your_call.py", f"--user-call={path}")
    assert code == 4 and f"--user-call {path}: unknown generate() arguments" in output and "Traceback" not in output
