"""Release differences of the generation strategies that rewind, reorder or page the cache: assisted and
prompt-lookup decoding, beam search, crop(), and continuous batching (generate_batch).

Checked by running the generation-strategies suite on every minor release 4.50-5.25
(docs/suites/strategies.md). What a release does with a strategy (works, refuses, crashes) is the suite's finding, not a rule here:
these functions call each strategy the same way on every release and let it raise.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging

import torch
import transformers
from packaging.version import Version

from cache_conformance.adapter import (
    INSTALLED,
    generate_without_sampling,
    static_cache_class,
    text_config,
    user_cache_arguments,
)


def generate(model, input_ids, *, max_new_tokens: int, cache=None, attention_mask=None, **strategy):
    """generate() without sampling, returning its whole output (sequences, raw logits of each step, and the beam
    fields for beam search). `cache`: a user-supplied cache, else the one generate() builds by default. `strategy`:
    what selects the strategy (assistant_model=, prompt_lookup_num_tokens=, num_beams=, ...). Generation may end
    at end-of-sequence before `max_new_tokens`: forcing the length (min_length or min_new_tokens) makes 4.57's
    assisted decoding refuse ("Passing `MinLengthLogitsProcessor` when using `assisted_generation is disabled")."""
    arguments = user_cache_arguments(model, cache) if cache is not None else {}
    return generate_without_sampling(model, input_ids, max_new_tokens=max_new_tokens, attention_mask=attention_mask,
                                     output_scores=True, **arguments, **strategy)


def beam_indices(output) -> torch.Tensor:
    """For each returned hypothesis and step, the running beam (a row of that step's logits, over batch x beams)
    its token was chosen from; -1 after the hypothesis ended. Every release 4.50-5.24."""
    return output.beam_indices


def record_past(cache) -> None:
    """What a release needs before a cache may be cropped past its sliding window: caches have
    `activate_past_recording()` from 5.14, and from 5.15 the dynamic sliding layer then keeps the states it would
    evict (generate() calls it for assisted decoding); releases without it keep what they keep."""
    if hasattr(cache, "activate_past_recording"):
        cache.activate_past_recording()


def crop(cache, tokens: int) -> None:
    """Remove the last `tokens` positions, as assisted decoding rolls back rejected drafts. A negative argument means
    "this many tokens" on every release that has crop() (4.50's DynamicCache.crop already took it; 5.x refuses a
    positive one); a cache class without crop() raises the AttributeError the user would get."""
    cache.crop(-tokens)


def capacity_query_name(cache_class: str) -> str:
    """The name under which the release answers a user who asks a cache of `cache_class` its maximum length:
    get_max_cache_shape() to 5.12, get_max_length() from 5.13; "no maximum" is None before 4.56 and -1 after."""
    return "get_max_length" if hasattr(getattr(transformers, cache_class), "get_max_length") else "get_max_cache_shape"


def croppable_cache_classes() -> list[type]:
    """The cache classes whose crop() assisted decoding and the suite call (what a rollback fault patches)."""
    return [cls for cls in (transformers.DynamicCache, static_cache_class()) if hasattr(cls, "crop")]


def reorderable_cache_classes() -> list[type]:
    """The cache classes whose reorder_cache(beam_idx) beam search calls each step, every release 4.50-5.24 (what a
    beam-reorder fault patches)."""
    return [cls for cls in (transformers.DynamicCache, static_cache_class()) if hasattr(cls, "reorder_cache")]


# ---- the calls users write (the user-call suite): what the release offers, spelled as it spells it ----

def cache_implementations() -> tuple[str, ...]:
    """Every cache_implementation the release's generation config accepts, read from the release (its
    ALL_CACHE_IMPLEMENTATIONS, in its order, each once)."""
    from transformers.generation import configuration_utils

    return tuple(dict.fromkeys(configuration_utils.ALL_CACHE_IMPLEMENTATIONS))


def static_cache_implementations() -> tuple[str, ...]:
    """The cache_implementation values the release itself calls static (preallocated, set up before decoding): its
    ALL_STATIC_CACHE_IMPLEMENTATIONS where it has that list, before that the keys of NEED_SETUP_CACHE_CLASSES_MAPPING
    (the caches generate() sets up ahead)."""
    from transformers.generation import configuration_utils

    listed = getattr(configuration_utils, "ALL_STATIC_CACHE_IMPLEMENTATIONS", None)
    if listed is None:
        listed = list(configuration_utils.NEED_SETUP_CACHE_CLASSES_MAPPING)
    return tuple(dict.fromkeys(listed))


# Public cache classes a decoder-only user does not pass to generate() as a plain cache object, with the reason.
NOT_A_USERS_DECODER_CACHE = {
    "Cache": "the abstract base class",
    "EncoderDecoderCache": "a pair of caches for encoder-decoder models",
    "SinkCache": "evicts middle tokens by design, so its outputs are not recomputation's (removed in 4.53)",
    "QuantizedCache": "needs an optional quantization backend: the quantized-cache suite",
    "QuantoQuantizedCache": "needs optimum-quanto: the quantized-cache suite",
    "HQQQuantizedCache": "needs hqq: the quantized-cache suite",
}
# What a user hands a cache constructor, under each name a release's constructors use for it.
CONSTRUCTOR_ARGUMENTS = ("config", "max_cache_len", "max_batch_size", "batch_size", "device", "dtype")


def user_cache_classes() -> tuple[str, ...]:
    """The public cache classes of the installed release (the classes of transformers.cache_utils that subclass
    its Cache and `transformers` exports), less those in NOT_A_USERS_DECODER_CACHE, in name order. Read from
    cache_utils: asking `transformers` for every name ending in "Cache" imports dozens of models' code."""
    from transformers import cache_utils

    exported = set(dir(transformers))
    return tuple(name for name in sorted(vars(cache_utils))
                 if name in exported and name not in NOT_A_USERS_DECODER_CACHE
                 and inspect.isclass(cls := vars(cache_utils)[name]) and issubclass(cls, cache_utils.Cache))


