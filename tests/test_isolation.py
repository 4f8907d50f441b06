"""The isolation runner with CPU stand-ins for a poisoned process (WORK IN PROGRESS, issue 18): a scenario that
kills its own process is reported as a death and graded, and the caller goes on."""

import os
import signal

from cache_conformance import isolation


def returns_a_value(x):
    return x * 2


def raises_a_clear_error(capacity):
    raise ValueError(f"static cache overflow: capacity {capacity}, {capacity + 1} requested")


def kills_its_own_process():
    os.kill(os.getpid(), signal.SIGABRT)  # what a device-side assert does to the interpreter, on CPU


def exits_hard():
    os._exit(3)


def test_a_returning_scenario_returns_its_value():
    result = isolation.run_isolated(returns_a_value, 21)
    assert (result.value, result.raised, result.died) == (42, False, False)


def test_a_raising_scenario_reports_type_and_message():
    result = isolation.run_isolated(raises_a_clear_error, 20)
    assert result.error_type == "builtins.ValueError" and "capacity 20, 21 requested" in result.error_message
    assert isolation.overflow_grades(result)["raises"] == "yes"


def test_a_scenario_that_kills_its_process_is_graded_and_the_caller_goes_on():
    result = isolation.run_isolated(kills_its_own_process)
    assert result.died and result.exit_code == -signal.SIGABRT
    assert "signal SIGABRT" in result.describe()
    assert isolation.overflow_grades(result) == {
        "raises": "yes", "clear": "no (the process died)", "intact": "unknown (the cache died with the process)"}
    assert isolation.run_isolated(returns_a_value, 1).value == 2  # the caller's process is fine and goes on


def test_a_hard_exit_is_a_death_with_its_code():
    result = isolation.run_isolated(exits_hard)
    assert result.died and result.exit_code == 3 and "exit code 3" in result.describe()
