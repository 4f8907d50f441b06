"""A pytest plugin for tests/test_isolation.py: the CPU stand-in for a CUDA device-side assert. Each overflowing
call of the overflow suite, run in its child process (--isolate-overflows), aborts that process instead."""

import os
import signal

from cache_conformance.grading import overflow

_attempt_in_child = overflow.attempt_in_child


def _aborting(scenario):
    def aborting_scenario(*args):
        _, requested = scenario(*args)
        return (lambda: os.kill(os.getpid(), signal.SIGABRT)), requested

    return aborting_scenario


def attempt_then_abort(checkpoint_path, target, scenario, *args):
    return _attempt_in_child(checkpoint_path, target, _aborting(scenario), *args)


overflow.attempt_in_child = attempt_then_abort
