"""Every difference between transformers releases that the suites depend on, and nothing else.

Suites call these functions and never look at the version themselves. Each rule names the first release it
applies to; the rules were checked by running the suites on every minor release from 4.50 to the newest adopted
one (`adopted` in suites/expectations.toml; a newer release gets a PROVISIONAL line in the run header).
This module holds loading, the caches, forward and generate(); each further usage path has its own module in this
package (`compiled`: torch.compile and torch.export; `multimodal`: Gemma3ForConditionalGeneration and images;
`generation`: assisted, prompt-lookup and beam decoding, crop(), continuous batching; `dispatch`: the offloaded
static cache).
Config reads go through the text config (`config.get_text_config()`, the config itself for the text model), so
the cache helpers serve the multimodal model's language model too.
"""

from __future__ import annotations

import copy
import warnings

import torch
import transformers
from packaging.version import Version

INSTALLED = Version(transformers.__version__)
FIRST_SUPPORTED = Version("4.50")  # Gemma 3 appeared in 4.50.0

# 4.50-4.55: HybridCache; from 4.56 StaticCache builds sliding layers itself (HybridCache is a deprecated alias).
# From 4.56 too, DynamicCache takes the config and gives sliding layers a trimmed (windowed) layer.
STATIC_CACHE_WITH_SLIDING_LAYERS = Version("4.56")
# Before 4.54 the cache keeps parallel lists `key_cache[i]` / `value_cache[i]`; from 4.54 `layers[i].keys`.
CACHE_LAYER_OBJECTS = Version("4.54")
# Until 5.4 the model reads `cache_position` to place new tokens; from 5.4 the cache counts for itself.
CACHE_POSITION_IGNORED = Version("5.4")
# 5.0 renamed from_pretrained's `torch_dtype` to `dtype`.
DTYPE_KEYWORD = Version("5.0")
# 4.50-4.52 generate() builds a HybridCache by default (Gemma 3's config says cache_implementation="hybrid");
# from 4.53 it builds a DynamicCache.
GENERATE_DEFAULT_DYNAMIC = Version("4.53")
# The static cache's per-layer sliding flags are `is_sliding` (4.50-4.51 HybridCache, a tensor; 4.53 HybridCache, a
# list; from 4.54 a property of every cache) except in 4.52, whose HybridCache names them `is_sliding_list` and has
# no `is_sliding` (checked on 4.52.0 and 4.52.4).
SLIDING_FLAGS_LISTED = Version("4.52")
SLIDING_FLAGS_NAMED_BACK = Version("4.53")
# 5.24 renamed the cache argument of forward() and generate(), and the outputs' cache field, from
# `past_key_values` to `cache`; the old name still works there with a FutureWarning (forward: removed in 5.40.0,
# generate: in 6.0.0; reading `output.past_key_values` logs a deprecation).
CACHE_RENAMED = Version("5.24")
LEGACY_CACHE_KEYWORD = "past_key_values"
CACHE_KEYWORD = "cache" if INSTALLED >= CACHE_RENAMED else LEGACY_CACHE_KEYWORD


def release_problem() -> str | None:
    """One line saying why the installed release cannot be tested, or None."""
    if INSTALLED.release[:2] < FIRST_SUPPORTED.release:
        return (
            f"transformers {INSTALLED} is not supported: Gemma 3 first appeared in {FIRST_SUPPORTED}. "
            f"Install transformers>={FIRST_SUPPORTED} (e.g. tox -e py311-transformers-latest)."
        )
    return None


def load_model(path, *, dtype: torch.dtype, device: str, attn_implementation: str, **text_config_overrides):
    """Load a Gemma 3 checkpoint through the ordinary from_pretrained path of the causal-LM auto class, in eval
    mode. A text checkpoint gives Gemma3ForCausalLM; a multimodal one gives Gemma3ForConditionalGeneration (every
    release 4.50-5.24), which the text suites drive with text alone. `text_config_overrides` (e.g. sliding_window=3)
    replace values of the language model's config, which is the config itself for a text checkpoint."""
    config = None
    if text_config_overrides:
        config = transformers.AutoConfig.from_pretrained(path)
        for name, value in text_config_overrides.items():
            setattr(text_config(config), name, value)
    model, _ = from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation, config=config)
    return model.to(device).eval()


