import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_suites(tmp_path):
    """Run the conformance suites in a fresh pytest process; returns (exit code, output, results dict or None)."""
    import json

    def run(*args: str, results_name: str = "results.json", workers: int = 0):
        results_file = tmp_path / results_name
        parallel = ["-n", str(workers)] if workers else ["-p", "no:xdist"]
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *parallel, "-q",
             f"--results-file={results_file}", *args],
            cwd=ROOT, capture_output=True, text=True, env=os.environ | {"PYTHONHASHSEED": "0"}, check=False,
        )
        output = completed.stdout + completed.stderr
        results = json.loads(results_file.read_text()) if results_file.exists() else None
        return completed.returncode, output, results

    return run


def pytest_report_header(config):
    from cache_conformance.releases import pins

    return [pins.header_line()]
