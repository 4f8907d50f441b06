"""The cache's public contract (suites/test_cache_contract.py): what a release offers under each member a user
calls, recorded with every check as `metrics["api"]` and tabled by the report (API surface per release)."""

from __future__ import annotations

import inspect

import transformers

EVIDENCE = "contract"  # the evidence kind of a member that answered wrongly (findings.py)


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
