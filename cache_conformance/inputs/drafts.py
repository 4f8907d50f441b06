"""What drafting strategies are fed where drafts must be accepted: prompts the model continues, and assistants that
agree with it (a copy of the model). What the drafts then reached is cache_conformance/grading/coverage.py."""

from __future__ import annotations

import torch


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
