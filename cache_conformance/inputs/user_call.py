"""A team's own generate() call, read from a file (`--user-call FILE`), to be graded like every call of the user-call
suite (suites/test_your_call.py) on the checkpoint in use.

A TOML or JSON file:
    prompt_lengths = [12, 40]        # prompts of random tokens of these lengths (default [2W+3]); W from the checkpoint
    batch_size = 1                   # rows per call (default 1)
    [generate]                       # generate()'s keyword arguments, as the team writes them
    max_new_tokens = 20
    cache_implementation = "static"  # or, instead, a cache object the team makes:
    prompt_lookup_num_tokens = 6
    [cache]
    class = "StaticCache"            # a public cache class of the release, made as a user makes it
    max_cache_len = 64               # its capacity (default: the prompt and the new tokens)
or a model's generation_config.json, whose keys among GENERATE_KEYS make the call (its other keys, token ids and
the like, are the model's defaults and are left to the model). A key this reader does not know, sampling, or a
cache given both ways is one clear line (UserCallError), before any test runs. A value the release does not accept
is not the reader's business: the release's answer to the call is graded (refused clearly, or crashed).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from cache_conformance.adapter import generation
from cache_conformance.grading.user_calls import CacheChoice

# generate() arguments that select the cache, the strategy and the length: what a graded call may set
GENERATE_KEYS = ("max_new_tokens", "cache_implementation", "num_beams", "early_stopping", "length_penalty",
                 "prompt_lookup_num_tokens", "max_matching_ngram_size", "use_cache")
TOP_KEYS = ("generate", "cache", "prompt_lengths", "batch_size")
DEFAULT_NEW_TOKENS = 20


class UserCallError(ValueError):
    """A user-call file that cannot be graded; the message is one line naming the file."""


@dataclass(frozen=True)
class UserCall:
    path: Path
    arguments: dict = field(default_factory=dict)  # generate()'s keyword arguments, the cache ones aside
    cache_implementation: str | None = None
    cache_class: str | None = None
    capacity: int | None = None
    prompt_lengths: tuple[int, ...] = ()  # empty: the suite's default, 2W+3
    batch_size: int = 1

    @property
    def new_tokens(self) -> int:
        return self.arguments.get("max_new_tokens", DEFAULT_NEW_TOKENS)

    @property
    def strategy(self) -> str:
        if self.arguments.get("num_beams", 1) > 1:
            return f"beam-{self.arguments['num_beams']}"
        return "prompt-lookup" if "prompt_lookup_num_tokens" in self.arguments else "greedy"

    def choice(self) -> CacheChoice:
        """The cache choice the call makes, as the user-call suite names its choices."""
        if self.cache_implementation is not None:
            static = self.cache_implementation in generation.static_cache_implementations()
            return CacheChoice(f"implementation-{self.cache_implementation}", implementation=self.cache_implementation,
                               static=static)
        if self.cache_class is not None:
            return CacheChoice(f"object-{self.cache_class}", object_class=self.cache_class,
                               static=generation.takes_a_capacity(self.cache_class))
        return CacheChoice("default")


def load(path: Path) -> UserCall:
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError) as error:
        raise UserCallError(f"--user-call {path}: cannot read it ({error})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise UserCallError(f"--user-call {path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({error})") from None
    if not isinstance(data, dict):
        raise UserCallError(f"--user-call {path}: a table of keys is expected at the top level")
    if not set(data) & set(TOP_KEYS):  # a generation_config.json: its call-making keys only
        return _checked(path, {key: value for key, value in data.items() if key in GENERATE_KEYS}, {}, (), 1,
                        sampling=data.get("do_sample", False))
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise UserCallError(f"--user-call {path}: unknown keys {unknown} (known: {', '.join(TOP_KEYS)})")
    arguments, cache = data.get("generate", {}), data.get("cache", {})
    if not isinstance(arguments, dict) or not isinstance(cache, dict):
        raise UserCallError(f"--user-call {path}: [generate] and [cache] must be tables")
    sampling = arguments.pop("do_sample", False)
    unknown = sorted(set(arguments) - set(GENERATE_KEYS))
    if unknown:
        raise UserCallError(f"--user-call {path}: unknown generate() arguments {unknown}; a graded call may set "
                            f"{', '.join(GENERATE_KEYS)}")
    return _checked(path, arguments, cache, data.get("prompt_lengths", ()), data.get("batch_size", 1),
                    sampling=sampling)


def _checked(path: Path, arguments: dict, cache: dict, lengths, batch_size, *, sampling) -> UserCall:
    if sampling:
        raise UserCallError(f"--user-call {path}: do_sample: a sampled call has no single right answer to grade; "
                            "grade it without sampling")
    arguments = dict(arguments)
    implementation = arguments.pop("cache_implementation", None)
    unknown = sorted(set(cache) - {"class", "max_cache_len"})
    if unknown:
        raise UserCallError(f"--user-call {path}: unknown [cache] keys {unknown} (known: class, max_cache_len)")
    if cache and implementation is not None:
        raise UserCallError(f"--user-call {path}: both cache_implementation and a [cache] object: give one")
    if cache and not isinstance(cache.get("class"), str):
        raise UserCallError(f"--user-call {path}: [cache] needs class = \"<a cache class>\"")
    if not isinstance(lengths, list | tuple):
        raise UserCallError(f"--user-call {path}: prompt_lengths must be a list of lengths")
    for name, value in (("batch_size", batch_size), *(("prompt length", length) for length in lengths),
                        *((key, arguments[key]) for key in ("max_new_tokens", "num_beams") if key in arguments)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserCallError(f"--user-call {path}: {name} {value!r} is not a positive whole number")
    return UserCall(path, arguments, implementation, cache.get("class"), cache.get("max_cache_len"),
                    tuple(lengths), batch_size)
