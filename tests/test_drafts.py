"""The drafting inputs (cache_conformance/inputs/drafts.py) on the embedded checkpoint: the prompt whose first
prompt-lookup draft the model rejects, and its refusal to return one when the model continues every block."""

import pytest
import torch
import transformers

from cache_conformance.inputs import drafts
from cache_conformance.oracles.decoding import random_tokens
from cache_conformance.plugin import checkpoint


@pytest.fixture(scope="module")
def model():
    return transformers.AutoModelForCausalLM.from_pretrained(checkpoint.EMBEDDED, dtype=torch.float32).eval()


def token_stream(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return lambda batch, length: random_tokens(model, batch, length, generator)


def test_the_rejected_lookup_prompt_is_a_repeated_pair_the_model_does_not_continue(model):
    prompt = drafts.rejected_lookup_prompt(model, token_stream(model), 7)
    assert prompt.shape == (1, 7) and torch.equal(prompt[0, 2:], prompt[0, :5])  # a block of two, repeated
    with torch.no_grad():
        greedy = int(model(prompt).logits[0, -1].argmax())
    assert greedy != int(prompt[0, -2])  # the lookup's first draft is the token two back


def test_a_model_that_continues_every_block_gets_a_clear_error(model, monkeypatch):
    """Control: with recomputation that always predicts the block's continuation, no prompt qualifies."""
    def agreeing(model, prompt):
        logits = torch.zeros(1, prompt.shape[1], model.config.vocab_size)
        logits[0, -1, int(prompt[0, -2])] = 1.0
        return logits

    monkeypatch.setattr(drafts, "recompute", agreeing)
    with pytest.raises(AssertionError, match="the model continues every one as prompt lookup would"):
        drafts.rejected_lookup_prompt(model, token_stream(model), 7)
