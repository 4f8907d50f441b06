"""Compiled and exported decoding: the static cache where it is used for speed.

A static cache exists so that the decode step has fixed shapes: people compile that step with torch.compile and
export it with torch.export for ExecuTorch. These checks run the same property as the equivalence suite (every
step's logits equal recomputation without cache by the uncompiled model, within the dtype's tolerance) through
those paths, and the property the paths exist for: compiling once, not once per step.

- Compiled decode: inductor compiles the model as the release's own CompileConfig says (fullgraph, dynamic: what
  generate() compiles its decode step with); the prefill runs uncompiled, as generate() runs it, then one token per
  step for 3W steps across the window. The cache contents then pass the sliding-window oracle. A multi-token
  continuation through the compiled model is a slow check.
- generate()'s compiled path: generate() with the static cache it builds and its own compilation, forced on CPU
  through the compile configuration (adapter.compiled.generate_compiled).
- Compilations: dynamo's compilations over N decode steps and over 2N; the steps after the first N must compile
  nothing, and a recompilation fails with torch's own reason (the guard that failed). Counted with dynamo alone
  (backend "eager": the guards, and so the recompilations, are the backend's input, not its work), with the
  release's compile settings and with static shapes (dynamic=False, as CUDA graphs and export need them).
- Export: the release's own export recipe (transformers.integrations.executorch), run for a prompt shorter and
  one longer than W fed one token per call, then decoding past the window; its cache buffers keep their shapes
  and storage. A release whose export fails fails here with its error.

Compilation costs minutes on CPU, so only float32 with sdpa runs in the default run; every other target and the
longer scenarios are marked `slow` (run with --include-slow; the release workflow does). W is the checkpoint's
sliding window.
"""

import contextlib

import pytest

from cache_conformance import adapter
from cache_conformance.adapter import compiled as compiled_adapter
from cache_conformance.grading import evidence
from cache_conformance.oracles.decoding import (
    chunks_against_recomputation,
    generation_against_recomputation,
    located,
    one_token_per_call,
    prefill_and_decode,
)
from cache_conformance.oracles.window_oracle import follow, static_windows
from cache_conformance.probes import compilation

IN_THE_DEFAULT_RUN = "float32-*-sdpa"  # target ids that run these checks without --include-slow


def assert_compiled_something(compiled: compilation.Counts, what: str) -> None:
    """Positive control: an equality with the uncompiled model means nothing if nothing was compiled."""
    assert compiled.graphs >= 1, f"{what} compiled nothing (dynamo counted 0 graphs): nothing was checked"


@pytest.mark.slow(except_on=IN_THE_DEFAULT_RUN)
def test_compiled_decode_matches_recomputation(model, window, tokens, compare, metrics):
    prompt = tokens(1, window - 1)
    steps = 3 * window
    cache = adapter.make_static_cache(model, batch_size=1, capacity=prompt.shape[1] + steps)
    compiled = compilation.fresh_compilation(model, backend="inductor", **compiled_adapter.compile_settings())
    before = compilation.counts()
    sequence = prefill_and_decode(model, cache, prompt, steps, compare, decode_with=compiled,
                                  label="compiled decode (inductor)")
    counted = compilation.counts().since(before)
    metrics.update(counted.as_metrics())
    assert_compiled_something(counted, "the decode step")
    follower = follow(model, cache, sequence, static_windows(model, window))  # every token of it was fed
    follower.fed(sequence.shape[1], where=f"after a prefill of {prompt.shape[1]} and {steps} compiled decode steps")


@pytest.mark.slow
def test_compiled_chunked_continuation(model, window, tokens, compare, metrics):
    """Chunks of several tokens after a prefill, through the compiled model (a chat turn appended to a cache)."""
    sizes = [window, 3, window + 1, 2]
    cache = adapter.make_static_cache(model, batch_size=1, capacity=sum(sizes))
    compiled = compilation.fresh_compilation(model, backend="inductor", **compiled_adapter.compile_settings())
    sequence = tokens(1, sum(sizes))
    before = compilation.counts()
    chunks_against_recomputation(model, cache, sequence, sizes, compare, continue_with=compiled)
    counted = compilation.counts().since(before)
    metrics.update(counted.as_metrics())
    assert_compiled_something(counted, "the continuation")
    follower = follow(model, cache, sequence, static_windows(model, window))
    follower.fed(sequence.shape[1], where=f"after compiled chunks {sizes}")


