"""The releases the project's own tests run on. constraints/project-tests.txt is the one place that says which
(tox.ini applies it to the `tests` and `selftest` environments); this module reads it for their run headers."""

from __future__ import annotations

import re
import shutil
import subprocess
from itertools import takewhile
from pathlib import Path

from cache_conformance import ROOT

PROJECT_PINS = ROOT / "constraints" / "project-tests.txt"


def pinned(package: str, path: Path = PROJECT_PINS) -> str | None:
    """The version `path` pins `package` to (`package==version`), or None."""
    found = re.search(rf"^{re.escape(package)}==(\S+)", path.read_text(), flags=re.MULTILINE | re.IGNORECASE)
    return found.group(1) if found else None


class PinsError(ValueError):
    """The pins cannot be refreshed; the message is one line."""


def refreeze(python: Path, path: Path = PROJECT_PINS) -> None:
    """Rewrite the pins from the packages installed in `python`'s environment (the project's own package left out,
    torch's local build tag such as +cpu dropped), keeping the file's opening comment."""
    uv = shutil.which("uv")
    if uv is None:
        raise PinsError("uv is not on PATH (pip install tox-uv installs it)")
    frozen = subprocess.run([uv, "pip", "freeze", "--python", str(python)], capture_output=True, text=True, check=False)
    if frozen.returncode != 0:
        last = (frozen.stderr.strip().splitlines() or ["no message"])[-1]
        raise PinsError(f"uv pip freeze --python {python} failed: {last}")
    lines = sorted((re.sub(r"^(torch==[^+\s]+)\+\S+$", r"\1", line) for line in frozen.stdout.splitlines()
                    if re.fullmatch(r"[A-Za-z0-9._-]+==\S+", line) and not line.startswith("gemma3-cache-conformance==")),
                   key=lambda line: line.split("==")[0].lower())
    if not any(line.startswith("transformers==") for line in lines):
        raise PinsError(f"{python}: transformers is not installed in that environment")
    comment = list(takewhile(lambda line: line.startswith("#"), path.read_text().splitlines()))
    path.write_text("\n".join([*comment, *lines]) + "\n")


def header_line() -> str:
    """What the project's own tests run on, for a run header: the pins, and the installed releases when they differ."""
    import torch
    import transformers

    wanted = {"transformers": pinned("transformers"), "torch": pinned("torch")}
    installed = {"transformers": transformers.__version__, "torch": torch.__version__}
    line = (f"pinned: transformers {wanted['transformers']}, torch {wanted['torch']} "
            f"({PROJECT_PINS.relative_to(PROJECT_PINS.parent.parent)})")
    # torch's local build tag (+cpu, +cu130) is no other release
    differs = [name for name in wanted if installed[name].split("+")[0] != wanted[name]]
    if differs:
        return line + "; NOT INSTALLED here: " + ", ".join(f"{n} {installed[n]}" for n in differs) + \
            " (run through tox -e tests,selftest for the pinned answer)"
    return line + "; installed as pinned"