def constructor_parameters(class_name: str) -> dict[str, inspect.Parameter]:
    """The parameters the class's constructor takes by name. A constructor that only forwards (*args, **kwargs, and
    at most `config` of its own: 4.54-4.55's StaticCache) takes its base class's too."""
    taken = {}
    for cls in getattr(transformers, class_name).__mro__:
        if "__init__" not in vars(cls):
            continue
        own = {name: parameter for name, parameter in inspect.signature(cls.__init__).parameters.items()
               if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}
        taken = {**own, **taken}
        if not (set(own) <= {"config"} and "kwargs" in inspect.signature(cls.__init__).parameters):
            return taken
    return taken


def takes_a_capacity(class_name: str) -> bool:
    """Whether the class's constructor asks the user for a capacity (max_cache_len): a preallocated kind."""
    return "max_cache_len" in constructor_parameters(class_name)


def user_cache_object(model, class_name: str, *, batch_size: int, capacity: int):
    """A cache object made as a user makes one for `model`. A growing kind takes no arguments (DynamicCache(),
    OffloadedCache()); a preallocated kind gets what its constructor names of: the model's config, the capacity,
    the batch size (under the release's name for it), the device and the dtype (so StaticCache(config,
    max_cache_len) from 4.56, with the batch size, device and dtype before that)."""
    parameters = constructor_parameters(class_name)
    if "max_cache_len" not in parameters:  # a growing kind (takes_a_capacity)
        return getattr(transformers, class_name)()
    offered = {"config": model.config, "max_cache_len": capacity, "device": model.device, "dtype": model.dtype,
               "max_batch_size": batch_size,
               "batch_size": None if "max_batch_size" in parameters else batch_size}  # 4.50: both, one deprecated
    return getattr(transformers, class_name)(**{name: offered[name] for name in CONSTRUCTOR_ARGUMENTS
                                                if name in parameters and offered[name] is not None})


