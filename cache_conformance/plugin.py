"""The pytest plugin behind every suite: options, the target parameterisation, fixtures, strict expectations
and the results file. Loaded by the root conftest.py."""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import Phase, settings

# No network at run time: set before transformers (imported by the adapter) reads them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from cache_conformance import adapter, checkpoint, expectations, faults, results, snapshots, targets
from cache_conformance.adapter import multimodal
from cache_conformance.compare import Comparison
from cache_conformance.decoding import random_tokens
from cache_conformance.tolerances import reference_tolerance_for, tolerance_for

# Select with --hypothesis-profile. Shrinking a failure costs minutes on this model (up to hypothesis' own
# 5-minute cap per test) and expected failures on old releases would pay it every run, so only the "shrink"
# profile shrinks; the others report the first failing example, reproducible from its printed blob.
_NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]
_COMMON = {"deadline": None, "print_blob": True, "report_multiple_bugs": False}
PROFILES = {
    "default": {"max_examples": 20, "phases": _NO_SHRINK},
    # the same examples on every run, and no example database that an earlier run could have filled
    "ci": {"max_examples": 20, "phases": _NO_SHRINK, "derandomize": True, "database": None},
    "thorough": {"max_examples": 300, "phases": _NO_SHRINK},
    "shrink": {"max_examples": 100},
}
for _name, _profile in PROFILES.items():
    settings.register_profile(_name, **_profile, **_COMMON)
settings.load_profile("default")

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "suites"
DEFAULT_EXPECTATIONS = SUITES / "expectations.toml"
COMPARISON_KEY = pytest.StashKey[Comparison]()
METRICS_KEY = pytest.StashKey[dict]()
CHECKPOINT_KEY = pytest.StashKey[Path]()
CHECKPOINT_KEYS_KEY = pytest.StashKey[dict]()  # reference-folder keys, by checkpoint path
DEVICES_KEY = pytest.StashKey[tuple]()
EXPECTATIONS_KEY = pytest.StashKey[expectations.ExpectationsFile | None]()
EXPECTATION_KEY = pytest.StashKey[expectations.Applied]()
SLOW_DESELECTED_KEY = pytest.StashKey[list]()


