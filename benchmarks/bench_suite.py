"""Print what the suite costs on this machine, cold and warm, as ratios to the import floor measured in the same run:
the default run, the self-test and the local `-k` loops, with where the time goes per suite; optionally the same
for an earlier revision, side by side.

Run:  python benchmarks/bench_suite.py [--rev REV ...] [--env py311-transformers-adopted] [--skip-selftest]

For the working tree, or for each --rev (a git revision, checked out in a temporary worktree: `--rev 9a35d6d
--rev HEAD` prints before and after side by side), with the environments tox already created (shared through
--workdir, so nothing is rebuilt between the two):
1. import floor: `python -c "import torch, transformers, <Gemma 3's model code>"` in the environment (interpreter,
   torch, transformers and the model code), best of three warm runs; also without the model code;
2. default run: `tox -e ENV` cold (torch.compile's cache, TORCHINDUCTOR_CACHE_DIR, pointed at an empty folder: a
   fresh machine) and then twice warm (the cache the cold run filled; the best is shown); its per-suite test time
   (sum of the JUnit test times, setup included) and the largest peak resident memory of any process it started;
3. self-test: `tox -e selftest` cold and warm, with its detection score;
4. the local loops: `pytest -k overflow|sliding|memory|snapshot` in the environment's Python, one process, warm.
Figures only: nothing here asserts a time. The goals (issue 30) are printed next to the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"default_warm": 20, "default_cold": 30, "selftest_warm": 30, "loop": 3, "peak_gib": 2}  # x the floor
LOOPS = ("overflow", "sliding", "memory", "snapshot")
# Every command runs as tox runs its environments, which write bytecode: with PYTHONDONTWRITEBYTECODE set here the
# floor's imports would compile transformers from source every time (10.8 s instead of 5.2 s, seen on 2 cores).
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


@dataclass
class Timed:
    seconds: float
    output: str
    peak_rss_bytes: int  # the largest peak resident set of the command or any process it waited for


def run(command: list[str], cwd: Path, env: dict = ENVIRONMENT) -> Timed:
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, text=True, env=env)
        # wait4's resource usage covers the command and every descendant it waited for (tox, pytest, its workers):
        # ru_maxrss, in KiB on Linux, is the largest of their peaks.
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} (in {cwd}) failed ({process.returncode}):\n{text[-3000:]}")
    return Timed(elapsed, text, usage.ru_maxrss * 1024)


@dataclass
class Figures:
    label: str
    import_floor_s: float = 0.0  # interpreter, torch, transformers and Gemma 3's model code
    import_without_model_code_s: float = 0.0
    default_cold_s: float = 0.0
    default_warm_s: list[float] = field(default_factory=list)
    default_summary: str = ""
    peak_rss_bytes: int = 0
    per_suite_s: dict[str, float] = field(default_factory=dict)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    selftest_s: dict[str, float] = field(default_factory=dict)  # cold, warm
    selftest_score: str = ""
    selftest_table: str = ""
    loops_s: dict[str, float] = field(default_factory=dict)

    def ratio(self, seconds: float) -> str:
        return f"{seconds:.1f} s = {seconds / self.import_floor_s:.1f}x"


def junit_times(path: Path) -> tuple[dict[str, float], list[tuple[float, str]]]:
    per_file: dict[str, float] = defaultdict(float)
    cases = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        seconds = float(case.get("time", 0))
        module = case.get("classname", "").split(".")[-1]
        per_file[module] += seconds
        cases.append((seconds, f"{module}::{case.get('name')}"))
    return dict(per_file), sorted(cases, reverse=True)[:5]


def measure(tree: Path, label: str, args) -> Figures:
    tox = [sys.executable, "-m", "tox", "-c", str(tree / "tox.ini"), "--workdir", str(ROOT / ".tox")]
    figures = Figures(label)
    print(f"[{label}] preparing {args.env} ...", flush=True)
    run([*tox, "-e", args.env, "--notest"], tree)
    # tox's answer, not .tox/ENV: the pinned environments share one folder (tox.ini's env_dir)
    configured = run([*tox, "config", "-e", args.env, "-k", "env_python"], tree).output
    python = configured.split("env_python = ")[1].split()[0]
    model_code = "import torch, transformers, transformers.models.gemma3.modeling_gemma3"
    figures.import_floor_s = min(run([str(python), "-c", model_code], tree).seconds for _ in range(3))
    figures.import_without_model_code_s = min(
        run([str(python), "-c", "import torch, transformers"], tree).seconds for _ in range(3))
    with tempfile.TemporaryDirectory() as compile_cache:
        env = ENVIRONMENT | {"TORCHINDUCTOR_CACHE_DIR": compile_cache}
        for attempt in ("cold", "warm", "warm"):
            timed = run([*tox, "-e", args.env], tree, env)
            if attempt == "cold":
                figures.default_cold_s = timed.seconds
            else:
                figures.default_warm_s.append(timed.seconds)
            figures.peak_rss_bytes = max(figures.peak_rss_bytes, timed.peak_rss_bytes)
            summary = re.findall(r"^=+ (.*(?:passed|failed).*) in [0-9.]+s", timed.output, re.MULTILINE)
            figures.default_summary = summary[-1] if summary else "?"
            print(f"[{label}] default run, {attempt}: {timed.seconds:.1f} s ({figures.default_summary})", flush=True)
        figures.per_suite_s, figures.slowest = junit_times(tree / "reports" / "junit" / f"{args.env}.xml")
    for loop in LOOPS:
        timed = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", loop], tree)
        figures.loops_s[loop] = timed.seconds
        print(f"[{label}] pytest -k {loop}: {timed.seconds:.1f} s", flush=True)
    if not args.skip_selftest:
        with tempfile.TemporaryDirectory() as compile_cache:
            env = ENVIRONMENT | {"TORCHINDUCTOR_CACHE_DIR": compile_cache}
            for attempt in ("cold", "warm"):
                timed = run([*tox, "-e", "selftest"], tree, env)
                figures.selftest_s[attempt] = timed.seconds
                score = re.findall(r"detection score: [^;]*", timed.output)
                figures.selftest_score = score[-1] if score else "?"
                table = re.search(r"^fault +dtype .*?(?=\n\n)", timed.output, re.MULTILINE | re.DOTALL)
                figures.selftest_table = table.group(0) if table else "(no table)"
                print(f"[{label}] self-test, {attempt}: {timed.seconds:.1f} s ({figures.selftest_score})", flush=True)
    return figures


def report(all_figures: list[Figures]) -> None:
    labels = [f.label for f in all_figures]
    width = max(28, *(len(label) + 2 for label in labels))

    def row(name: str, cells: list[str], goal: str = "") -> None:
        print(f"{name:<36}" + "".join(f"{cell:>{width}}" for cell in cells) + (f"   goal {goal}" if goal else ""))

    print(f"\nmachine: {os.cpu_count()} cores; Python {sys.version.split()[0]}")
    row("", labels)
    row("import floor (with the model code)", [f"{f.import_floor_s:.1f} s" for f in all_figures])
    row("  torch and transformers only", [f"{f.import_without_model_code_s:.1f} s" for f in all_figures])
    row("default run, warm (best of 2)", [f.ratio(min(f.default_warm_s)) for f in all_figures],
        f"<= {GOALS['default_warm']}x")
    row("default run, cold", [f.ratio(f.default_cold_s) for f in all_figures], f"<= {GOALS['default_cold']}x")
    row("  outcomes", [f.default_summary.replace(" in", "") for f in all_figures])
    row("  largest process peak RSS", [f"{f.peak_rss_bytes / 2**30:.2f} GiB" for f in all_figures],
        f"<= {GOALS['peak_gib']} GiB")
    suites = sorted({name for f in all_figures for name in f.per_suite_s})
    for suite in suites:
        row(f"  {suite} (warm test time)", [f"{f.per_suite_s.get(suite, 0):.1f} s" for f in all_figures])
    row("  all suites (warm test time)", [f"{sum(f.per_suite_s.values()):.1f} s" for f in all_figures])
    for loop in LOOPS:
        row(f"pytest -k {loop}", [f.ratio(f.loops_s[loop]) for f in all_figures], f"<= {GOALS['loop']}x")
    if all(f.selftest_s for f in all_figures):
        row("self-test, warm", [f.ratio(f.selftest_s["warm"]) for f in all_figures], f"<= {GOALS['selftest_warm']}x")
        row("self-test, cold", [f.ratio(f.selftest_s["cold"]) for f in all_figures])
        row("  score", [f.selftest_score.removeprefix("detection score: ") for f in all_figures])
    for figures in all_figures:
        print(f"\nslowest tests, {figures.label}:")
        for seconds, name in figures.slowest:
            print(f"  {seconds:6.2f} s  {name}")
        if figures.selftest_table:
            print(f"\nself-test table, {figures.label}:\n{figures.selftest_table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", action="append", help="measure this git revision (repeatable; default: the working tree)")
    parser.add_argument("--env", default="py311-transformers-adopted")
    parser.add_argument("--skip-selftest", action="store_true")
    args = parser.parse_args()
    if not args.rev:
        report([measure(ROOT, "working tree", args)])
        return
    all_figures = []
    for number, revision in enumerate(args.rev):
        with tempfile.TemporaryDirectory() as scratch:
            tree = Path(scratch) / f"rev{number}"
            subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), revision], cwd=ROOT, check=True)
            try:
                all_figures.append(measure(tree, revision, args))
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    report(all_figures)


if __name__ == "__main__":
    main()
