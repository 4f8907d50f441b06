"""Run the suites on a set of transformers releases, two at a time, collect their results files, build the report.

    python -m cache_conformance.releases.matrix [--releases 4.50 4.56 5.0 latest] [--jobs 2] [--no-report] [-- pytest args]

Each release runs in its tox environment `py311-transformers-<release>` (created on first use, reused after), with
the project's wheel built once for all of them (tox's --installpkg) rather than once per release. Phases are timed
apart: the wheel; per release, creating or checking the environment (`tox run --notest`), then the run
(`tox run --skip-pkg-install`) and within it, from its results file, interpreter start and imports, collection and
tests; the report (`tox -e report`) at the end. The closing table lists them per release, with their totals.
A release whose environment resolves to a transformers version another release already runs (`latest` and the
newest minor, until a new minor appears) is not run twice: its state is "same".
Default releases: every `py311-transformers-*` environment that `tox -l` lists (each minor from 4.50 to the
newest, then `latest`). A release whose environment fails to install, or whose run crashes or times out, does
not stop the others: it gets a stand-in results file, reports/results/transformers-<requested>.json =
    {"format": 1, "run_info": {"transformers": "<requested>", "crashed": "<one-line reason>", "tox_env": ...,
     "started": ..., "command": ..., "log": ...}, "summary": {}, "tests": []}
so that its column in the report says so. A completed run's file is reports/results/transformers-<installed
version>.json, as after a plain `tox -e`. Every run's output goes to reports/logs/<tox env>.log.

Threads: with --jobs 2 on 2 cores each run uses one process (`-n 0`) with one torch thread (OMP_NUM_THREADS);
with --jobs 1 the run keeps tox's `-n auto` (one xdist worker per core). See docs/report.md.

Exit status: 0 when every release ran (or shares its version with one that ran) and met its expectations, 1 when
any failed or crashed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cache_conformance import ROOT
from cache_conformance.records import results

ENV_PREFIX = "py311-transformers-"
FINISHED = ("passed", "failed", "crashed", "same")
MET = ("passed", "same")  # met its expectations, itself or through the release that ran its version


@dataclass
class Job:
    release: str
    state: str = "waiting"  # waiting, running, passed, failed, crashed, same (as another release: not run again)
    started: float = 0.0
    finished: float = 0.0
    version: str = ""
    detail: str = ""  # failure counts or the crash reason
    results_file: Path | None = None
    environment_s: float = 0.0  # creating (or checking) the tox environment
    run_s: float = 0.0  # the tox run of the suites, tox's own start-up included
    phases: dict = field(default_factory=dict)  # the run's own figures (results file's run_info["phases"])

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.release


@dataclass
class VersionClaims:
    """Which release runs each installed transformers version: two environments that resolve to the same version
    (the newest minor and `latest`, until a new minor appears) run the suites once."""

    by_version: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, version: str, release: str) -> str | None:
        """None when `release` is the first to claim `version`, else the release that did."""
        with self.lock:
            owner = self.by_version.setdefault(version, release)
        return None if owner == release else owner


@dataclass
class Settings:
    results: Path
    logs: Path
    jobs: int
    timeout_s: float
    wheel: Path
    pytest_args: list[str] = field(default_factory=list)
    claims: VersionClaims = field(default_factory=VersionClaims)


def tox_releases() -> list[str]:
    """The releases that tox.ini has an environment for, in its order."""
    listed = subprocess.run(["tox", "-l"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [env.removeprefix(ENV_PREFIX) for env in listed if env.startswith(ENV_PREFIX)]


def thread_settings(jobs: int, cores: int) -> tuple[list[str], dict[str, str]]:
    """pytest arguments and environment that split the cores between `jobs` parallel runs."""
    if jobs == 1:
        return [], {}  # tox's own `-n auto`: one xdist worker, one thread each, per core
    threads = str(max(1, cores // jobs))
    return ["-n", "0"], {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def build_wheel(folder: Path) -> Path:
    """The project's wheel, built once: every release's environment installs this same file."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder), str(ROOT)],
                   check=True, capture_output=True, text=True)
    return next(folder.glob("*.whl"))


