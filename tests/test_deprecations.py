"""Deprecations: the recorder behind the deprecations suite, and the gate's guard that the harness itself uses no
name the pinned transformers release has deprecated (so the next rename is seen the day it is deprecated)."""

import configparser
import logging
import shlex
import warnings

from cache_conformance import ROOT
from cache_conformance.probes import deprecations


def gate_warning_options() -> list[str]:
    """The `-W` options of the gate's pytest command (tox.ini, py311-transformers-adopted, which runs every suite
    on the pinned release): how a FutureWarning the harness triggers fails the gate."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    command = shlex.split(parser["testenv:py311-transformers-adopted"]["commands"])
    return [f"-W{command[index + 1]}" for index, word in enumerate(command) if word == "-W"]


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


def test_the_gate_fails_when_the_harness_passes_the_cache_under_the_old_name(run_suites):
    # Positive control of the gate's guard: its own options, with the harness made to pass `past_key_values` as it
    # did before 5.24. (The gate's run is the negative side: every suite, every target, no FutureWarning.)
    options = gate_warning_options()
    assert options == ["-Werror::FutureWarning"], f"the gate no longer fails on FutureWarning: {options}"
    code, output, _ = run_suites("suites/test_equivalence.py::test_prefill_then_decode_across_the_window",
                                 "--device", "cpu", "-k", "float32-cpu-eager", *options,
                                 "-p", "tests.plugins.harness_uses_the_old_cache_name")
    assert code == 1, output
    assert "FutureWarning: `past_key_values` is deprecated" in output, output
