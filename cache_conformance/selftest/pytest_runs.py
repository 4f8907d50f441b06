"""Run many short pytest sessions in a few long-lived worker processes.

A fresh pytest process pays for Python, torch and transformers (and transformers' model code) before its first
test: seconds, often more than the session's tests. Here each worker process pays that once and then runs one
session after another in itself (`pytest.main`), each with its own configuration, fixtures and `--inject-fault`
patch, which the session undoes when it ends (the plugin's config cleanup). Sessions are handed to whichever worker
is free. A worker process that dies (a segfault, the OOM killer) breaks the pool: its session and every session
not yet finished come back as runs without results, whose output says so.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pytest

from cache_conformance import ROOT
from cache_conformance.records import results
from cache_conformance.selftest import injection


@dataclass(frozen=True)
class Session:
    """One pytest session: its arguments and the catalogued fault injected for it (None: no fault)."""

    args: tuple[str, ...]
    fault: str | None = None


@dataclass
class Run:
    """What one session did: pytest's exit code, the tail of its output, its results file (None if none written)."""

    code: int
    output: str
    results: dict | None


def run_here(session: Session) -> Run:
    """Run `session` in this process (a worker of `session_pool`), its terminal output captured."""
    with tempfile.TemporaryDirectory() as scratch:
        results_file = Path(scratch) / "results.json"
        args = ["-q", "-p", "no:cacheprovider", f"--rootdir={ROOT}", f"--results-file={results_file}", *session.args]
        if session.fault:
            args += injection.arguments(session.fault)
        output = io.StringIO()
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = int(pytest.main(args))
        written = None
        if results_file.exists():
            try:
                written = results.read(results_file)
            except results.ResultsError as error:  # a run without results: its output ends with why
                print(f"error: {error}", file=output)
    return Run(code, output.getvalue(), written)


def _start_worker(threads: int) -> None:
    import torch

    os.chdir(ROOT)
    torch.set_num_threads(threads)


def session_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` long-lived processes to run sessions in (`pool.submit(run_here, session)`): clean interpreters
    (spawned, no state of the caller's), the cores split between them, started now with the hash seed tox gives
    the suites. The caller shuts the pool down."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(threads,))
    with _environment(PYTHONHASHSEED="0"):  # read by each process as it starts: one per task submitted at once
        for started in as_completed([pool.submit(os.getpid) for _ in range(workers)]):
            started.result()
    return pool


def run_all(sessions: list[Session], *, workers: int, on_done=None) -> list[Run]:
    """Run every session on `workers` worker processes (the cores split between them); returns the Runs in the
    order of `sessions`. `on_done(index, run)` is called as each session finishes."""
    runs: list[Run | None] = [None] * len(sessions)
    with session_pool(workers) as pool:
        futures = {pool.submit(run_here, session): index for index, session in enumerate(sessions)}
        for future in as_completed(futures):
            index = futures[future]
            try:
                runs[index] = future.result()
            except BrokenProcessPool as error:
                runs[index] = Run(-1, f"a worker process died before or while this session ran: {error}", None)
            if on_done:
                on_done(index, runs[index])
    return runs


@contextlib.contextmanager
def _environment(**variables: str):
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
