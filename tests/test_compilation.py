"""Counting compilations and reading torch's reason for a recompilation (cache_conformance/probes/compilation.py), on a
function small enough to compile in well under a second with dynamo alone."""

import pytest
import torch

from cache_conformance.probes import compilation


class Holder:
    """Python state read inside the compiled function, as a cache layer's length counter is."""

    def __init__(self, count: int):
        self.count = count


def add_count(x, holder):
    return x + holder.count


@pytest.fixture
def compiled_once():
    """`add_count` freshly compiled by dynamo with static shapes and called once with Holder(0); and the counts
    taken before that call."""
    compiled = compilation.fresh_compilation(add_count, backend="eager", fullgraph=True, dynamic=False)
    start = compilation.counts()
    compiled(torch.ones(2), Holder(0))
    return compiled, start


def test_compilations_are_counted_and_a_recompilation_raises_with_the_guard_that_failed(compiled_once):
    compiled, start = compiled_once
    compiled(torch.ones(2), Holder(0))
    assert compilation.counts().since(start).graphs == 1
    with compilation.recompilation_raises(), pytest.raises(Exception) as raised:
        compiled(torch.ones(2), Holder(1))
    assert compilation.is_recompile_error(raised.value)
    [reason] = compilation.guard_failures(raised.value)
    assert reason.startswith("0/0: ") and "holder.count == 0" in reason, reason
    assert compilation.counts().since(start).graphs == 1  # it raised instead of compiling again


def test_without_the_block_the_same_call_compiles_again(compiled_once):
    compiled, start = compiled_once
    compiled(torch.ones(2), Holder(1))
    assert compilation.counts().since(start).graphs == 2


def test_graph_breaks_are_counted_with_their_reasons():
    def with_a_break(x):
        torch._dynamo.graph_break()
        return x + 1

    compiled = compilation.fresh_compilation(with_a_break, backend="eager", fullgraph=False, dynamic=False)
    start = compilation.counts()
    compiled(torch.ones(2))
    counted = compilation.counts().since(start)
    assert sum(counted.graph_breaks.values()) >= 1
    assert counted.as_metrics()["graph_breaks"] == sum(counted.graph_breaks.values())


def test_the_first_line_stands_in_for_a_message_without_guard_lines():
    assert compilation.guard_failures(RuntimeError("no guards here\nsecond line")) == ["no guards here"]
