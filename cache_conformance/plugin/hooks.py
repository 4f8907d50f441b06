"""The pytest plugin behind every suite, as hook wiring: options, the run's checkpoint, devices and expectations,
the target parameterisation, deselection of slow checks, strict expectations and what each test's record carries.
Loaded by the root conftest.py with the fixtures (`suite_fixtures`); the self-test's `--inject-fault` is a plugin of
its own (`selftest.injection`), loaded only by the self-test's runs. The results recorder is
`recorder.ResultsRecorder`; judging is `expectations.judge`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

# No network at run time: set before transformers (imported by the adapter) reads them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from cache_conformance import ROOT, adapter
from cache_conformance.grading import evidence
from cache_conformance.inputs import user_call
from cache_conformance.oracles import snapshots
from cache_conformance.plugin import checkpoint, options, recorder, targets
from cache_conformance.plugin.suite_fixtures import CHECKPOINT_KEY, COMPARISON_KEY, METRICS_KEY, USER_CALL_KEY
from cache_conformance.records import expectations, results

SUITES = ROOT / "suites"
DEVICES_KEY = pytest.StashKey[tuple]()
EXPECTATIONS_KEY = pytest.StashKey[expectations.ExpectationsFile | None]()
EXPECTATION_KEY = pytest.StashKey[expectations.Applied]()


def pytest_addoption(parser):
    options.add(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Before hypothesis' own plugin loads the profile, which ends an unknown name in an INTERNALERROR traceback.
    profile = config.getoption("hypothesis_profile", None)
    if profile is not None and profile not in options.PROFILES:
        raise pytest.UsageError(
            f"--hypothesis-profile={profile} is not a profile of this suite; choose one of {', '.join(options.PROFILES)}"
        )
    logging.getLogger("transformers").setLevel(logging.ERROR)
    problem = adapter.release_problem()
    if problem:
        raise pytest.UsageError(problem)

    path = checkpoint.resolve(config.getoption("checkpoint"))
    try:
        checkpoint.validate(path)
    except checkpoint.CheckpointError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[CHECKPOINT_KEY] = path
    if config.getoption("user_call") is not None:
        try:
            config.stash[USER_CALL_KEY] = user_call.load(config.getoption("user_call"))
        except user_call.UserCallError as error:
            raise pytest.UsageError(str(error)) from None
    folder = config.getoption("reference_folder")
    if folder is not None:
        folder = config.option.reference_folder = folder.expanduser().resolve()
        if folder.exists() and not folder.is_dir():
            raise pytest.UsageError(f"--reference-folder={folder} is not a directory")
    if path != checkpoint.EMBEDDED or folder is not None:
        # The committed snapshots are the embedded checkpoints': with another checkpoint or reference folder their
        # tests skip or read elsewhere, and syrupy, which does not always count a skipped test's snapshot as kept,
        # must not fail the run on them.
        config.option.warn_unused_snapshots = True

    requested = config.getoption("device")
    for device in requested or ():
        reason = targets.device_problem(device)
        if reason:
            raise pytest.UsageError(f"--device {device} was requested but {reason}")
    # Like an attention implementation this machine lacks, an absent device is left out of the parameterisation
    # (hundreds of items that could only be skipped), said once in the header and in run_info["devices"].
    config.stash[DEVICES_KEY] = tuple(requested or [d for d in targets.DEVICES if targets.device_problem(d) is None])

    if config.getoption("no_expectations"):
        config.stash[EXPECTATIONS_KEY] = None
    else:
        try:
            config.stash[EXPECTATIONS_KEY] = expectations.load(config.getoption("expectations_file"))
        except expectations.ExpectationsError as error:
            raise pytest.UsageError(str(error)) from None

    if hasattr(config, "workerinput"):
        # xdist workers share the cores: one intra-op thread pool each would oversubscribe them (3x slower here).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.workerinput["workercount"]))

    if config.getoption("update_snapshots", False) and config.getoption("numprocesses", None):
        # Only the float32 CPU target records; the others compare with what it wrote, which a worker may not have yet.
        raise pytest.UsageError(
            f"--snapshot-update is refused under pytest-xdist (-n): record in one process: {snapshots.UPDATE_COMMAND}"
        )


    if not hasattr(config, "workerinput"):  # the xdist controller, or a run without xdist, writes the results
        devices = {device: targets.device_problem(device) or "available" for device in targets.DEVICES}
        known = config.stash[EXPECTATIONS_KEY]
        info = recorder.run_info(
            ROOT,
            devices=devices,
            checkpoint=checkpoint.describe(path),
            expectations_applied=known is not None,
        )
        if known is not None:
            info["adopted"] = str(known.adopted)
            info["provisional"] = known.provisional(adapter.INSTALLED)
        results_recorder = recorder.ResultsRecorder(
            config, recorder.ResultsCollector(info), results_path(config), known=known, release=adapter.INSTALLED,
            unused_expectations=lambda ran, slow: unused_expectations(config, ran, slow),
        )
        config.pluginmanager.register(results_recorder, recorder.RECORDER_PLUGIN)


def pytest_report_header(config):
    left_out = [f"{a} ({targets.attention_problem(a)})" for a in targets.ATTENTION_IMPLEMENTATIONS
                if targets.attention_problem(a)]
    lines = [
        f"transformers {adapter.INSTALLED}, torch {torch.__version__}",
        f"checkpoint: {checkpoint.describe(config.stash[CHECKPOINT_KEY])}",
        "devices: " + ", ".join(config.stash[DEVICES_KEY]) + "; left out: " + (", ".join(
            f"{d} ({targets.device_problem(d)})" for d in targets.DEVICES
            if d not in config.stash[DEVICES_KEY] and targets.device_problem(d)) or "none"),
        "attention implementations left out: " + (", ".join(left_out) or "none"),
    ]
    known = config.stash[EXPECTATIONS_KEY]
    if known is None:
        lines.append("expectations: ignored (--no-expectations)")
    else:
        lines.append(f"expectations: {known.path} (adopted release {known.adopted})")
        if known.provisional(adapter.INSTALLED):
            lines.append(provisional_line(known))
    return lines


def provisional_line(known: expectations.ExpectationsFile) -> str:
    return (f"PROVISIONAL: transformers {adapter.INSTALLED} is newer than {known.adopted}, the newest adopted release; "
            f"failures that {known.adopted}'s entries explain are carried forward (xfailed, marked carried), anything "
            "else is judged as is. Adopt it with: python -m cache_conformance.releases.adopt <results file>")


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        all_targets = targets.all_targets(metafunc.config.stash[DEVICES_KEY])
        metafunc.parametrize("target", all_targets, ids=[t.id for t in all_targets], scope="session")


def is_deselected_as_slow(item, include_slow: bool) -> bool:
    """Whether a check marked slow stays out of this run: always unless --include-slow, except on the targets
    whose id matches the marker's `except_on` pattern (`*` is any run of characters)."""
    marker = item.get_closest_marker("slow")
    if marker is None or include_slow:
        return False
    target = item.callspec.params.get("target") if hasattr(item, "callspec") else None
    except_on = marker.kwargs.get("except_on")
    return not (except_on and target is not None and expectations.matches(except_on, target.id))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    include_slow = config.getoption("include_slow")
    kept, slow = [], []
    for item in items:
        (slow if is_deselected_as_slow(item, include_slow) else kept).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = kept
    config.stash[recorder.SLOW_DESELECTED_KEY] = [item.nodeid for item in slow]
    if hasattr(config, "workeroutput"):  # an xdist worker: the controller, which writes the results, never collects
        config.workeroutput["slow_deselected"] = config.stash[recorder.SLOW_DESELECTED_KEY]
    known = config.stash[EXPECTATIONS_KEY]
    for item in items:
        if not item.path.is_relative_to(SUITES):
            continue  # the project's own tests are not conformance checks
        target = item.callspec.params.get("target") if hasattr(item, "callspec") else None
        suite = item.path.stem.removeprefix("test_")
        item.user_properties += [
            ("suite", suite),
            ("check", results.check_name(item.nodeid, target.id if target else None)),
            ("params", target.as_dict() if target else {}),
        ]
        if target is not None:
            reason = targets.target_problem(target)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
                continue
            # With `--dist loadgroup`, one worker runs all tests of a target: the model loads once per target.
            item.add_marker(pytest.mark.xdist_group(target.id))
        applied = known.find(item.nodeid, adapter.INSTALLED) if known is not None else None
        if applied:
            item.stash[EXPECTATION_KEY] = applied
            carried = {"carried_from": str(applied.carried_from)} if applied.carried_from else {}
            item.user_properties.append(("expectation", {"expected": "fail", **applied.entry.as_dict(), **carried}))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    if call.when == "call":
        recorded = dict(item.stash.get(METRICS_KEY, {}))
        comparison = item.stash.get(COMPARISON_KEY, None)
        if comparison is not None:
            recorded |= comparison.metrics
        notes = getattr(call.excinfo.value, "__notes__", []) if call.excinfo is not None else []
        # hypothesis notes a property's first counterexample on the exception: its draws and how to replay it
        # (not its "Failing test case" call, which prints the whole model)
        counterexample = [n.strip() for n in notes if n.startswith("Draw ") or "@reproduce_failure" in n]
        if counterexample:
            recorded["counterexample"] = counterexample
        found = evidence.of(call.excinfo.value) if call.excinfo is not None else None
        if found is not None:
            recorded["evidence"] = found  # what the failed check found, where and by how much
        if recorded:
            item.user_properties.append(("metrics", recorded))
        if call.excinfo is not None:
            # the type the expectations' `raises` names; the message alone does not always carry it
            item.user_properties.append(("raised", call.excinfo.typename))
    outcome = yield
    applied = item.stash.get(EXPECTATION_KEY, None)
    if applied is not None and call.when == "call":
        expectations.judge(outcome.get_result(), call, applied,
                           checkpoint.embedded_name(item.config.stash[CHECKPOINT_KEY]))


