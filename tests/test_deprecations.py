"""Deprecations: the recorder behind the deprecations suite, and the guard that the harness itself uses no name
that the pinned transformers release has deprecated (so the next rename is seen the day it is deprecated)."""

import logging
import warnings

from cache_conformance import deprecations

# The float32 eager CPU slice of every suite, with transformers' FutureWarnings (how it announces a renamed or
# removed argument) turned into errors and pyproject.toml's warning filters switched off.
WARNINGS_AS_ERRORS = ["-o", "filterwarnings=", "-W", "error::FutureWarning"]
FLOAT32_EAGER_SLICE = ["--device", "cpu", "-k", "float32-cpu-eager"]


def test_warnings_are_recorded_with_the_release_they_name_for_removal():
    with deprecations.recorded() as found:
        warnings.warn("`old` is deprecated and will be removed in version 9.1.0. Use `new`.", FutureWarning)
        warnings.warn("`gone` is deprecated and removed starting from version 8.0", DeprecationWarning)
        warnings.warn("not a deprecation", UserWarning)
    assert [(d.kind, d.removal) for d in found] == [("FutureWarning", "9.1.0"), ("DeprecationWarning", "8.0")]
    assert found[0].origin.endswith("test_deprecations.py")


def test_transformers_log_messages_about_deprecation_are_recorded_each_time():
    from transformers.utils import logging as transformers_logging

    logger = transformers_logging.get_logger("transformers.generation.utils")
    for _ in range(2):  # warning_once would stay silent the second time in this process
        with deprecations.recorded() as found:
            logger.warning_once("Using `cache_implementation='hybrid'` is deprecated and will be removed in v5.13.")
            logger.warning("an ordinary warning")
        assert [(d.kind, d.removal, d.origin) for d in found] == [
            ("transformers log", "5.13", "transformers.generation.utils")
        ]


def test_the_same_deprecation_twice_is_recorded_once_and_the_filters_are_restored():
    before = warnings.filters[:]
    level = logging.getLogger("transformers").level
    with deprecations.recorded() as found:
        for _ in range(2):
            warnings.warn("`x` is deprecated", FutureWarning)
    assert len(found) == 1 and found[0].removal == ""
    assert warnings.filters == before and logging.getLogger("transformers").level == level


def test_the_harness_triggers_no_future_warning_on_the_pinned_release(run_suites):
    code, output, results = run_suites(*FLOAT32_EAGER_SLICE, *WARNINGS_AS_ERRORS)
    assert code == 0, output
    suites = {record["suite"] for record in results["tests"]}
    assert {"equivalence", "overflow", "sliding_window", "memory", "snapshots", "deprecations"} <= suites


def test_the_guard_fails_when_the_harness_passes_the_cache_under_the_old_name(run_suites):
    # Positive control: the same guard, with the harness made to pass `past_key_values` as it did before 5.24.
    code, output, _ = run_suites("suites/test_equivalence.py::test_prefill_then_decode_across_the_window",
                                 *FLOAT32_EAGER_SLICE, *WARNINGS_AS_ERRORS,
                                 "-p", "tests.plugins.harness_uses_the_old_cache_name")
    assert code == 1, output
    assert "FutureWarning: `past_key_values` is deprecated" in output, output