def weights_not_loaded(path, auto_class=None) -> dict[str, list[str]]:
    """Parameters from_pretrained could not fill from the checkpoint (it would initialise them at random),
    and checkpoint tensors it did not use: {"missing_keys": [...], ...}, empty lists left out."""
    _, info = from_pretrained(path, dtype=torch.float32, attn_implementation="eager", auto_class=auto_class)
    return {kind: sorted(names) for kind, names in info.items() if kind != "error_msgs" and names}


def from_pretrained(path, *, dtype: torch.dtype, attn_implementation: str, auto_class=None, **options):
    """(model, loading info) from `auto_class` (default: the causal-LM auto class) on safetensors weights;
    `options` go to from_pretrained (e.g. config=)."""
    dtype_keyword = "dtype" if INSTALLED >= DTYPE_KEYWORD else "torch_dtype"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (auto_class or transformers.AutoModelForCausalLM).from_pretrained(
            path,
            attn_implementation=attn_implementation,
            use_safetensors=True,
            output_loading_info=True,
            **{dtype_keyword: dtype},
            **options,
        )


def text_config(config):
    """The language model's config: the config itself for the text model, `text_config` for the multimodal one."""
    return config.get_text_config()


def sliding_layers(config) -> list[bool]:
    """For each decoder layer, whether it attends over a sliding window."""
    return [kind == "sliding_attention" for kind in text_config(config).layer_types]


def window(config) -> int:
    return text_config(config).sliding_window


def make_static_cache(model, *, batch_size: int, capacity: int):
    """A preallocated static cache for `batch_size` sequences of at most `capacity` tokens, tensors allocated now."""
    config = text_config(model.config)
    if INSTALLED < STATIC_CACHE_WITH_SLIDING_LAYERS:
        return transformers.HybridCache(
            config, max_batch_size=batch_size, max_cache_len=capacity, device=model.device, dtype=model.dtype
        )
    cache = transformers.StaticCache(config=config, max_cache_len=capacity)
    cache.early_initialization(
        batch_size=batch_size,
        num_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        dtype=model.dtype,
        device=model.device,
    )
    return cache


def make_dynamic_cache(model):
    """The growing cache a model builds when given none: sliding layers trimmed to the window where the release
    does that (from 4.56), otherwise every layer keeps every position."""
    if INSTALLED < STATIC_CACHE_WITH_SLIDING_LAYERS:
        return transformers.DynamicCache()
    return transformers.DynamicCache(config=text_config(model.config))


def dynamic_cache_trims_sliding_layers() -> bool:
    """Whether `make_dynamic_cache`'s sliding layers stop growing at the window (from 4.56; checked by the memory
    suite's control on 4.50-5.24: before 4.56 every layer grows by one position per decoded token)."""
    return INSTALLED >= STATIC_CACHE_WITH_SLIDING_LAYERS


def dynamic_sliding_positions_kept(window: int) -> int | None:
    """How many positions a dynamic cache's sliding layer keeps between calls (None: every position). From 4.56 it
    keeps W-1, all the next token attends to besides itself; before, it keeps everything. Checked on 4.50-5.24."""
    return window - 1 if dynamic_cache_trims_sliding_layers() else None


def generate_default_sliding_positions_kept(window: int) -> int | None:
    """How many positions the sliding layers of the cache generate() builds by default keep (None: every position):
    W in 4.50-4.52 (a HybridCache), every position in 4.53-4.55 (an untrimmed DynamicCache), W-1 from 4.56."""
    return window if INSTALLED < GENERATE_DEFAULT_DYNAMIC else dynamic_sliding_positions_kept(window)