def results_path(config) -> Path:
    return config.getoption("results_file") or ROOT / "reports" / "results" / f"transformers-{adapter.INSTALLED}.json"


def unused_expectations(config, ran: list[str], slow: list[str]) -> list[expectations.Expectation]:
    """Entries for this release none of whose patterns that this run could have matched did match. Not judged
    at all when -k, -m or --lf narrowed the run. A pattern this run could not have matched: one naming a device
    or a device-attention pair it had no target for (--device, or an attention implementation left out here,
    e.g. flex_attention without CUDA), one naming a slow check it deselected, and, when paths or node ids narrowed
    the run, one naming no test function that was collected."""
    known = config.stash[EXPECTATIONS_KEY]
    if known is None or config.getoption("keyword") or config.getoption("markexpr") or config.getoption("lf", False):
        return []
    functions = {nodeid.partition("[")[0] for nodeid in ran}
    whole_suite = all("::" not in arg and Path(arg).resolve() == SUITES for arg in config.args)
    devices = config.stash[DEVICES_KEY]
    pairs = {(t.device, t.attn_implementation) for t in targets.all_targets(devices)}
    outside = [f"-{d}-" for d in targets.DEVICES if d not in devices]
    outside += [f"-{d}-{a}" for d in targets.DEVICES for a in targets.ATTENTION_IMPLEMENTATIONS if (d, a) not in pairs]

    def could_match(pattern: str) -> bool:
        return (not any(mark in pattern for mark in outside)
                and not any(expectations.matches(pattern, nodeid) for nodeid in slow)
                and (whole_suite or expectations.names_function(pattern, functions)))

    return known.unused(ran, adapter.INSTALLED, could_match)
