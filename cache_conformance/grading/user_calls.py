"""The calls users write to generate(), made as written and graded (suites/test_user_calls.py).

A cache choice is one way a user asks generate() for a cache: no cache argument at all ("default"), each
`cache_implementation` the release's generation config accepts (read from the release, not from a table of ours),
or a cache object of a public class passed under the release's cache keyword. The call goes to generate() as a
user writes it: the model's own generation config, nothing added that changes which cache runs. The adapter only
spells what a release renamed (the cache keyword, a class's constructor). What the harness adds is what it grades
with: no sampling, and the output's logits and scores (adapter.generate_without_sampling).

Each call is graded as `grades` grades every call (correct, refused clearly or misleadingly, crashed, wrong), or
substituted, or oversized. Substituted: the output is right, but the cache that ran is not the one asked for. A
user's cache object that generate() did not use (the model's forward calls got another object), or a static kind (one
the release lists as static, or an object of a class the user gives a capacity, max_cache_len) whose layers changed
size between forward calls: a growing cache in place of a preallocated one. Oversized: the output is right and the
static cache kept its size, but its sliding layers hold more than the W positions they attend over (a full-length
buffer where W slots do, the memory a sliding window exists to save). The cache that ran (its class, each layer's
sizes) goes into the record either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cache_conformance import adapter
from cache_conformance.adapter import generation
from cache_conformance.grading import coverage, evidence, grades
from cache_conformance.grading.overflow import describe
from cache_conformance.oracles import generated
from cache_conformance.oracles.decoding import generation_against_recomputation
from cache_conformance.probes import recorders


@dataclass(frozen=True)
class CacheChoice:
    id: str
    implementation: str | None = None  # cache_implementation=
    object_class: str | None = None  # a cache object of this class
    static: bool = False  # the user asked for a preallocated cache

    def arguments(self, model, *, batch_size: int, capacity: int) -> dict:
        """generate()'s cache arguments as the user writes them (a new cache object each call)."""
        if self.implementation is not None:
            return {"cache_implementation": self.implementation}
        if self.object_class is not None:
            return {adapter.CACHE_KEYWORD: generation.user_cache_object(model, self.object_class, batch_size=batch_size,
                                                                         capacity=capacity)}
        return {}


DEFAULT = CacheChoice("default")  # no cache argument at all


def cache_choices() -> list[CacheChoice]:
    """The default, every cache_implementation the installed release accepts, a user's object of each class."""
    static = set(generation.static_cache_implementations())
    return [
        DEFAULT,
        *[CacheChoice(f"implementation-{name}", implementation=name, static=name in static)
          for name in generation.cache_implementations()],
        *[CacheChoice(f"object-{name}", object_class=name, static=generation.takes_a_capacity(name))
          for name in generation.user_cache_classes()],
    ]


def substitution(choice: CacheChoice, arguments: dict, seen: recorders.CachesSeen) -> str | None:
    """Why the cache that ran is not the one `choice` asked for, or None."""
    if not seen.sizes:
        return None
    given = arguments.get(adapter.CACHE_KEYWORD)
    if given is not None and any(cache is not given for cache in seen.objects):
        return (f"the user's {choice.object_class} was passed as {adapter.CACHE_KEYWORD}=, but the model ran with "
                f"{seen.classes}: another object")
    resized = seen.resized_layers()
    if choice.static and resized:
        shown = "; ".join(f"layer {layer}: {sizes}" for layer, sizes in list(resized.items())[:3])
        return (f"{choice.id} asks for a preallocated cache, but the cache that ran ({', '.join(seen.classes)}) "
                f"changed size between forward calls ({len(resized)} layers; {shown})")
    return None


def oversized(choice: CacheChoice, seen: recorders.CachesSeen, model) -> str | None:
    """Why a static request's cache is not what was asked for although it kept its size, or None: a preallocated
    cache whose sliding layers hold more than W positions (a full-length buffer where W slots do)."""
    if not choice.static or not seen.sizes:
        return None
    window = adapter.window(model.config)
    last = seen.sizes[-1]
    larger = {layer: size for layer, (size, sliding) in enumerate(zip(last, adapter.sliding_layers(model.config)))
              if sliding and size > window}
    if not larger:
        return None
    shown = ", ".join(f"layer {layer}: {size}" for layer, size in list(larger.items())[:3])
    return (f"{choice.id} asks for a preallocated cache, and the cache that ran ({', '.join(seen.classes)}) gives "
            f"{len(larger)} sliding layers more than the W={window} positions they attend over ({shown})")


# generate() arguments a standalone script can pass as they are (cache_conformance/repro); a call with others (an
# assistant model, images) is not recorded.
SCRIPTABLE = {"num_beams", "early_stopping", "length_penalty", "prompt_lookup_num_tokens", "max_matching_ngram_size",
              "use_cache"}


