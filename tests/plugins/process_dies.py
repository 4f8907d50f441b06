"""A pytest plugin for tests/test_selftest.py: the process running the session dies (as a segfault or the OOM killer
would end it), before any test reports."""

import os
import signal


def pytest_configure(config):
    os.kill(os.getpid(), signal.SIGKILL)
