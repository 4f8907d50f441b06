"""The cache's public contract (suites/test_cache_contract.py): what a release offers under each member a user
calls, recorded with every check as `metrics["api"]` and tabled by the report (API surface per release)."""

from __future__ import annotations

import inspect
import re

import transformers

EVIDENCE = "contract"  # the evidence kind of a member that answered wrongly (grading/evidence.py)


def member(owner: str, name: str, *, parameter: str | None = None) -> dict:
    """What the installed release offers as `owner.name` (owner: a class transformers exports): its parameters, as
    "(a, b)", or None where the release has no such member. With `parameter`, the member is "name(parameter=)" and
    its signature that parameter alone, or None where the member does not name it."""
    found = getattr(getattr(transformers, owner, None), name, None)
    signature = None if found is None else parameters(found)
    if parameter is not None:
        name = f"{name}({parameter}=)"
        signature = f"({parameter})" if signature and parameter in signature.strip("()").split(", ") else None
    return {"owner": owner, "member": name, "signature": signature, "release": transformers.__version__}


def parameters(function) -> str:
    """A callable's parameters by name, without self: "(max_length)"."""
    try:
        names = [name for name in inspect.signature(function).parameters if name != "self"]
    except (TypeError, ValueError):  # a property or builtin: offered, parameters unknown
        return "()"
    return f"({', '.join(names)})"


# The members of a cache object users call, each called by its own name on every release that has it (no
# translation): their presence, deprecation and answers per release are the report's API-surface table.
USERS_MEMBERS = ("get_seq_length", "get_max_cache_shape", "get_max_length", "max_cache_len", "max_batch_size",
                 "reset", "crop", "reorder_cache", "batch_repeat_interleave", "batch_select_indices",
                 "to_legacy_cache", "from_legacy_cache", "is_compileable")
# What a member's own code or documentation says when it is deprecated: "`x` is deprecated, and will be removed in
# version 5.16" (a warning it issues when called). A note to deprecate it some day ("TODO: deprecate") is not one.
DEPRECATION = re.compile(r"\bis deprecated\b|\bdeprecated and will be removed\b|\bwill be removed in\b", re.IGNORECASE)


def member_of_object(cache, name: str) -> dict:
    """What the installed release offers as `name` on a user's cache object (class members and instance
    attributes alike): `member`'s record, with `state` "present", "deprecated" (its code or documentation says it is
    deprecated) or "absent"."""
    owner = type(cache).__name__
    if not hasattr(cache, name):
        return {"owner": owner, "member": name, "signature": None, "state": "absent",
                "release": transformers.__version__}
    found = getattr(type(cache), name, None)
    if isinstance(found, property):
        found = found.fget
    signature = parameters(found) if callable(found) else "(attribute)"
    return {"owner": owner, "member": name, "signature": signature,
            "state": "deprecated" if _says_deprecated(found) else "present", "release": transformers.__version__}


def _says_deprecated(member) -> bool:
    """Whether a member's own source (its warnings) or documentation says it is deprecated (DEPRECATION)."""
    try:
        text = inspect.getsource(member)
    except (OSError, TypeError):
        text = getattr(member, "__doc__", None) or ""
    return DEPRECATION.search(text) is not None
