"""What drafting strategies are fed: assistants that agree with the model (a copy of it), so that drafts are accepted,
and prompts whose drafts the model rejects where a check needs a rollback. What the drafts then reached is
cache_conformance/grading/coverage.py."""

from __future__ import annotations

import torch

from cache_conformance.oracles.decoding import recompute

BLOCKS_TRIED = 16  # fresh two-token blocks drawn before a prompt whose first lookup draft the model rejects


def agreeing_assistant(model, drafts: int):
    """A copy of `model` as its own assistant: it agrees with every step. Its generation config asks for `drafts`
    drafts every step, without the confidence threshold that stops drafting where a tiny model's probabilities are
    flat (so that several drafts are accepted at once)."""
    assistant = copy_of(model)
    assistant.generation_config.num_assistant_tokens = drafts
    assistant.generation_config.num_assistant_tokens_schedule = "constant"
    assistant.generation_config.assistant_confidence_threshold = 0.0
    return assistant


def copy_of(model):
    """A new model with `model`'s configuration and weights (dtype, device, eval mode): not copy.deepcopy, which
    also copies whatever a release left on the model (a cache generate() kept, holding a torch.Stream that cannot be
    copied)."""
    copied = type(model)(model.config).to(dtype=model.dtype, device=model.device)
    copied.load_state_dict(model.state_dict())
    return copied.eval()


def repeating_prompt(tokens, length: int, period: int) -> torch.Tensor:
    """`length` tokens that repeat a random block of `period`: text prompt lookup finds drafts in."""
    block = tokens(1, period)
    return block.repeat(1, -(-length // period))[:, :length]


def rejected_lookup_prompt(model, tokens, length: int) -> torch.Tensor:
    """`length` tokens repeating a block of two, whose first prompt-lookup draft the model rejects: the lookup offers
    the block's continuation (the token two back), and the model's greedy next token is another. Each try draws a
    fresh block from `tokens`, so the prompt is the same on every run of a test; whether the model agrees with a block
    depends on its weights, so a fixed block would reach the rollback on some checkpoints only."""
    for _ in range(BLOCKS_TRIED):
        prompt = repeating_prompt(tokens, length, period=2)
        with torch.no_grad():
            greedy = int(recompute(model, prompt)[0, -1].argmax())
        if greedy != int(prompt[0, -2]):
            return prompt
    raise AssertionError(f"{BLOCKS_TRIED} two-token blocks repeated to {length} tokens: the model continues every one "
                         "as prompt lookup would, so no draft would be rejected")
