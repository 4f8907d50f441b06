"""The isolation runner with CPU stand-ins for a poisoned process: a scenario that kills its own process is reported
as a death, the overflow suite grades it (raises yes, clear no, intact unknown, recoverable no), and the run goes
on."""

import os
import signal

from cache_conformance.grading import overflow
from cache_conformance.probes import isolation


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
    assert result.raised and not result.died


def test_a_scenario_that_kills_its_process_is_graded_and_the_caller_goes_on():
    result = isolation.run_isolated(kills_its_own_process)
    assert result.died and result.exit_code == -signal.SIGABRT
    assert "signal SIGABRT" in result.describe()
    lost = overflow.lost_in_child(result.death()).result
    assert overflow.raise_failure(lost) is None
    assert overflow.clarity_failure(lost, capacity=20, requested={21}).startswith("no error message: the process died")
    assert overflow.intact_unknown(lost).startswith("unknown: the process died")
    assert isolation.run_isolated(returns_a_value, 1).value == 2  # the caller's process is fine and goes on


def test_a_hard_exit_is_a_death_with_its_code():
    result = isolation.run_isolated(exits_hard)
    assert result.died and result.exit_code == 3 and "exit code 3" in result.describe()


def test_the_overflow_suite_grades_a_process_that_dies_and_the_run_goes_on(run_suites):
    code, output, results = run_suites(
        "suites/test_overflow.py", "suites/test_checkpoint.py", "--device", "cpu", "-k",
        "decode-one-token-past-capacity-float32-cpu-eager or test_checkpoint", "--isolate-overflows",
        "--no-expectations", "-p", "tests.plugins.overflow_kills_its_process", "-rs")
    assert code == 1, output
    outcomes = {t["id"].split("::")[1].split("[")[0]: (t["outcome"], t["message"]) for t in results["tests"]}
    assert outcomes["test_overflow_raises"][0] == "passed"
    died = "the process died during the overflow (signal SIGABRT)"
    assert outcomes["test_overflow_error_is_clear"][0] == "failed"
    assert outcomes["test_overflow_error_is_clear"][1].startswith(f"AssertionError: no error message: {died}\n")
    assert outcomes["test_overflow_leaves_the_cache_intact"][0] == "skipped"
    assert f"intact: unknown: {died}" in output
    assert outcomes["test_overflow_cache_is_recoverable_after_reset"][0] == "failed"
    assert died in outcomes["test_overflow_cache_is_recoverable_after_reset"][1]
    checkpoint_checks = [t for t in results["tests"] if t["id"].startswith("suites/test_checkpoint.py")]
    assert checkpoint_checks and {t["outcome"] for t in checkpoint_checks} == {"passed"}  # the run went on
