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

from cache_conformance import adapter
from cache_conformance.adapter import generation
from cache_conformance.probes.recorders import CachesSeen


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


def substitution(choice: CacheChoice, arguments: dict, seen: CachesSeen) -> str | None:
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


def oversized(choice: CacheChoice, seen: CachesSeen, model) -> str | None:
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