@pytest.mark.slow(except_on=IN_THE_DEFAULT_RUN)
def test_compiled_generate_matches_recomputation(model, window, tokens, compare, metrics):
    prompt = tokens(1, window - 1)
    new_tokens = 2 * window + 2
    compilation.reset()
    before = compilation.counts()
    with located("compiled generate()"):
        sequences, step_logits = compiled_adapter.generate_compiled(model, prompt, max_new_tokens=new_tokens)
    counted = compilation.counts().since(before)
    metrics.update(counted.as_metrics())
    assert_compiled_something(counted, "generate()")
    generation_against_recomputation(model, prompt.shape[1], sequences, step_logits, compare,
                                     where=f"compiled generate() of {new_tokens} tokens", length_forced=True)


COMPILE_SETTINGS = {
    "release-compile-config": compiled_adapter.compile_settings,
    "static-shapes": lambda: {**compiled_adapter.compile_settings(), "dynamic": False},
}
COUNTED_STEPS = 3  # N. From a prompt longer than W every step is the steady state: the window full and rolling.


@pytest.mark.slow(except_on=IN_THE_DEFAULT_RUN)
@pytest.mark.parametrize("settings", COMPILE_SETTINGS)
def test_compilations_do_not_grow_with_decode_steps(model, window, tokens, compare, metrics, settings):
    n = COUNTED_STEPS
    prompt = tokens(1, window + 1)
    cache = adapter.make_static_cache(model, batch_size=1, capacity=prompt.shape[1] + 2 * n)
    compiled = compilation.fresh_compilation(model, backend="eager", **COMPILE_SETTINGS[settings]())
    start = compilation.counts()
    over = {}
    with contextlib.ExitStack() as stack:

        def before_step(step):
            if step == n + 1:
                over[n] = compilation.counts().since(start)
                stack.enter_context(compilation.recompilation_raises())

        try:
            sequence = prefill_and_decode(model, cache, prompt, 2 * n, compare, decode_with=compiled,
                                          before_step=before_step, label=f"compiled decode ({settings})")
        except AssertionError as error:
            if n in over and compilation.is_recompile_error(error.__cause__):
                where = str(error).partition(" raised ")[0]
                latest, *earlier = compilation.guard_failures(error.__cause__)
                raise evidence.failure(
                    f"compilations grew with the decode steps: {n} steps compiled {over[n].graphs} graph(s), "
                    f"then {where} recompiled; guard failures (torch's reasons): {latest}"
                    + (f" (and {len(earlier)} more, one per earlier compilation)" if earlier else ""),
                    "recompilation", where=where, steps=n, graphs=over[n].graphs,
                ) from error
            raise
        over[2 * n] = compilation.counts().since(start)
        # Positive control, in the same block: a call with another shape is a recompilation, and must be seen.
        try:
            adapter.forward(compiled, sequence[:, :2])
        except Exception as error:
            if not compilation.is_recompile_error(error):
                raise
        else:
            pytest.fail("positive control: a call with a new input shape did not raise RecompileError, so this "
                        "check could not see a recompilation")
    metrics.update({f"over {steps} steps": counted.as_metrics() for steps, counted in over.items()})
    assert_compiled_something(over[n], "the decode step")
    assert over[2 * n].graphs == over[n].graphs, (
        f"compilations grew with the decode steps: {over[n].graphs} over {n} steps, {over[2 * n].graphs} over {2 * n}"
    )


EXPORT_PROMPTS = {
    "prompt-shorter-than-window": pytest.param(-1, marks=pytest.mark.slow(except_on=IN_THE_DEFAULT_RUN)),
    "prompt-longer-than-window": pytest.param(3, marks=pytest.mark.slow),
}


@pytest.mark.parametrize("offset", EXPORT_PROMPTS.values(), ids=EXPORT_PROMPTS.keys())
def test_exported_program_matches_recomputation(model, window, tokens, compare, metrics, offset):
    prompt = tokens(1, window + offset)
    steps = window + 2
    with located("export"):
        exported = compiled_adapter.export_decoder(model, capacity=prompt.shape[1] + steps)
    buffers = {name: (tuple(b.shape), b.data_ptr()) for name, b in exported.cache_buffers().items()}
    assert buffers, "the exported program has no key/value cache buffers to check"
    shapes = [str(list(shape)) for shape, _ in buffers.values()]
    metrics["cache_buffer_shapes"] = {shape: shapes.count(shape) for shape in sorted(set(shapes))}
    one_token_per_call(model, exported.step, prompt, steps, compare, label="exported program")
    after = {name: (tuple(b.shape), b.data_ptr()) for name, b in exported.cache_buffers().items()}
    changed = [f"{name}: {buffers[name][0]} -> {after.get(name, ('gone',))[0]}"
               for name in buffers if after.get(name, (None,))[0] != buffers[name][0]]
    assert not changed, f"the exported program's cache buffers changed shape: {'; '.join(changed)}"
    moved = [name for name in buffers if after[name][1] != buffers[name][1]]
    assert not moved, f"the exported program's cache buffers moved to new storage: {', '.join(moved)}"