def continuous_batching_problem(model) -> str | None:
    """Why the release has no continuous batching for this model, or None (generate_batch appeared in 4.53)."""
    if hasattr(model, "generate_batch"):
        return None
    return f"transformers {transformers.__version__} has no continuous batching (generate_batch appeared in 4.53)"


def attention_implementation(model) -> str:
    """The attention implementation the model's forward uses now (generate_batch switches it to a paged one)."""
    return model.config._attn_implementation


# The paged cache's size. Left to itself generate_batch sizes it from the device's free memory: on CPU 4.56-5.0
# find none ("unsupported operand type(s) for -: 'NoneType' and 'int'", even with the sizes given) and from 5.1 it
# takes 90% of the machine's free RAM.
PAGED_CACHE_BLOCKS = 16
PAGED_BATCH_TOKENS = 64
# 4.53-5.3 read the paged cache's sizes from the generation config (num_blocks=, max_batch_tokens=); from 5.4
# generate_batch takes them in a ContinuousBatchingConfig.
CONTINUOUS_BATCHING_CONFIG = Version("5.4")

# Where generate_batch logs the errors of its generation thread: 4.57 has a logger of its own.
CONTINUOUS_BATCHING_LOGGERS = ("ContinuousBatchingLogger", "transformers")


@torch.no_grad()
def generate_batch(model, prompts: list[list[int]], *, max_new_tokens: int) -> list[list[int]]:
    """Greedy continuous batching of `prompts` submitted together, in a paged cache of PAGED_CACHE_BLOCKS blocks;
    each request's generated tokens (without its prompt). generate_batch runs its loop in a thread that logs an
    error and returns what it has, so a request without a result raises here with the errors it logged."""
    config = text_config(model.config)
    generation_config = transformers.GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    sizes = {"num_blocks": PAGED_CACHE_BLOCKS, "max_batch_tokens": PAGED_BATCH_TOKENS}
    if INSTALLED < CONTINUOUS_BATCHING_CONFIG:
        generation_config.update(**sizes)
        batching_arguments = {}
    else:
        batching_arguments = {"continuous_batching_config": transformers.ContinuousBatchingConfig(**sizes)}
    logged = _ErrorsLogged()
    loggers = [logging.getLogger(name) for name in CONTINUOUS_BATCHING_LOGGERS]
    for logger in loggers:
        logger.addHandler(logged)
    try:
        results = model.generate_batch(inputs=prompts, generation_config=generation_config, progress_bar=False,
                                       **batching_arguments)
    finally:
        for logger in loggers:
            logger.removeHandler(logged)
    by_index = {int(str(request_id).rsplit("_", 1)[-1]): list(result.generated_tokens)  # request ids are "req_<i>"
                for request_id, result in results.items()}
    missing = [index for index in range(len(prompts)) if index not in by_index]
    if missing:
        raise RuntimeError(f"generate_batch returned no result for requests {missing} of {len(prompts)}; "
                           f"errors logged: {logged.messages or 'none'}")
    return [by_index[index] for index in range(len(prompts))]


class _ErrorsLogged(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


# ---- quantized caches (cache_implementation="quantized", the optimum-quanto backend) ----

QUANTIZED_BACKEND = "quanto"  # optimum-quanto, which installs from PyPI; every release 4.50-5.24 names it so


def quantized_cache_problem() -> str | None:
    """Why generate() cannot be asked for a quantized cache here, or None."""
    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.quanto") is None:
        return "the quantized cache's backend is not installed (pip install optimum-quanto)"
    return None


def generate_with_quantized_cache(model, input_ids, *, max_new_tokens: int, nbits: int, residual_length: int,
                                  group_size: int):
    """Greedy generate() with the quantized cache: keys and values kept as `nbits`-bit integers in groups of
    `group_size`, the newest `residual_length` positions in full precision until they are quantized too."""
    config = {"backend": QUANTIZED_BACKEND, "nbits": nbits, "residual_length": residual_length,
              "q_group_size": group_size}
    return generate_without_sampling(model, input_ids, max_new_tokens=max_new_tokens,
                                     cache_implementation="quantized", cache_config=config)
