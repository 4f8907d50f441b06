"""Print the wall time of creating one release's tox environment and of running its default suite.

Run:  python benchmarks/bench_suite.py [--env py311-transformers-latest] [--with-pip]

1. environment creation with tox-uv (the default), recreated from scratch (`tox -r --notest`);
2. with --with-pip, the same with tox's own virtualenv+pip runner, for comparison;
3. the default suite (`tox -e ENV`, pytest-xdist on every core), on the existing environment, run twice.
Figures only: nothing here asserts a time.
"""

import argparse
import os
import subprocess
import sys
import time


def timed(command: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="py311-transformers-latest")
    parser.add_argument("--with-pip", action="store_true", help="also time environment creation with pip")
    args = parser.parse_args()
    tox = [sys.executable, "-m", "tox"]
    print(f"machine: {os.cpu_count()} cores; environment {args.env}")
    if args.with_pip:
        seconds = timed([*tox, "-e", args.env, "-r", "--notest", "--override", "testenv.runner=virtualenv"])
        print(f"environment creation, virtualenv + pip: {seconds:6.1f} s")
    seconds = timed([*tox, "-e", args.env, "-r", "--notest"])
    print(f"environment creation, tox-uv:           {seconds:6.1f} s")
    for attempt in (1, 2):
        seconds = timed([*tox, "-e", args.env])
        print(f"default suite, run {attempt}:                {seconds:6.1f} s")


if __name__ == "__main__":
    main()