def pytest_addoption(parser):
    group = parser.getgroup("cache-conformance")
    group.addoption("--checkpoint", help=f"Gemma 3 checkpoint folder, text or multimodal (default: "
                    f"${checkpoint.ENVIRONMENT_VARIABLE} or the embedded tiny checkpoint)")
    group.addoption("--reference-folder", type=Path,
                    help="folder of reference logits (snapshots), kept per checkpoint under <folder>/<checkpoint "
                    "key>/: record them with --snapshot-update on the release you trust, compare on any other. "
                    "Default: fixtures/snapshots/ for the embedded checkpoints; other checkpoints have none")
    group.addoption("--device", action="append", choices=targets.DEVICES,
                    help="run on this device only (repeatable); it must be present. Default: every device present "
                    "(absent ones are named, with the reason, in the header and the results file)")
    group.addoption("--no-expectations", action="store_true",
                    help="ignore the expectations file: every upstream non-conformance fails")
    group.addoption("--expectations-file", type=Path, default=DEFAULT_EXPECTATIONS)
    group.addoption("--results-file", type=Path,
                    help="where to write the JSON results (default: reports/results/transformers-<version>.json)")
    group.addoption("--seed", type=int, default=0, help="seed for the token sequences (default 0)")
    group.addoption("--isolate-overflows", action="store_true",
                    help="run each overflow scenario in a child process on every device (always done on CUDA, "
                    "where a device-side assert poisons the process it happens in)")
    group.addoption("--include-slow", action="store_true",
                    help="also run the checks marked slow (compilation and export on every target); by default "
                    "they are deselected, except on the targets their marker names")
    group.addoption("--inject-fault", choices=sorted(faults.CATALOGUE),
                    help="patch a deliberate cache bug into transformers for this run (the suites must fail)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Before hypothesis' own plugin loads the profile, which ends an unknown name in an INTERNALERROR traceback.
    profile = config.getoption("hypothesis_profile", None)
    if profile is not None and profile not in PROFILES:
        raise pytest.UsageError(
            f"--hypothesis-profile={profile} is not a profile of this suite; choose one of {', '.join(PROFILES)}"
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

    fault_name = config.getoption("inject_fault")
    if fault_name:
        patcher = pytest.MonkeyPatch()
        faults.apply(fault_name, patcher)
        config.add_cleanup(patcher.undo)

    if not hasattr(config, "workerinput"):  # the xdist controller, or a run without xdist, writes the results
        devices = {device: targets.device_problem(device) or "available" for device in targets.DEVICES}
        known = config.stash[EXPECTATIONS_KEY]
        info = results.run_info(
            ROOT,
            devices=devices,
            checkpoint=checkpoint.describe(path),
            expectations_applied=known is not None,
        )
        if known is not None:
            info["adopted"] = str(known.adopted)
            info["provisional"] = known.provisional(adapter.INSTALLED)
        if fault_name:
            info["injected_fault"] = fault_name
        config.pluginmanager.register(ResultsRecorder(config, results.ResultsCollector(info)), "cache-conformance-results")


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
    if config.getoption("inject_fault"):
        fault = faults.CATALOGUE[config.getoption("inject_fault")]
        lines.append(f"INJECTED FAULT {fault.name}: {fault.description}")
    return lines


def provisional_line(known: expectations.ExpectationsFile) -> str:
    return (f"PROVISIONAL: transformers {adapter.INSTALLED} is newer than {known.adopted}, the newest adopted release; "
            f"failures that {known.adopted}'s entries explain are carried forward (xfailed, marked carried), anything "
            "else is judged as is. Adopt it with: python -m cache_conformance.adopt <results file>")


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
    config.stash[SLOW_DESELECTED_KEY] = [item.nodeid for item in slow]
    if hasattr(config, "workeroutput"):  # an xdist worker: the controller, which writes the results, never collects
        config.workeroutput["slow_deselected"] = config.stash[SLOW_DESELECTED_KEY]
    known = config.stash[EXPECTATIONS_KEY]
    for item in items:
        if not item.path.is_relative_to(SUITES):
            continue  # the project's own tests are not conformance checks
        target = item.callspec.params.get("target") if hasattr(item, "callspec") else None
        suite = item.path.stem.removeprefix("test_")
        item.user_properties += [
            ("suite", suite),
            ("check", check_name(item.nodeid, target)),
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
        if recorded:
            item.user_properties.append(("metrics", recorded))
        if call.excinfo is not None:
            # the type the expectations' `raises` names; the message alone does not always carry it
            item.user_properties.append(("raised", call.excinfo.typename))
    outcome = yield
    applied = item.stash.get(EXPECTATION_KEY, None)
    if applied is not None and call.when == "call":
        judge_against_expectation(outcome.get_result(), call, applied)


def judge_against_expectation(report, call, applied: expectations.Applied) -> None:
    """An expected failure holds only when the call failed the way the entry says (strict, like wpt's FAIL vs
    CRASH): a pass is XPASS(strict), any other failure stays a failure with both texts. Setup errors are never
    expected. Outcomes are set as pytest's own xfail sets them, so reports, xdist and the results file agree.
    A verdict by an entry carried forward to a release not adopted yet says so in its reason."""
    if report.skipped:
        return
    expectation, label = applied.entry, applied.label
    reason = f"{label}: {expectation.reason}" if label else expectation.reason
    if report.passed:
        report.outcome = "failed"
        report.longrepr = f"[XPASS(strict)] {reason}"
        return
    exception_type, message = call.excinfo.typename, str(call.excinfo.value)
    if expectation.explains(exception_type, message):
        report.outcome = "skipped"
        report.wasxfail = reason
        return
    mismatch = (f"expected failure{f' ({label})' if label else ''} did not match: expected {expectation.describe()}; "
                f"got {exception_type}: {message.splitlines()[0] if message else ''}")
    report.user_properties.append(("expectation_mismatch", mismatch))
    if hasattr(report.longrepr, "addsection"):
        report.longrepr.addsection("expectation", mismatch)


def check_name(nodeid: str, target: targets.Target | None) -> str:
    """The node id without the target's part: the same check on every dtype, device and attention."""
    if target is None:
        return nodeid
    base, _, params = nodeid.partition("[")
    params = params.removesuffix("]").replace(target.id, "", 1).replace("--", "-").strip("-")
    return f"{base}[{params}]" if params else base


def results_path(config) -> Path:
    return config.getoption("results_file") or ROOT / "reports" / "results" / f"transformers-{adapter.INSTALLED}.json"


class ResultsRecorder:
    """Registered on the process that sees every test report (the xdist controller, or the only process)."""

    def __init__(self, config, collector: results.ResultsCollector):
        self.config = config
        self.collector = collector
        self.started = time.monotonic()
        # Where this run's time went (the matrix runner prints it per release); with xdist, the controller's view.
        self.phases = {"imports_s": seconds_since_process_start()}
        self.workers_slow_deselected: list[str] = []  # with xdist, what the workers deselected as slow

    def pytest_collection(self, session):
        self.collection_started = time.monotonic()

    def pytest_collection_finish(self, session):
        self.collection_finished = time.monotonic()
        self.phases["collection_s"] = round(self.collection_finished - self.collection_started, 2)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """An xdist worker finished: keep the slow checks it deselected (every worker collects the same items)."""
        self.workers_slow_deselected = getattr(node, "workeroutput", {}).get("slow_deselected", [])

    def slow_deselected(self) -> list[str]:
        """Node ids of the slow checks this run deselected, whether it collected them itself or xdist workers did."""
        return self.config.stash.get(SLOW_DESELECTED_KEY, None) or self.workers_slow_deselected

    def pytest_runtest_logreport(self, report):
        if "suite" in dict(report.user_properties):
            self.collector.add(report)

    def pytest_sessionfinish(self, session):
        if not self.collector.records:
            return  # no conformance check ran (e.g. only the project's own tests)
        self.collector.info["unused_expectations"] = [e.as_dict() for e in self.unused_expectations()]
        if "collection_s" in self.phases:
            self.phases["tests_s"] = round(time.monotonic() - self.collection_finished, 2)
        self.collector.info["phases"] = self.phases
        self.collector.info["slow_deselected"] = len(self.slow_deselected())
        if self.config.stash[EXPECTATIONS_KEY] is not None:
            self.collector.info["carried"] = len(self.carried())
        self.collector.write(results_path(self.config), time.monotonic() - self.started)

    def pytest_terminal_summary(self, terminalreporter):
        if not self.collector.records:
            return
        for entry in self.unused_expectations():
            terminalreporter.write_line(
                f"WARNING: expectation matches no test that ran: tests={entry.tests} releases={entry.releases}",
                yellow=True,
            )
        known = self.config.stash[EXPECTATIONS_KEY]
        if known is not None and known.provisional(adapter.INSTALLED):
            terminalreporter.write_line(
                f"PROVISIONAL: {len(self.carried())} of the expected failures are carried from {known.adopted} "
                f"(transformers {adapter.INSTALLED} is not adopted); adopt it with: "
                f"python -m cache_conformance.adopt {results_path(self.config)}", yellow=True)
        slow = self.slow_deselected()
        if slow:
            terminalreporter.write_line(f"{len(slow)} slow checks deselected (compilation and export on other "
                                        "targets): --include-slow runs them")
        terminalreporter.write_line(f"results: {results_path(self.config)}")

    def carried(self) -> list[str]:
        """Node ids of the expected failures that held only by being carried forward to this release."""
        return [nodeid for nodeid, record in self.collector.records.items()
                if record["outcome"] == "xfailed" and record.get("carried_from")]

    def unused_expectations(self) -> list[expectations.Expectation]:
        """Entries for this release none of whose patterns that this run could have matched did match. Not judged
        at all when -k, -m or --lf narrowed the run. A pattern this run could not have matched: one naming a device
        or a device-attention pair it had no target for (--device, or an attention implementation left out here,
        e.g. flex_attention without CUDA), and, when paths or node ids narrowed the run, one naming no test
        function that was collected."""
        if self.config.getoption("keyword") or self.config.getoption("markexpr") or self.config.getoption("lf", False):
            return []
        ran = list(self.collector.records)
        functions = {nodeid.partition("[")[0] for nodeid in ran}
        whole_suite = all("::" not in arg and Path(arg).resolve() == SUITES for arg in self.config.args)
        devices = self.config.stash[DEVICES_KEY]
        pairs = {(t.device, t.attn_implementation) for t in targets.all_targets(devices)}
        outside = [f"-{d}-" for d in targets.DEVICES if d not in devices]
        outside += [f"-{d}-{a}" for d in targets.DEVICES for a in targets.ATTENTION_IMPLEMENTATIONS if (d, a) not in pairs]

        slow = self.slow_deselected()

        def could_match(pattern: str) -> bool:
            return (not any(mark in pattern for mark in outside)
                    and not any(expectations.matches(pattern, nodeid) for nodeid in slow)
                    and (whole_suite or expectations.names_function(pattern, functions)))

        known = self.config.stash[EXPECTATIONS_KEY]
        unused = []
        for entry in known.entries if known is not None else []:
            judged = [pattern for pattern in entry.tests if could_match(pattern)]
            if known.reaches(entry, adapter.INSTALLED) and judged and not any(
                expectations.matches(pattern, nodeid) for pattern in judged for nodeid in ran
            ):
                unused.append(entry)
        return unused


def seconds_since_process_start() -> float | None:
    """Seconds since this interpreter started (Linux: /proc, to 10 ms), or None where that cannot be read."""
    try:
        started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - started_ticks / os.sysconf("SC_CLK_TCK"), 2)


# ---- fixtures ----

@pytest.fixture(scope="session")
def checkpoint_path(pytestconfig) -> Path:
    return pytestconfig.stash[CHECKPOINT_KEY]


@pytest.fixture(scope="session")
def model(target, pytestconfig):
    """The checkpoint loaded once per target (pytest groups tests by target), in eval mode. Never modify it."""
    return adapter.load_model(
        pytestconfig.stash[CHECKPOINT_KEY],
        dtype=target.dtype,
        device=target.device,
        attn_implementation=target.attn_implementation,
    )


@pytest.fixture
def logits_snapshot(snapshot, target, metrics, pytestconfig):
    """syrupy's snapshot of the checkpoint's reference logits, at this target's tolerance (see `_logits_snapshot`)."""
    return _logits_snapshot(snapshot, target, metrics, pytestconfig, pytestconfig.stash[CHECKPOINT_KEY],
                            committed_for=checkpoint.EMBEDDED)


@pytest.fixture
def multimodal_logits_snapshot(snapshot, target, metrics, pytestconfig):
    """Like `logits_snapshot`, for the checkpoint the multimodal checks load."""
    return _logits_snapshot(snapshot, target, metrics, pytestconfig,
                            checkpoint.multimodal_checkpoint(pytestconfig.stash[CHECKPOINT_KEY]),
                            committed_for=checkpoint.MULTIMODAL_EMBEDDED)


def _checkpoint_key(config, path: Path) -> str:
    """checkpoint.key, computed once per checkpoint and session: it reads every weight file."""
    keys = config.stash.setdefault(CHECKPOINT_KEYS_KEY, {})
    if path not in keys:
        keys[path] = checkpoint.key(path)
    return keys[path]


def _logits_snapshot(snapshot, target, metrics, config, checkpoint_path: Path, *, committed_for: Path):
    """syrupy's snapshot with the tensor extension at this target's tolerance, kept in the checkpoint's reference
    folder; its max abs diff goes to `metrics`. Only the float32 CPU eager target records on --snapshot-update; every
    other target compares with it. Skips for a checkpoint that has no reference folder (the committed references
    are `committed_for`'s)."""
    chosen = config.getoption("reference_folder")
    folder = snapshots.reference_folder(checkpoint_path, chosen, committed_for,
                                        key=lambda path: _checkpoint_key(config, path))
    if folder is None:
        pytest.skip(f"no reference logits are kept for {checkpoint_path}: choose a folder for them with "
                    f"--reference-folder=DIR and record them with: {snapshots.update_command(checkpoint_path, Path('DIR'))}")
    tolerance = reference_tolerance_for(target.dtype_name, target.device)
    extension = snapshots.TensorSnapshotExtension.configured(tolerance, folder,
                                                              snapshots.update_command(checkpoint_path, chosen))
    assertion = snapshot.use_extension(extension)
    assertion.update_snapshots = assertion.update_snapshots and target == snapshots.REFERENCE_TARGET
    assertion.extension.metrics = metrics
    return assertion


@pytest.fixture(scope="session")
def multimodal_model(target, pytestconfig):
    """The multimodal checkpoint (Gemma3ForConditionalGeneration) loaded once per target, in eval mode: the
    --checkpoint when it is multimodal, else the embedded tiny one."""
    return multimodal.load_model(
        checkpoint.multimodal_checkpoint(pytestconfig.stash[CHECKPOINT_KEY]),
        dtype=target.dtype,
        device=target.device,
        attn_implementation=target.attn_implementation,
    )


@pytest.fixture(scope="session")
def draft_model(target, model):
    """The embedded draft model of assisted decoding (the embedded text model's first sliding and full layer) in
    the target's dtype and device; skips when the checkpoint's vocabulary is not the draft's (a draft proposes token
    ids, so it must share the vocabulary)."""
    draft = adapter.load_model(checkpoint.DRAFT_EMBEDDED, dtype=target.dtype, device=target.device,
                               attn_implementation=target.attn_implementation)
    vocabulary, draft_vocabulary = (adapter.text_config(m.config).vocab_size for m in (model, draft))
    if vocabulary != draft_vocabulary:
        pytest.skip(f"assisted decoding needs a draft model with the checkpoint's vocabulary ({vocabulary} tokens); "
                    f"the embedded draft has {draft_vocabulary}")
    return draft


@pytest.fixture(scope="session")
def multimodal_window(multimodal_model) -> int:
    return adapter.window(multimodal_model.config)


@pytest.fixture
def multimodal_tokens(request, multimodal_model):
    """Like `tokens`, drawn for the multimodal model (its vocabulary and device)."""
    return _tokens(request, multimodal_model, request.config.getoption("seed"))


@pytest.fixture
def multimodal_recorded_tokens(request, multimodal_model):
    """Like `recorded_tokens`, for the multimodal model."""
    return _tokens(request, multimodal_model, 0)


@pytest.fixture(scope="session")
def window(model) -> int:
    return adapter.window(model.config)


@pytest.fixture
def compare(request, target) -> Comparison:
    """Logit comparisons with the target's tolerance; the worst difference goes into the results file."""
    comparison = Comparison(tolerance_for(target.dtype_name, target.device))
    request.node.stash[COMPARISON_KEY] = comparison
    return comparison


@pytest.fixture
def metrics(request) -> dict:
    """Figures for the results file: whatever a test puts in this dict is recorded with its outcome."""
    return request.node.stash.setdefault(METRICS_KEY, {})


@pytest.fixture
def tokens(request, model):
    """tokens(batch, length) -> random token ids on the target device, reproducible per test and --seed.

    The seed depends on the test's check name, not on the target, so every dtype and device sees the same tokens.
    """
    return _tokens(request, model, request.config.getoption("seed"))


@pytest.fixture
def recorded_tokens(request, model):
    """Like `tokens`, always with seed 0: the tokens the snapshots were recorded with, whatever --seed says."""
    return _tokens(request, model, 0)


@pytest.fixture(scope="session")
def named_tokens(pytestconfig, model):
    """named_tokens(name) -> tokens(batch, length) seeded by `name` and --seed rather than by the test: for a
    scenario that several tests grade (run once, shared through a session fixture)."""
    return lambda name: _token_source(model, name, pytestconfig.getoption("seed"))


def _tokens(request, model, seed: int):
    return _token_source(model, dict(request.node.user_properties).get("check", request.node.nodeid), seed)


def _token_source(model, name: str, seed: int):
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()) ^ seed)
    return lambda batch, length: random_tokens(model, batch, length, generator)
