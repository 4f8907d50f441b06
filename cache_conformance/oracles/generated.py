"""Generation strategies against recomputation without cache: each beam hypothesis step by step, and continuous
batching's requests token by token."""

from __future__ import annotations

import torch

from cache_conformance.grading import evidence
from cache_conformance.oracles.compare import Comparison
from cache_conformance.oracles.decoding import recompute

# ---- beam search ----

def beam_paths_against_recomputation(model, output, beam_indices, prompt_mask, compare: Comparison, *,
                                     beams: int, where: str) -> None:
    """Each returned hypothesis' logits at each step (the row of that step's logits its token was chosen from)
    against recomputation of the hypothesis without cache: a reorder that hands a beam another beam's cache shows
    here even when the search still picks plausible tokens."""
    sequences = output.sequences
    prompt_length = prompt_mask.shape[1]
    batch_rows = torch.arange(sequences.shape[0]) // (sequences.shape[0] // prompt_mask.shape[0])
    mask = torch.cat([prompt_mask[batch_rows], torch.ones_like(sequences[:, prompt_length:])], dim=1)
    reference = recompute(model, sequences, mask)
    for hypothesis in range(sequences.shape[0]):
        steps = [step for step in range(beam_indices.shape[1]) if int(beam_indices[hypothesis, step]) >= 0]
        if not steps:
            continue
        actual = torch.stack([output.logits[step][int(beam_indices[hypothesis, step])] for step in steps])
        positions = [prompt_length - 1 + step for step in steps]
        compare.logits_close(actual[None], reference[hypothesis, positions][None],
                             where=f"{where}: hypothesis {hypothesis} (batch row {int(batch_rows[hypothesis])}, "
                                   f"{beams} beams)", positions=positions)


def sequences_equal(actual: torch.Tensor, expected: torch.Tensor, *, where: str) -> None:
    """Beam search's sequences are the same tokens, hypothesis by hypothesis."""
    assert actual.shape == expected.shape, f"{where}: sequences of shape {tuple(actual.shape)}, without cache " \
                                           f"{tuple(expected.shape)}"
    differ = torch.nonzero(actual != expected)
    if len(differ):
        hypothesis, position = (int(i) for i in differ[0])
        raise evidence.failure(
            f"{where}: hypothesis {hypothesis} differs from beam search without cache at position {position}: "
            f"token {int(actual[hypothesis, position])}, without cache {int(expected[hypothesis, position])} "
            f"({len(differ)} tokens differ)",
            "beam", where=where, hypothesis=hypothesis, position=position,
        )


def finished_early(sequences: torch.Tensor, eos_token_id: int, prompt_length: int) -> int:
    """How many hypotheses ended with end-of-sequence before the last step (positive control of early stopping)."""
    generated = sequences[:, prompt_length:-1]
    return int((generated == eos_token_id).any(dim=1).sum())


# ---- continuous batching ----

def greedy_choices_against_recomputation(model, prompt: list[int], generated: list[int], compare: Comparison, *,
                                         max_new_tokens: int, eos_token_id: int, where: str) -> None:
    """A request's generated tokens are greedy decoding's: each is the argmax of recomputation without cache over
    the request's own sequence so far (within the tolerance where the dtype allows near-ties), and the request
    stops only at end-of-sequence or after `max_new_tokens`."""
    ended = generated and generated[-1] == eos_token_id
    assert len(generated) == max_new_tokens or (ended and len(generated) < max_new_tokens), (
        f"{where}: {len(generated)} tokens generated, asked for {max_new_tokens} (last token {generated[-1:]}, "
        f"end-of-sequence is {eos_token_id})"
    )
    sequence = torch.tensor([prompt + generated], device=model.device)
    reference = recompute(model, sequence[:, :-1])[:, len(prompt) - 1 :]
    positions = list(range(len(prompt) - 1, sequence.shape[1] - 1))
    compare.chosen_tokens_are_greedy(sequence[:, len(prompt):], reference, where=where, positions=positions)

