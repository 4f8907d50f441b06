"""What a failed check found, kept with its result: the results record's `metrics["evidence"]` says what was
checked (`kind`), where (step, position, layer, slot, batch, device: whatever locates it) and by how much
(`difference` against `limit`, the tolerance or threshold it exceeded). The self-test grades a fault on these
figures, never on the message's wording, and readers of a results file get them without parsing it.

A check attaches its evidence to the failure it raises (`attach`), or wraps an assertion whose location it knows
(`located_as`); the plugin copies the evidence of the failure a test ended with into the test's metrics.
"""

from __future__ import annotations

import contextlib

import pytest

ATTRIBUTE = "conformance_evidence"
CRASH = "crash"  # the kind of a step that raised an exception of its own (decoding.located): no evidence of a property
FAILURES = (AssertionError, pytest.fail.Exception)


def attach(error: BaseException, kind: str, *, difference: float | None = None, limit: float | None = None,
           **where) -> BaseException:
    """`error` carrying its evidence; a failure that already carries some keeps it (the innermost check knows most)."""
    if of(error) is None:
        figures = {"difference": difference, "limit": limit} if difference is not None else {}
        setattr(error, ATTRIBUTE, {name: _plain(value) for name, value in {"kind": kind, **where, **figures}.items()})
    return error


def _plain(value):
    """A value the results file (JSON) can hold: a tensor's or numpy scalar's Python number, lists of them."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value.item() if hasattr(value, "item") else value


def failure(message: str, kind: str, **evidence) -> AssertionError:
    """An AssertionError with `message` and its evidence, to raise."""
    return attach(AssertionError(message), kind, **evidence)


@contextlib.contextmanager
def located_as(kind: str, **where):
    """An assertion failing inside the block carries this evidence (unless it already carries its own)."""
    try:
        yield
    except FAILURES as error:
        attach(error, kind, **where)
        raise


def of(error: BaseException | None) -> dict | None:
    """The evidence `error`, or a failure it was raised from (`raise ... from`), carries; None when none does."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        evidence = getattr(error, ATTRIBUTE, None)
        if evidence is not None:
            return evidence
        error = error.__cause__
    return None