def slot_order(held: list[int], slots: int) -> list[int | None]:
    """Which position each of a cache layer's `slots` holds when the layer holds `held` (oldest first); None marks
    an unused slot, which is all zeros. Every release 4.50-5.25, static and dynamic, sliding and full: positions
    are stored chronologically from slot 0 (a full static sliding buffer rolls left, its oldest position at slot
    0), unused preallocated slots after them (checked by identifying each slot's position after every step of
    prefill, decode and chunk schedules on each minor release)."""
    return [*held, *[None] * (slots - len(held))]


def static_cache_class():
    """The class `make_static_cache` instantiates (what a fault patch must target)."""
    if INSTALLED < STATIC_CACHE_WITH_SLIDING_LAYERS:
        return transformers.HybridCache
    return transformers.StaticCache


def sliding_window_source():
    """The class whose instances' `sliding_window` sets both the sliding layers' attention mask and the sliding
    cache layers' size, for recomputation and the cached path alike: a fault that widens the window there widens
    it everywhere. On every release 4.50-5.24 that is the text config (4.50-4.52 build the window mask inside the
    Gemma 3 model, 4.53 on through masking_utils' sliding-window mask functions; both read the config's value,
    and so do HybridCache and StaticCache)."""
    return transformers.Gemma3TextConfig


def layer_count(cache) -> int:
    return len(cache.key_cache) if INSTALLED < CACHE_LAYER_OBJECTS else len(cache.layers)


def layer_is_sliding(cache, layer: int) -> bool:
    """Whether the cache sizes and fills `layer` as a sliding window (a static cache of `make_static_cache`'s class,
    or on 4.54 and later any cache)."""
    flags = cache.is_sliding_list if SLIDING_FLAGS_LISTED <= INSTALLED < SLIDING_FLAGS_NAMED_BACK else cache.is_sliding
    return bool(flags[layer])


def capacity(cache) -> int:
    """How many positions the full-attention layers can hold (the sliding layers hold at most the window)."""
    return max(layer_storage(cache, layer)[0].shape[2] for layer in range(layer_count(cache)))


def reset(cache) -> None:
    cache.reset()


def seq_length(cache) -> int:
    """The number of tokens the cache reports holding (what generate() and the model read)."""
    return int(cache.get_seq_length())


def returned_cache(output, cache_keyword: str | None = None):
    """The cache a forward() or generate() output carries (its field is named like the cache argument)."""
    return getattr(output, cache_keyword or CACHE_KEYWORD)


