"""Image prompts: where images sit, and what each call over a span of positions passes to the model."""

import pytest
import torch

from cache_conformance.adapter import multimodal
from cache_conformance.inputs import images
from cache_conformance.plugin import checkpoint


class TinyMultimodal:
    """What place_images reads of a model: its config, device and dtype (the embedded multimodal config)."""

    def __init__(self):
        import transformers

        self.config = transformers.AutoConfig.from_pretrained(checkpoint.MULTIMODAL_EMBEDDED)
        self.device, self.dtype = torch.device("cpu"), torch.float32


@pytest.fixture(scope="module")
def model():
    return TinyMultimodal()


def test_an_image_is_begin_soft_tokens_end(model):
    begin, soft, end, count = multimodal.image_tokens(model.config)
    prompt = torch.full((1, 12), 7)
    input_ids, placed = images.place_images(model, prompt, [(0, 3)], seed=0)
    assert input_ids[0].tolist() == [7, 7, 7, begin, *[soft] * count, end, 7, 7, 7]
    assert placed.token_types[0].tolist() == [0, 0, 0, 0, *[1] * count, 0, 0, 0, 0]
    assert placed.placed == (images.Image(0, 4, 3 + count),)
    assert placed.pixel_values.shape == (1, 3, multimodal.image_size(model.config), multimodal.image_size(model.config))
    assert -1 <= placed.pixel_values.min() and placed.pixel_values.max() <= 1


def test_pixel_values_are_reproducible_from_the_seed(model):
    prompt = torch.full((1, 8), 7)
    first = images.place_images(model, prompt, [(0, 0)], seed=5)[1].pixel_values
    assert first.equal(images.place_images(model, prompt, [(0, 0)], seed=5)[1].pixel_values)
    assert not first.equal(images.place_images(model, prompt, [(0, 0)], seed=6)[1].pixel_values)


def test_a_call_gets_the_images_inside_it_and_token_types_from_the_start(model):
    prompt = torch.full((2, 20), 7)
    _, placed = images.place_images(model, prompt, [(0, 12), (0, 1), (1, 4)], seed=0)
    assert [(image.row, image.first) for image in placed.placed] == [(0, 2), (0, 13), (1, 5)]
    first_turn = placed.call_inputs(0, 10)  # row 0's first image and row 1's image
    assert first_turn["pixel_values"].equal(placed.pixel_values[[0, 2]])
    assert first_turn["token_types"].equal(placed.token_types[:, :10])
    second_turn = placed.call_inputs(10, 20)
    assert second_turn["pixel_values"].equal(placed.pixel_values[[1]])
    assert second_turn["token_types"].equal(placed.token_types)
    decode = placed.call_inputs(22, 23)  # past the prompt: decoded text
    assert decode["pixel_values"] is None
    assert decode["token_types"].shape == (2, 23) and decode["token_types"][:, 20:].eq(0).all()


def test_a_call_that_cuts_an_image_is_refused(model):
    _, placed = images.place_images(model, torch.full((1, 12), 7), [(0, 3)], seed=0)
    with pytest.raises(AssertionError, match=r"positions 0\.\.5 cut an image"):
        placed.call_inputs(0, 6)


def test_an_image_that_does_not_fit_is_refused(model):
    with pytest.raises(AssertionError, match="does not fit"):
        images.place_images(model, torch.full((1, 6), 7), [(0, 3)], seed=0)
