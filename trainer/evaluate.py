"""Losses of a model on examples, without training: the masked validation NLL, an objective's
loss, and the base model with an adapter attached for either.

Examples are right-padded into batches; padding is masked out of attention and loss. On CUDA
the forward passes run under bf16 autocast (fp16 where bf16 is missing), as the fit's do.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import TYPE_CHECKING

import torch

from bot.core.adapter_io import attach_adapter, parse_adapter
from trainer.dataset import IGNORE_INDEX, TARGET_KINDS, Example

if TYPE_CHECKING:
    from trainer.objectives import Objective


def autocast(device: str):
    """Mixed precision on CUDA (bf16, else fp16); nothing elsewhere."""
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def collate(examples: list[Example], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding is masked out of attention and loss."""
    width = max(len(e.input_ids) for e in examples)
    ids, mask, labels = [], [], []
    for e in examples:
        pad = width - len(e.input_ids)
        ids.append(e.input_ids + [pad_id] * pad)
        mask.append([1] * len(e.input_ids) + [0] * pad)
        labels.append(e.labels + [IGNORE_INDEX] * pad)
    return {"input_ids": torch.tensor(ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
            "labels": torch.tensor(labels, device=device)}


def label_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits only where the next token is a label: (logits [n, vocab] in float32, the
    labels they predict [n], the row of each [n]), for [rows, length] inputs and labels.

    The LM head ([hidden] x [hidden, vocab] per position, a fifth of GPT-2-small's work) runs
    only at those n positions, not at every prompt and padding position: the model returns its
    last hidden states (after the final layer norm) with the logits of one position only.
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                logits_to_keep=1)
    targets = labels[:, 1:]  # position t predicts token t+1
    keep = targets != IGNORE_INDEX
    hidden = out.hidden_states[-1][:, :-1][keep]
    logits = model.get_output_embeddings()(hidden).float()
    return logits, targets[keep], keep.nonzero()[:, 0]


def summed_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of the cross-entropy over target tokens, how many target tokens)."""
    logits, targets, _ = label_logits(model, batch["input_ids"], batch["attention_mask"],
                                      batch["labels"])
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    return loss, targets.numel()


@contextlib.contextmanager
def eval_mode(model):
    """No dropout inside; the model's own mode back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


@torch.no_grad()
def evaluate_loss(model, examples: list[Example], *, device: str, micro_batch_size: int,
                  pad_id: int) -> float:
    """Mean cross-entropy per reply token over the targets among `examples` (the masked
    validation loss); NaN when there is no target."""
    return per_token(example_losses(model, examples, device=device,
                                    micro_batch_size=micro_batch_size, pad_id=pad_id))


def per_token(sums: list[tuple[float, int]]) -> float:
    """The mean loss per reply token of `example_losses`' sums; NaN without a token."""
    tokens = sum(count for _, count in sums)
    return sum(total for total, _ in sums) / tokens if tokens else math.nan


@torch.no_grad()
def example_losses(model, examples: list[Example], *, device: str, micro_batch_size: int,
                   pad_id: int) -> list[tuple[float, int]]:
    """(summed cross-entropy, reply tokens) of each target among `examples`, in order."""
    examples = [e for e in examples if e.kind in TARGET_KINDS]
    found = []
    with eval_mode(model):
        for start in range(0, len(examples), micro_batch_size):
            batch = collate(examples[start:start + micro_batch_size], pad_id, device)
            with autocast(device):
                logits, targets, rows = label_logits(model, batch["input_ids"],
                                                     batch["attention_mask"], batch["labels"])
                losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            width = batch["input_ids"].shape[0]
            sums = torch.zeros(width, device=losses.device).index_add_(0, rows, losses.float())
            counts = torch.bincount(rows, minlength=width)
            found += [(float(total), int(count))
                      for total, count in zip(sums.tolist(), counts.tolist(), strict=True)]
    return found


def with_adapter(base_model, blob: bytes | None, device: str):
    """The base model with the adapter `blob` on a copy, in eval mode (None: the base itself,
    untouched). Raises AdapterLoadError for bytes that do not fit."""
    if blob is None:
        return base_model
    return attach_adapter(copy.deepcopy(base_model), parse_adapter(blob),
                          "evaluated").to(device).eval()


def evaluate_adapter(base_model, blob: bytes | None, examples: list[Example], *, device: str,
                     micro_batch_size: int, pad_id: int) -> float:
    """Validation loss of the base model with the adapter `blob` (None: the base alone)."""
    return evaluate_loss(with_adapter(base_model, blob, device), examples, device=device,
                         micro_batch_size=micro_batch_size, pad_id=pad_id)


@torch.no_grad()
def objective_loss(model, objective: Objective, examples: list[Example], *, device: str,
                   micro_batch_size: int, pad_id: int) -> float:
    """The objective's loss over `examples` taken as one batch (no gradients, no dropout)."""
    used = [e for e in examples if objective.uses(e)]
    if not used:
        return math.nan
    total = 0.0
    with eval_mode(model):
        for start in range(0, len(used), micro_batch_size):
            with autocast(device):
                total += float(objective.micro_loss(model, used[start:start + micro_batch_size],
                                                    used, pad_id=pad_id, device=device))
    return total


def validation_loss(model, objective: Objective, examples: list[Example], *, device: str,
                    micro_batch_size: int, pad_id: int) -> float:
    """The NLL per reply token of the validation targets; without targets (a 👎-only data
    set) the objective's own loss on the validation examples."""
    if any(e.kind in TARGET_KINDS for e in examples):
        return evaluate_loss(model, examples, device=device, micro_batch_size=micro_batch_size,
                             pad_id=pad_id)
    return objective_loss(model, objective, examples, device=device,
                          micro_batch_size=micro_batch_size, pad_id=pad_id)