def recorded_call(choice: CacheChoice, prompt, options: dict, *, new_tokens: int, capacity: int, batch_size: int,
                  compare) -> dict | None:
    """The call as data, for a standalone reproduction (python -m cache_conformance.repro): the prompt's token ids,
    generate()'s arguments, the cache choice and the tolerance it was graded with; None where it takes more than
    data (an assistant model, images)."""
    if set(options) - SCRIPTABLE:
        return None
    if choice.implementation is not None:
        cache = {"implementation": choice.implementation}
    elif choice.object_class is not None:
        cache = {"class": choice.object_class, "capacity": capacity, "batch_size": batch_size}
    else:
        cache = {}
    tolerance = compare.tolerance
    return {"prompt": prompt.tolist(), "generate": {"max_new_tokens": new_tokens, **options}, "cache": cache,
            "static": choice.static, "tolerance": {"atol": tolerance.atol, "rtol": tolerance.rtol,
                                                   "greedy_tokens_identical": tolerance.greedy_tokens_identical}}


def call_and_grade(model, compare, metrics, choice, strategy, prompt, *, new_tokens, options, where,
                   prompt_images=None, certifies=(), capacity: int | None = None) -> dict | None:
    """Make the call as a user writes it and grade it: a clear refusal returns; a crash, a wrong result or a
    substituted cache fails with `where` in the message. `prompt_images`: the prompt's images (place_images).
    Returns what a correct call's inputs reached (coverage), None for a clear refusal; with `certifies`, a correct
    call that reached none of those regimes fails as "precondition not met". `capacity`: a user's cache object's
    (default: the prompt and the new tokens)."""
    if prompt_images is not None:
        options = {**options, "pixel_values": prompt_images.pixel_values, "token_type_ids": prompt_images.token_types}
    metrics.update(choice=choice.id, strategy=strategy, prompt_length=prompt.shape[1])
    capacity = capacity or prompt.shape[1] + new_tokens
    call = recorded_call(choice, prompt, options, new_tokens=new_tokens, capacity=capacity,
                         batch_size=prompt.shape[0] * options.get("num_beams", 1), compare=compare)
    if call is not None:
        metrics["call"] = call
    arguments, output, raised = None, None, None
    with recorders.CachesSeen(model) as seen, recorders.FedTokens(model) as fed:
        try:  # making the user's cache object is part of the user's call
            arguments = choice.arguments(model, batch_size=prompt.shape[0] * options.get("num_beams", 1),
                                         capacity=capacity)
            output = adapter.generate_without_sampling(model, prompt, max_new_tokens=new_tokens, output_scores=True,
                                                       **arguments, **options)
        except Exception as error:  # noqa: BLE001 - whatever the call raises is graded
            raised = error
    metrics.update(seen.as_metrics())
    if raised is not None:
        passed = {"max_new_tokens", *(arguments or {}), *options}
        metrics.update(outcome=grades.grade(raised, passed=passed), exception=describe(raised)[:500])
        if metrics["outcome"] == "refused clearly":
            return None  # a clear refusal conforms
        stage = where if arguments is not None else f"{where}: making the user's {choice.object_class}"
        if metrics["outcome"] == "refused misleadingly":
            named = grades.arguments_named_but_not_passed(raised, passed)
            raise evidence.failure(f"refused misleadingly: {stage} raised {describe(raised)}: it names {named}, "
                                   f"which the call did not pass", "misleading refusal", where=stage,
                                   named=named) from raised
        raise evidence.failure(f"crashed: {stage} raised {describe(raised)}", evidence.CRASH, where=stage,
                               raised=type(raised).__name__) from raised
    window = adapter.window(model.config)
    with grades.graded(metrics):
        if "num_beams" in options:
            indices = generation.beam_indices(output)
            generated.beam_paths_against_recomputation(model, output, indices, torch.ones_like(prompt), compare,
                                                        beams=options["num_beams"], where=where)
            reached = coverage.beam_coverage(indices, prompt_length=prompt.shape[1], window=window)
        else:
            generation_against_recomputation(model, prompt.shape[1], output.sequences, adapter.step_logits(output),
                                             compare, where=where, images=prompt_images, max_new_tokens=new_tokens)
            reached = {}
    if "prompt_lookup_num_tokens" in options or "assistant_model" in options:  # a drafting strategy
        steps = coverage.draft_steps(fed.calls, output.sequences[0].tolist(), prompt.shape[1])
        reached = coverage.drafting_coverage(steps, window=window, budget_end=prompt.shape[1] + new_tokens)
    problem = substitution(choice, arguments, seen)
    if problem:
        metrics["outcome"] = "substituted"
        raise evidence.failure(f"substituted: {where}: {problem}", "substituted", choice=choice.id,
                               strategy=strategy, caches=seen.classes)
    problem = oversized(choice, seen, model)
    if problem:
        metrics["outcome"] = "oversized"
        raise evidence.failure(f"oversized: {where}: {problem}", "oversized", choice=choice.id, strategy=strategy,
                               caches=seen.classes)
    if certifies:
        coverage.require(reached, certifies, where=where, metrics=metrics)
    return reached
