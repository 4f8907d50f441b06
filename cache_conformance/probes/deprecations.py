"""Deprecation warnings as findings: what a user's ordinary cache calls are told will break next.

`recorded()` collects, for the calls made inside it, every Python DeprecationWarning and FutureWarning and every
transformers log record that says "deprecated" (transformers announces some renames through its logger, once per
process: that memory is cleared first so the order of checks does not hide a message). Each finding keeps the
message and the release it names for removal, for the results file and the report.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

# "will be removed in version 5.40.0", "removed starting from version 5.40.0", "will be removed in v5.13"
REMOVAL = re.compile(r"removed (?:in|starting from) (?:version )?v?(\d+(?:\.\d+)+)")
LOG_WORD = re.compile(r"deprecat", re.IGNORECASE)


@dataclass(frozen=True)
class Deprecation:
    kind: str  # FutureWarning, DeprecationWarning, or "transformers log"
    message: str
    removal: str  # the release the message names for removal; "" when it names none
    origin: str  # the file the warning is attributed to (for a log record: the logger's name)

    def as_dict(self) -> dict:
        return asdict(self)


def removal_release(message: str) -> str:
    found = REMOVAL.search(message)
    return found.group(1).rstrip(".") if found else ""


@contextmanager
def recorded() -> Iterator[list[Deprecation]]:
    """Collects the deprecations announced inside the block into the yielded list (filled when the block ends),
    each once, warnings first; the warnings are recorded, not shown or raised."""
    found: list[Deprecation] = []
    logger = logging.getLogger("transformers")
    handler = _Collector()
    level = logger.level
    _forget_messages_logged_once()
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    announced = [
        Deprecation(w.category.__name__, str(w.message), removal_release(str(w.message)), _short_path(w.filename))
        for w in caught if issubclass(w.category, DeprecationWarning | FutureWarning)
    ] + [
        Deprecation("transformers log", text, removal_release(text), name) for name, text in handler.messages
    ]
    found += list(dict.fromkeys(announced))


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if LOG_WORD.search(text):
            self.messages.append((record.name, text))


def _forget_messages_logged_once() -> None:
    """transformers' `logger.warning_once` remembers every message it showed in this process."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.warning_once.cache_clear()


def _short_path(filename: str) -> str:
    """site-packages/transformers/generation/utils.py -> transformers/generation/utils.py"""
    parts = Path(filename).parts
    for package in ("transformers", "torch", "cache_conformance", "suites"):
        if package in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(package):])
    return Path(filename).name
