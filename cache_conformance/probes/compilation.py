"""What torch.compile did: compilations (graphs compiled), graph breaks, and why it recompiled.

Dynamo's counters are process-wide, so a check starts from `fresh_compilation()` (no compiled code left from an
earlier test, whose guards would count against the recompile limit) and reads differences of `counts()`.
torch._dynamo is imported by the functions that use it: importing it costs about 1.7 s, which a run that selects no
compiled check (`pytest -k overflow`) must not pay at collection.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Counts:
    graphs: int  # graphs dynamo handed to the backend, each recompilation's included: "compilations" here
    graph_breaks: dict[str, int]  # reason -> how many times

    def since(self, earlier: Counts) -> Counts:
        breaks = {reason: n - earlier.graph_breaks.get(reason, 0) for reason, n in self.graph_breaks.items()}
        return Counts(self.graphs - earlier.graphs, {reason: n for reason, n in breaks.items() if n})

    def as_metrics(self) -> dict:
        return {"compilations": self.graphs, "graph_breaks": sum(self.graph_breaks.values()),
                "graph_break_reasons": sorted(self.graph_breaks)[:5]}


def counts() -> Counts:
    from torch._dynamo.utils import counters

    # counters["frames"] is not counted on every path (not for fullgraph=True in torch 2.13); unique_graphs is.
    return Counts(counters["stats"]["unique_graphs"], dict(counters["graph_break"]))


def reset() -> None:
    """Forget everything compiled so far (and the counters)."""
    import torch._dynamo

    torch._dynamo.reset()


def fresh_compilation(model, *, backend: str, fullgraph: bool, dynamic: bool | None):
    """`model` compiled from scratch: dynamo's caches and counters are emptied first."""
    reset()
    return torch.compile(model, backend=backend, fullgraph=fullgraph, dynamic=dynamic)


@contextlib.contextmanager
def recompilation_raises():
    """Within this block a recompilation raises torch's RecompileError, whose message gives the guard that failed
    (e.g. `...cumulative_length_int == 9`) instead of compiling again."""
    import torch._dynamo

    with torch._dynamo.config.patch(error_on_recompile=True):
        yield


def is_recompile_error(error: BaseException | None) -> bool:
    import torch._dynamo

    return isinstance(error, torch._dynamo.exc.RecompileError)


def guard_failures(error: BaseException) -> list[str]:
    """The failed guards a RecompileError lists, one line each (without the user stack traces torch adds), e.g.
    "0/2: kwargs['cache'].layers[0].cumulative_length_int == 8  # position_ids = ... (modeling_gemma3.py:505)"."""
    lines = [line.strip().removeprefix("- ") for line in str(error).splitlines()]
    return [" ".join(line.split()) for line in lines if GUARD_FAILURE.match(line)] or [str(error).splitlines()[0]]


GUARD_FAILURE = re.compile(r"^\d+/\d+: ")  # "<frame>/<compilation>: <guard>" in torch's recompilation message
