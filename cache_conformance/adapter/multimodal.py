"""Release differences of the multimodal Gemma 3 (Gemma3ForConditionalGeneration): loading, and how a call passes
its images' pixel values and token types.

Checked by running the multimodal suite on every minor release 4.50-5.25 (docs/suites/multimodal.md).
"""

from __future__ import annotations

import torch
import transformers
from packaging.version import Version

from cache_conformance.adapter import CACHE_KEYWORD, INSTALLED, LEGACY_CACHE_KEYWORD, forward, from_pretrained

# From 4.53 the two-way image mask reads token types by absolute position, so a call passes the token types of the
# whole sequence so far, as generate() does (5.23 says so in a comment: "a prefill chunk needs them from the start
# of the sequence"); 4.50-4.52 build the mask from the call's own tokens' types. Checked with a second turn that
# brings an image on a cache holding the first: 4.57-5.24 match recomputation this way, and not the other.
TOKEN_TYPES_FROM_SEQUENCE_START = Version("4.53")


def load_model(path, *, dtype: torch.dtype, device: str, attn_implementation: str):
    """Load a multimodal Gemma 3 checkpoint through the image-text-to-text auto class (every release 4.50-5.24
    maps model_type gemma3 to Gemma3ForConditionalGeneration there), in eval mode."""
    model, _ = from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation, auto_class=auto_class())
    return model.to(device).eval()


def auto_class():
    return transformers.AutoModelForImageTextToText


def image_tokens(config) -> tuple[int, int, int, int]:
    """(begin-of-image id, image soft token id, end-of-image id, soft tokens per image) from the model's config."""
    return config.boi_token_index, config.image_token_index, config.eoi_token_index, config.mm_tokens_per_image


def image_size(config) -> int:
    return config.vision_config.image_size


def forward_with_images(model, input_ids, *, pixel_values, token_types, cache=None, start: int = 0,
                        attention_mask=None, position_ids=None):
    """Logits for `input_ids` (positions start, start+1, ...) with the pixel values of the images whose tokens are
    in this call (None: no image). `token_types` covers the whole sequence up to this call's last token (1 at image
    soft tokens). A one-token call gets no token types, as generate() passes none after its first step (every
    release ignores them for one token)."""
    length = input_ids.shape[1]
    if length == 1:
        token_type_ids = None
    elif INSTALLED >= TOKEN_TYPES_FROM_SEQUENCE_START:
        token_type_ids = token_types[:, : start + length]
    else:
        token_type_ids = token_types[:, start : start + length]
    return forward(model, input_ids, cache=cache, start=start, attention_mask=attention_mask,
                   position_ids=position_ids, pixel_values=pixel_values, token_type_ids=token_type_ids)


def model_class():
    """The class the auto class loads a multimodal Gemma 3 checkpoint as (what a fault patch must target)."""
    return transformers.Gemma3ForConditionalGeneration


def projector_class():
    """The module that turns the vision tower's patches into an image's soft-token features (every release 4.50-5.24:
    `Gemma3MultiModalProjector.forward(vision_outputs)` returns (images, soft tokens, hidden))."""
    from transformers.models.gemma3 import modeling_gemma3

    return modeling_gemma3.Gemma3MultiModalProjector


def cache_given(forward_kwargs: dict) -> bool:
    """Whether a call to the model's forward passes a cache, under the release's name or the older one."""
    return any(forward_kwargs.get(name) is not None for name in {CACHE_KEYWORD, LEGACY_CACHE_KEYWORD})
