"""The suites' command-line options and hypothesis profiles."""

from __future__ import annotations

from pathlib import Path

from hypothesis import Phase, settings

from cache_conformance.plugin import checkpoint, targets
from cache_conformance.records import expectations

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


def add(parser) -> None:
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
    group.addoption("--expectations-file", type=Path, default=expectations.DEFAULT_PATH)
    group.addoption("--results-file", type=Path,
                    help="where to write the JSON results (default: reports/results/transformers-<version>.json)")
    group.addoption("--seed", type=int, default=0, help="seed for the token sequences (default 0)")
    group.addoption("--isolate-overflows", action="store_true",
                    help="run each overflow scenario in a child process on every device (always done on CUDA, "
                    "where a device-side assert poisons the process it happens in)")
    group.addoption("--user-call", type=Path, metavar="FILE",
                    help="grade your own generate() call, read from FILE (TOML or JSON, or a generation_config.json), "
                    "on the checkpoint in use: suites/test_your_call.py (docs/suites/your_call.md)")
    group.addoption("--include-slow", action="store_true",
                    help="also run the checks marked slow (compilation and export on every target); by default "
                    "they are deselected, except on the targets their marker names")
