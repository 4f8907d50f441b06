"""`--inject-fault NAME`: a pytest plugin that patches one catalogued fault into the installed transformers for
the session (undone when it ends), says so in the run header and in the results file's run info. Only the self-test's
runs load it (`arguments`); the suites' own plugin never imports the self-test."""

from __future__ import annotations

import pytest

from cache_conformance.plugin import recorder
from cache_conformance.selftest import faults


def arguments(name: str) -> list[str]:
    """pytest's arguments that load this plugin and inject the fault `name` for the session."""
    return ["-p", __name__, "--inject-fault", name]


def pytest_addoption(parser):
    parser.getgroup("cache-conformance").addoption(
        "--inject-fault", choices=sorted(faults.CATALOGUE),
        help="patch a deliberate cache bug into transformers for this run (the suites must fail)")


def pytest_configure(config):
    name = config.getoption("inject_fault")
    if not name:
        return
    patcher = pytest.MonkeyPatch()
    faults.apply(name, patcher)
    config.add_cleanup(patcher.undo)
    registered = config.pluginmanager.get_plugin(recorder.RECORDER_PLUGIN)  # absent on xdist workers
    if registered is not None:
        registered.collector.info["injected_fault"] = name


def pytest_report_header(config):
    name = config.getoption("inject_fault")
    if name:
        fault = faults.CATALOGUE[name]
        return [f"INJECTED FAULT {fault.name}: {fault.description}"]
    return []