def run_release(job: Job, settings: Settings) -> None:
    """Run one release's suites in its tox environment; never raises for a failed install or run."""
    job.state, job.started = "running", time.monotonic()
    partial = settings.results / ".matrix" / f"{job.env}.json"
    partial.unlink(missing_ok=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log = settings.logs / f"{job.env}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    xdist_args, thread_env = thread_settings(settings.jobs, os.cpu_count() or 1)
    create = ["tox", "run", "-e", job.env, "--notest", "--installpkg", str(settings.wheel)]
    command = ["tox", "run", "-e", job.env, "--skip-pkg-install", "--", *xdist_args, f"--results-file={partial}",
               *settings.pytest_args]
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    deadline = job.started + settings.timeout_s
    with log.open("w") as out:
        code = run_logged(create, out, thread_env, deadline)
        job.environment_s = time.monotonic() - job.started
        version = installed_version(job.env) if code == 0 else None
        same_as = settings.claims.claim(version, job.release) if version else None
        if same_as:
            out.write(f"transformers {version} is installed, as for {same_as}: the suites run once for it\n")
        elif code == 0:
            code = run_logged(command, out, thread_env, deadline)
            job.run_s = time.monotonic() - job.started - job.environment_s
    job.finished = time.monotonic()
    if same_as:
        job.state, job.version = "same", version
        job.detail = f"transformers {version}, as {same_as}: not run twice"
        job.results_file = settings.results / f"transformers-{version}.json"
        return

    unreadable = ""
    if code in (0, 1) and partial.exists():  # pytest's 1 means unexpected failures; the results file holds them
        try:
            info = results.read(partial)
        except results.ResultsError as error:
            unreadable = str(error)
        else:
            job.version = info["run_info"]["transformers"]
            job.phases = info["run_info"].get("phases", {})
            job.results_file = settings.results / f"transformers-{job.version}.json"
            partial.replace(job.results_file)
            (settings.results / f"transformers-{job.release}.json").unlink(missing_ok=True)  # an older stand-in
            failures = {k: v for k, v in info.get("summary", {}).items() if k in ("failed", "error")}
            job.state = "failed" if failures else "passed"
            job.detail = ", ".join(f"{v} {k}" for k, v in failures.items())
            return

    reason = f"timed out after {settings.timeout_s:.0f} s" if code is None else unreadable or crash_reason(log, code)
    job.state, job.detail = "crashed", reason
    job.results_file = write_stand_in(settings.results, job.release, reason, env=job.env, started=started_at,
                                      command=" ".join(command), log=log)
    partial.unlink(missing_ok=True)


def installed_version(env: str) -> str | None:
    """The transformers version in the tox environment `env` (tox's default folder), or None if it cannot say."""
    python = ROOT / ".tox" / env / "bin" / "python"
    asked = subprocess.run([str(python), "-c", "from importlib.metadata import version; print(version('transformers'))"],
                           capture_output=True, text=True, check=False) if python.exists() else None
    return asked.stdout.strip() if asked is not None and asked.returncode == 0 else None


def run_logged(command: list[str], out, environment: dict[str, str], deadline: float) -> int | None:
    """Run `command` with its output appended to `out`; its exit code, or None when it passed `deadline`."""
    out.write("$ " + " ".join(command) + "\n")
    out.flush()
    process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                               env=os.environ | environment, start_new_session=True)
    try:
        return process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # tox, pytest and its workers
        process.wait()
        return None


def write_stand_in(folder: Path, release: str, reason: str, *, env: str, started: str, command: str,
                   log: Path) -> Path:
    """The results file of a release that has no results, so that the report's column says why."""
    stand_in = {
        "format": 1,
        "run_info": {"transformers": release, "crashed": reason, "tox_env": env, "started": started,
                     "command": command, "log": str(log)},
        "summary": {},
        "tests": [],
    }
    path = folder / f"transformers-{release}.json"
    path.write_text(json.dumps(stand_in, indent=1) + "\n")
    return path


