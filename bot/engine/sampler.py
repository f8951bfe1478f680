"""Choosing each row's next token, with each row's own settings, in one pass over the batch.

The order and meaning follow transformers' `generate`: repetition penalty over the prompt and
what was generated, end-of-text forbidden before `min_new_tokens`, then for sampled rows
temperature, top-k 50 (transformers' default) and top-p;
a row with temperature 0 takes the most likely token.

A row whose logits are not finite (NaN or infinite: a broken adapter, an overflow) gets
NO_TOKEN instead of a token, and only that row: its neighbours in the batch, of any server,
are sampled as if it were not there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TOP_K = 50
NO_TOKEN = -1  # the "token" of a row whose logits were not finite


@dataclass(frozen=True)
class Sampling:
    """Generation settings of one request."""

    max_new_tokens: int
    min_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float


def next_tokens(logits: torch.Tensor, history: torch.Tensor, samplings: list[Sampling],
                generated: list[int], eos_token_id: int) -> torch.Tensor:
    """The next token of each row, NO_TOKEN for a row whose logits are not finite. `logits`
    [rows, vocab] (any float dtype); `history` [rows, length] holds each row's prompt and new
    tokens, left-filled with repeats of its own tokens (a repeat changes nothing); `generated`
    counts each row's new tokens so far. Only the history's tokens and the top k are touched:
    a step stays cheap next to the forward pass."""
    logits = logits.float()
    device = logits.device
    broken = _not_finite_rows(logits)
    if broken.any():  # harmless stand-ins, so the other rows are sampled as usual
        logits = logits.masked_fill(broken[:, None], 0.0)
    penalty = [s.repetition_penalty for s in samplings]
    if any(p != 1.0 for p in penalty):
        penalty = torch.tensor(penalty, device=device)[:, None]
        scores = logits.gather(1, history)
        logits.scatter_(1, history, torch.where(scores < 0, scores * penalty, scores / penalty))
    too_early = [n < s.min_new_tokens for s, n in zip(samplings, generated, strict=True)]
    if any(too_early):
        logits[torch.tensor(too_early, device=device), eos_token_id] = -float("inf")
    sampled = [i for i, s in enumerate(samplings) if s.temperature > 0]
    chosen = (logits.argmax(dim=-1) if len(sampled) < len(samplings)
              else torch.empty(len(samplings), dtype=torch.long, device=device))
    if sampled:
        rows = torch.tensor(sampled, device=device)
        temperature = torch.tensor([samplings[i].temperature for i in sampled],
                                   device=device)[:, None]
        top_p = torch.tensor([samplings[i].top_p for i in sampled], device=device)[:, None]
        # The top k of logits / t are the top k of the logits: divide only those.
        candidates = logits if len(sampled) == len(samplings) else logits[rows]
        values, indices = candidates.topk(min(TOP_K, logits.shape[-1]))
        probs = (values / temperature).softmax(dim=-1)
        unusable = ~torch.isfinite(probs).all(dim=-1)  # a temperature that overflowed
        if unusable.any():
            broken[rows[unusable]] = True
            probs[unusable] = torch.eye(1, probs.shape[-1], device=device)
        # Keep the most likely tokens until their mass reaches top_p (the first always stays).
        beyond = (probs.cumsum(dim=-1) - probs) >= top_p
        beyond[:, 0] = False
        probs = probs.masked_fill(beyond, 0.0)
        pick = torch.multinomial(probs, 1)
        chosen[rows] = indices.gather(-1, pick).squeeze(-1)
    return chosen.masked_fill(broken, NO_TOKEN)


def _not_finite_rows(logits: torch.Tensor) -> torch.Tensor:
    """[rows] True where a row of `logits` holds NaN or an infinity. A row's sum is finite when
    all its values are (a sum can also overflow: those rows are checked value by value), and
    summing is ~40x cheaper than testing each value of a 50,257-word row."""
    broken = ~torch.isfinite(logits.sum(dim=-1))
    if broken.any():
        broken[broken.clone()] = ~torch.isfinite(logits[broken]).all(dim=-1)
    return broken
