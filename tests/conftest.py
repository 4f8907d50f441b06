import os
import subprocess
import sys
from pathlib import Path

import pytest

from cache_conformance.records import results
from cache_conformance.selftest import injection, pytest_runs

ROOT = Path(__file__).resolve().parent.parent
# The environment this test process started with (pytest's note of the current test aside): a suite session run
# with any other gets a process of its own.
STARTING_ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}


@pytest.fixture(scope="session")
def session_worker():
    """A long-lived process that runs suite sessions in itself (the self-test's session runner), so that a session
    does not pay for importing torch and transformers again: seconds each, more than most sessions' checks."""
    with pytest_runs.session_pool(1) as pool:
        yield pool


@pytest.fixture
def run_suites(tmp_path, request):
    """Run the conformance suites in a pytest session of their own; returns (exit code, output, results dict or
    None). A session that loads a plugin (`-p`: the tests' plugins patch the harness for good; the self-test's
    injection is undone when its session ends), runs xdist workers,
    or runs with a changed environment gets a fresh process; any other runs in `session_worker`, where each
    session's options, fixtures and `--inject-fault` patch end with the session."""

    def run(*args: str, results_name: str = "results.json", workers: int = 0):
        environment = {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}
        plugins = {args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-p"}
        if plugins <= {injection.__name__} and not workers and environment == STARTING_ENVIRONMENT:
            session = pytest_runs.Session(("-p", "no:xdist", *args))
            done = request.getfixturevalue("session_worker").submit(pytest_runs.run_here, session).result()
            return done.code, done.output, done.results
        results_file = tmp_path / results_name
        parallel = ["-n", str(workers)] if workers else ["-p", "no:xdist"]
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *parallel, "-q",
             f"--results-file={results_file}", *args],
            cwd=ROOT, capture_output=True, text=True, env=os.environ | {"PYTHONHASHSEED": "0"}, check=False,
        )
        output = completed.stdout + completed.stderr
        return completed.returncode, output, results.read(results_file) if results_file.exists() else None

    return run


def pytest_report_header(config):
    from cache_conformance.releases import pins

    return [pins.header_line()]
