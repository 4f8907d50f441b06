"""Prompts with images for the multimodal Gemma 3: where each image sits in the token sequence, its pixel values,
and what each call over a span of positions must pass to the model.

An image takes 2 + N positions: begin-of-image, N soft tokens (the image's features replace their embeddings),
end-of-image. Pixel values are drawn from a seeded generator, uniform in [-1, 1] (the range Gemma 3's image
processor normalises to).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cache_conformance.adapter import multimodal


@dataclass(frozen=True)
class Image:
    row: int
    first: int  # position of the first soft token
    last: int  # position of the last soft token

    @property
    def soft_tokens(self) -> list[int]:
        return list(range(self.first, self.last + 1))


@dataclass(frozen=True)
class Images:
    """The images of a prompt: pixel values in order of appearance (row by row, then by position: the order the
    model scatters image features in) and token types over the prompt (1 at soft tokens)."""

    pixel_values: torch.Tensor  # (images, channels, size, size)
    token_types: torch.Tensor  # (batch, prompt length)
    placed: tuple[Image, ...]

    def call_inputs(self, start: int, end: int) -> dict:
        """What a call over positions start..end-1 passes besides its token ids: the pixel values of the images
        inside it (None when there are none) and the token types from position 0 to `end` (decoded tokens are
        text)."""
        inside = []
        for index, image in enumerate(self.placed):
            if start <= image.first and image.last < end:
                inside.append(index)
            else:
                assert image.last < start or image.first >= end, (
                    f"positions {start}..{end - 1} cut an image ({image}): a call must take an image whole"
                )
        batch, length = self.token_types.shape
        token_types = self.token_types[:, :end]
        if end > length:
            token_types = torch.cat([token_types, token_types.new_zeros(batch, end - length)], dim=1)
        return {"pixel_values": self.pixel_values[inside] if inside else None, "token_types": token_types}


def place_images(model, prompt: torch.Tensor, placements: list[tuple[int, int]], *,
                 seed: int) -> tuple[torch.Tensor, Images]:
    """`prompt` (batch, length) with an image at each (row, position of its begin-of-image token), and those images.
    The images' tokens overwrite the prompt's there."""
    begin, soft, end, count = multimodal.image_tokens(model.config)
    input_ids = prompt.clone()
    token_types = torch.zeros_like(prompt)
    placed = []
    for row, position in sorted(placements):
        assert position + count + 2 <= prompt.shape[1], f"an image at {position} does not fit {prompt.shape[1]} tokens"
        input_ids[row, position] = begin
        input_ids[row, position + 1 : position + 1 + count] = soft
        input_ids[row, position + 1 + count] = end
        token_types[row, position + 1 : position + 1 + count] = 1
        placed.append(Image(row, position + 1, position + count))
    size = multimodal.image_size(model.config)
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.rand(len(placed), 3, size, size, generator=generator) * 2 - 1
    return input_ids, Images(pixel_values.to(model.device, model.dtype), token_types, tuple(placed))


def image_length(model) -> int:
    """Positions one image takes: begin, soft tokens, end."""
    return multimodal.image_tokens(model.config)[3] + 2