def layer_storage(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The key and value tensors the cache holds for one layer (its storage, not a copy)."""
    if INSTALLED < CACHE_LAYER_OBJECTS:
        return cache.key_cache[layer], cache.value_cache[layer]
    return cache.layers[layer].keys, cache.layers[layer].values


def replace_layer_storage(cache, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Make the cache hold `keys` and `values` for one layer from now on (what a fault that moves storage does)."""
    if INSTALLED < CACHE_LAYER_OBJECTS:
        cache.key_cache[layer], cache.value_cache[layer] = keys, values
    else:
        cache.layers[layer].keys, cache.layers[layer].values = keys, values


@torch.no_grad()
def forward(model, input_ids, *, cache=None, start: int = 0, attention_mask=None, position_ids=None,
            cache_keyword: str | None = None, **model_inputs):
    """Logits for `input_ids`, the tokens at positions start, start+1, ... of the sequence.

    Without a cache this is plain recomputation. With one, the cache must hold exactly the `start` earlier tokens.
    `attention_mask` covers every position so far (earlier and new), as generate() passes it. `cache_keyword` is
    the name the cache is passed under: the release's own by default (the deprecations suite passes the old one).
    `model_inputs` go to the model as they are (the multimodal adapter's pixel values and token types).
    """
    cache_keyword = cache_keyword or CACHE_KEYWORD
    kwargs = {"attention_mask": attention_mask, "position_ids": position_ids, **model_inputs}
    if cache is None:
        kwargs["use_cache"] = False
    else:
        kwargs |= {cache_keyword: cache, "use_cache": True}
        if INSTALLED < CACHE_POSITION_IGNORED:
            kwargs["cache_position"] = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
    return model(input_ids, **kwargs).logits


def own_static_cache_implementation() -> str:
    """The generate() cache_implementation that makes generate build Gemma 3's static cache itself."""
    return "hybrid" if INSTALLED < STATIC_CACHE_WITH_SLIDING_LAYERS else "static"


def generate_with_own_static_cache(model, input_ids, *, max_new_tokens: int):
    """Greedy generate() with a static cache that generate() builds and sizes (and may keep on the model)."""
    return greedy_generate(model, input_ids, max_new_tokens, cache_implementation=own_static_cache_implementation())


def generate_with_static_cache(model, input_ids, *, cache, max_new_tokens: int, attention_mask=None,
                               cache_keyword: str | None = None, **model_inputs):
    """Greedy generate() into a user-supplied static cache, passed under `cache_keyword` (default: the release's
    own name); returns (sequences, logits of each new step). `model_inputs` (e.g. pixel values) go to generate()."""
    cache_arguments = user_cache_arguments(model, cache, cache_keyword) | model_inputs
    return greedy_generate(model, input_ids, max_new_tokens, attention_mask, **cache_arguments)


def user_cache_arguments(model, cache, cache_keyword: str | None = None) -> dict:
    """The generate() arguments that pass a user's own cache, under `cache_keyword` (default: the release's name)."""
    arguments = {cache_keyword or CACHE_KEYWORD: cache}
    if INSTALLED < STATIC_CACHE_WITH_SLIDING_LAYERS:
        # Gemma 3's config sets cache_implementation="hybrid" and generate() refuses a user cache while it is set
        # ("Passing both `cache_implementation` ... and `past_key_values`"); a generation config without it, used
        # as given rather than refilled from the model's defaults, is how a user passes their own cache.
        generation_config = copy.deepcopy(model.generation_config)
        generation_config.cache_implementation = None
        arguments |= {"generation_config": generation_config, "use_model_defaults": False}
    return arguments


def generate_with_default_cache(model, input_ids, *, max_new_tokens: int, cache_keyword: str | None = None):
    """Greedy generate() with the cache it builds by default; returns (sequences, that cache, read from the
    output's field named `cache_keyword`, by default the release's own name)."""
    output = _greedy_generate_output(model, input_ids, max_new_tokens)
    return output.sequences, returned_cache(output, cache_keyword)


def greedy_generate(model, input_ids, max_new_tokens: int, attention_mask=None, **cache_arguments):
    """Exactly `max_new_tokens` greedy tokens (generate() without sampling, its length forced); returns (sequences,
    raw logits of each new step). `cache_arguments` go to generate() as they are: how the cache is chosen or passed
    (cache_implementation=, a user cache under the release's keyword, ...) and further settings (compile_config=)."""
    output = _greedy_generate_output(model, input_ids, max_new_tokens, attention_mask, **cache_arguments)
    return output.sequences, step_logits(output)


def step_logits(output) -> torch.Tensor:
    """generate()'s raw logits of each generated step as one (rows, steps, vocab) tensor."""
    return torch.stack(output.logits, dim=1)


def _greedy_generate_output(model, input_ids, max_new_tokens: int, attention_mask=None, **cache_arguments):
    return generate_without_sampling(model, input_ids, max_new_tokens=max_new_tokens, attention_mask=attention_mask,
                                     min_new_tokens=max_new_tokens, **cache_arguments)


@torch.no_grad()
def generate_without_sampling(model, input_ids, *, max_new_tokens: int, attention_mask=None, **arguments):
    """generate() without sampling (greedy, or beam search with num_beams=), returning its whole output: the
    sequences and the raw logits of each step. `arguments` go to generate() as they are."""
    return model.generate(
        input_ids,
        attention_mask=attention_mask if attention_mask is not None else torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
        pad_token_id=text_config(model.config).pad_token_id,
        **arguments,
    )