def crash_reason(log: Path, code: int) -> str:
    """One line saying why a run produced no results: the first line of its log that names an error (the cause,
    e.g. uv's "error: No solution found ...", with uv's explanation when the next line gives one; tox's own
    "FAIL code 1" comes later), else the last line. The commands themselves ("$ ..." lines) are not output."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))  # colour codes
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("$ ")]
    telling = [n for n, line in enumerate(lines) if re.search(r"^×|error|Traceback|Killed", line, re.IGNORECASE)]
    if not telling:
        return f"exit code {code}: {(lines or ['no output'])[-1][:300]}"
    first = telling[0]
    reason = lines[first]
    if first + 1 < len(lines) and lines[first + 1].startswith(("cause:", "╰─▶", "Because")):
        reason += " " + lines[first + 1]
    return f"exit code {code}: {reason[:300]}"


def progress_line(jobs: list[Job], started: float) -> str:
    done = [j for j in jobs if j.state in FINISHED]
    running = [j for j in jobs if j.state == "running"]
    now = time.monotonic()
    problems = [f"{j.release} {j.detail}" if j.state == "failed" else f"{j.release} crashed"
                for j in done if j.state not in MET]
    return (f"[{len(done)}/{len(jobs)} done, {len(jobs) - len(done) - len(running)} waiting] "
            f"{elapsed(now - started)} elapsed | failures: " + ("; ".join(problems) or "none")
            + " | running: " + (", ".join(f"{j.release} ({elapsed(now - j.started)})" for j in running) or "-"))


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def run_matrix(releases: list[str], settings: Settings) -> list[Job]:
    jobs = [Job(release) for release in releases]
    queue = list(jobs)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop(0)
            run_release(job, settings)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(settings.jobs)]
    for thread in threads:
        thread.start()
    interactive = sys.stdout.isatty()
    last = ""
    while any(thread.is_alive() for thread in threads):
        line = progress_line(jobs, started)
        if interactive:  # one line redrawn in place: cut to the terminal's width so that it never wraps
            print("\r\033[K" + line[:shutil.get_terminal_size().columns - 1], end="", flush=True)
        elif line.split("]")[0] != last.split("]")[0]:
            print(line, flush=True)  # in a log (CI), one line per release started or finished
        last = line
        time.sleep(1)
    print(("\r\033[K" if interactive else "") + progress_line(jobs, started))
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cache_conformance.releases.matrix",
        description="Run the conformance suites on several transformers releases and collect the results files.",
        epilog="Arguments after -- go to pytest in every release, e.g. -- -k equivalence.",
    )
    parser.add_argument("--releases", nargs="+", metavar="RELEASE",
                        help="minor releases (4.50, 5.0) or latest; default: every tox environment")
    parser.add_argument("--jobs", type=int, default=2, help="releases run at the same time (default 2)")
    parser.add_argument("--results", type=Path, default=ROOT / "reports" / "results",
                        help="folder of the results files (default reports/results)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one release may take (default 1800)")
    parser.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    argv = sys.argv[1:] if argv is None else argv
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    if args.jobs < 1:
        parser.exit(2, "error: --jobs must be at least 1\n")
    try:
        known = tox_releases()
    except (OSError, subprocess.CalledProcessError) as error:
        parser.exit(2, f"error: cannot list the tox environments (is tox installed?): {error}\n")
    releases = args.releases or known
    unknown = [r for r in releases if r not in known]
    if unknown:
        parser.exit(2, f"error: no tox environment for {', '.join(unknown)}; known: {' '.join(known)}\n")

    print(f"running {len(releases)} releases, {args.jobs} at a time: {' '.join(releases)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            wheel = build_wheel(Path(scratch))
        except subprocess.CalledProcessError as error:
            parser.exit(2, f"error: cannot build the project's wheel: {error.stderr.strip()[-500:]}\n")
        wheel_s = time.monotonic() - started
        print(f"the project's wheel, built once for every release: {wheel.name} ({wheel_s:.1f} s)", flush=True)
        settings = Settings(results=args.results.resolve(), logs=ROOT / "reports" / "logs", jobs=args.jobs,
                            timeout_s=args.timeout, wheel=wheel, pytest_args=pytest_args)
        jobs = run_matrix(list(dict.fromkeys(releases)), settings)
    report_s = None
    if not args.no_report:
        report_started = time.monotonic()
        built = subprocess.run(["tox", "run", "-e", "report", "--", "--results", str(settings.results)], cwd=ROOT,
                               capture_output=True, text=True, check=False)
        report_s = time.monotonic() - report_started
        if built.returncode != 0:
            print(f"the report failed to build (tox -e report exited {built.returncode}):\n{built.stdout[-2000:]}")
    total = time.monotonic() - started
    print_summary(jobs, wheel_s=wheel_s, report_s=report_s, total=total)
    print(f"logs in {settings.logs}; results in {settings.results}; "
          + ("report in reports/site/index.html" if report_s is not None else "build the report with: tox -e report"))
    return 0 if all(job.state in MET for job in jobs) else 1


PHASES = (("environment", "tox environment created or checked (tox run --notest)"),
          ("tox", "tox's own start-up and package check around the run"),
          ("imports", "interpreter start and imports (torch, transformers, the plugin)"),
          ("collection", "pytest collection"),
          ("tests", "the tests, results file included"))


def job_phases(job: Job) -> dict[str, float | None]:
    """Seconds per phase of one release; None where the run did not get that far or did not say."""
    inner = {name: job.phases.get(f"{name}_s") for name in ("imports", "collection", "tests")}
    measured = [v for v in inner.values() if v is not None]
    outside = job.run_s - sum(measured) if job.run_s and len(measured) == len(inner) else None
    return {"environment": job.environment_s, "tox": outside, **inner}


def print_summary(jobs: list[Job], *, wheel_s: float, report_s: float | None, total: float) -> None:
    names = [name for name, _ in PHASES]
    print(f"\n{'release':<10} {'version':<10} {'state':<8} {'time':>7}" + "".join(f" {n:>11}" for n in names)
          + "  details / results file")
    sums = dict.fromkeys(names, 0.0)
    for job in jobs:
        phases = job_phases(job)
        for name, seconds in phases.items():
            sums[name] += seconds or 0.0
        cells = "".join(f" {seconds:>10.1f}s" if seconds is not None else f" {'-':>11}" for seconds in phases.values())
        print(f"{job.release:<10} {job.version or '-':<10} {job.state:<8} {elapsed(job.finished - job.started):>7}"
              f"{cells}  {job.detail + '; ' if job.detail else ''}{job.results_file}")
    print(f"{'sum':<37}" + "".join(f" {sums[n]:>10.1f}s" for n in names))
    print("\nphases (seconds summed over releases; releases run side by side, so they add up to more than the wall time):")
    print(f"  the project's wheel, once: {wheel_s:.1f} s")
    for name, meaning in PHASES:
        print(f"  {name:<11} {sums[name]:7.1f} s  {meaning}")
    if report_s is not None:
        print(f"  the report (tox -e report): {report_s:.1f} s")
    print(f"total wall time {elapsed(total)} ({total:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
