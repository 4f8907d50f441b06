"""The releases the project's own tests run on. constraints/project-tests.txt is the one place that says which
(tox.ini applies it to the `tests` and `selftest` environments); this module reads it for their run headers."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_PINS = Path(__file__).resolve().parent.parent / "constraints" / "project-tests.txt"


def pinned(package: str, path: Path = PROJECT_PINS) -> str | None:
    """The version `path` pins `package` to (`package==version`), or None."""
    found = re.search(rf"^{re.escape(package)}==(\S+)", path.read_text(), flags=re.MULTILINE | re.IGNORECASE)
    return found.group(1) if found else None


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
