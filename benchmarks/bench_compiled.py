"""Print what each compiled and exported check costs: cold (an empty inductor cache, as on a fresh CI machine) and
warm (the cache the cold run filled, as on a developer's second run).

Run:  python benchmarks/bench_compiled.py [--env py311-transformers-latest] [-k float32-cpu-sdpa] [--include-slow]

Runs suites/test_compiled.py twice in the tox environment's Python, in one process each (no xdist, all cores to
torch), with TORCHINDUCTOR_CACHE_DIR pointing at a fresh temporary folder for both, and prints each check's time
(JUnit: setup, call and teardown) cold and warm, with the totals. Expectations are applied as in the main job.
Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent


def timed_run(python: Path, junit: Path, cache_dir: Path, args) -> tuple[float, dict[str, tuple[float, str]]]:
    command = [str(python), "-m", "pytest", "suites/test_compiled.py", "-p", "no:xdist", "-p", "no:cacheprovider",
               "-q", "--device", "cpu", "-k", args.k, f"--junitxml={junit}", f"--results-file={junit}.json"]
    if args.include_slow:
        command.append("--include-slow")
    started = time.monotonic()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                               env=os.environ | {"TORCHINDUCTOR_CACHE_DIR": str(cache_dir), "PYTHONHASHSEED": "0"})
    elapsed = time.monotonic() - started
    if completed.returncode not in (0, 1):
        sys.exit(f"pytest exited {completed.returncode}:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    times = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        outcome = "failed" if case.find("failure") is not None else "skipped or xfailed" if case.find("skipped") is not None \
            else "passed"
        times[case.get("name")] = (float(case.get("time", 0)), outcome)
    return elapsed, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="py311-transformers-latest", help="tox environment whose Python runs it")
    parser.add_argument("-k", default="float32-cpu-sdpa", help="pytest -k expression (default: the default run's "
                        "target)")
    parser.add_argument("--include-slow", action="store_true", help="also the checks marked slow")
    args = parser.parse_args()
    # tox's answer, not .tox/ENV: the pinned environments share one folder (tox.ini's env_dir)
    configured = subprocess.run([sys.executable, "-m", "tox", "config", "-e", args.env, "-k", "env_python"],
                                check=False, cwd=ROOT, capture_output=True, text=True).stdout
    python = Path(configured.split("env_python = ")[-1].split()[0]) if "env_python = " in configured else None
    if python is None or not python.exists():
        sys.exit(f"tox environment {args.env} has no Python yet: create it first (tox -e {args.env} --notest)")
    with tempfile.TemporaryDirectory(prefix="bench-compiled-") as scratch:
        scratch = Path(scratch)
        cold_s, cold = timed_run(python, scratch / "cold.xml", scratch / "inductor", args)
        warm_s, warm = timed_run(python, scratch / "warm.xml", scratch / "inductor", args)
    print(f"machine: {os.cpu_count()} cores; {args.env}; -k {args.k!r}{' --include-slow' if args.include_slow else ''}")
    width = max(map(len, cold), default=10)
    print(f"{'check':<{width}}  {'cold':>8}  {'warm':>8}  outcome")
    for name, (seconds, outcome) in cold.items():
        print(f"{name:<{width}}  {seconds:7.1f}s  {warm.get(name, (0.0, ''))[0]:7.1f}s  {outcome}")
    print(f"{'sum of checks':<{width}}  {sum(t for t, _ in cold.values()):7.1f}s  "
          f"{sum(t for t, _ in warm.values()):7.1f}s")
    print(f"{'whole pytest process':<{width}}  {cold_s:7.1f}s  {warm_s:7.1f}s")


if __name__ == "__main__":
    main()
