"""Training objectives over the masked, served format: SFT, DPO on pairs, KTO on labels.

Each objective gives what one micro-batch adds to its batch's loss (`Objective`), so the
fit's gradient accumulation stays exact. The reference model of the preference terms is the
same model with its LoRA adapter disabled (peft `disable_adapter()`), i.e. the base model;
reference passes run without dropout and without gradients, and their log-probs are cached
per sequence (one objective instance serves one base model).

Formulas, as TRL defines them (trl/trainer/dpo_trainer.py `dpo_loss` with loss_type
"sigmoid", no label smoothing; trl/trainer/kto_trainer.py `kto_loss`, loss_type "kto"), with
log-probs SUMMED over the reply tokens:
- DPO: logits = (pi(chosen) - pi(rejected)) - (ref(chosen) - ref(rejected));
  loss = -logsigmoid(beta * logits), averaged over the batch's pairs.
- KTO: z0 = mean over the batch's labels of (pi - ref) log-probs of MISMATCHED sequences
  (each label's prompt with the previous label's reply, TRL's rotation by one), clamped at 0
  and detached; desirable: 1 - sigmoid(beta * ((pi - ref) - z0)), undesirable:
  1 - sigmoid(beta * (z0 - (pi - ref))), times desirable/undesirable weights, averaged over
  the batch's labels (TRL's mean over the concatenated weighted losses). A kind weighted 0 is
  left out of the batches altogether (`uses`), so it counts neither in the mean nor in z0;
  z0 is estimated once per batch (TRL: per batch and device).
Like TRL's default (disable_dropout=True) the policy passes of the preference terms run with
dropout off, so the policy/reference log-ratio is exactly 0 before training.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from trainer.dataset import IGNORE_INDEX, LABEL_KINDS, TARGET_KINDS, Example
from trainer.evaluate import collate, eval_mode, label_logits, summed_loss

Sequence = tuple[list[int], list[int]]  # (input ids, labels with IGNORE_INDEX over the prompt)


class Objective(Protocol):
    """A training loss over examples; the fit steps once per batch of micro-batches."""

    name: str

    def uses(self, example: Example) -> bool:
        """Whether the loss learns from `example` (the fit batches only those)."""
        ...

    def micro_loss(self, model, micro: list[Example], batch: list[Example], *, pad_id: int,
                   device: str) -> torch.Tensor:
        """The share of `micro` (a slice of `batch`) in the batch's loss: the shares of all
        micro-batches add up to it. May be zero-valued (no gradient) for examples it skips."""
        ...


class SupervisedObjective:
    """SFT: mean cross-entropy per target token over the batch's target examples."""

    name = "sft"

    def uses(self, example: Example) -> bool:
        return example.kind in TARGET_KINDS

    def micro_loss(self, model, micro: list[Example], batch: list[Example], *, pad_id: int,
                   device: str) -> torch.Tensor:
        targets = [e for e in micro if e.kind in TARGET_KINDS]
        batch_tokens = sum(e.target_tokens for e in batch if e.kind in TARGET_KINDS)
        if not targets or not batch_tokens:
            return torch.zeros((), device=device)
        loss, _ = summed_loss(model, collate(targets, pad_id, device))
        return loss / batch_tokens


def _tensors(sequences: list[Sequence], pad_id: int, device: str):
    width = max(len(ids) for ids, _ in sequences)
    ids = [list(i) + [pad_id] * (width - len(i)) for i, _ in sequences]
    mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in sequences]
    labels = [list(lab) + [IGNORE_INDEX] * (width - len(lab)) for _, lab in sequences]
    return (torch.tensor(ids, device=device), torch.tensor(mask, device=device),
            torch.tensor(labels, device=device))


def sequence_logps(model, sequences: list[Sequence], *, pad_id: int,
                   device: str) -> torch.Tensor:
    """Per sequence, the SUM of the log-probs of its labelled tokens (gradients as the caller's
    mode allows)."""
    if not sequences:
        return torch.zeros(0, device=device)
    ids, mask, labels = _tensors(sequences, pad_id, device)
    logits, targets, rows = label_logits(model, ids, mask, labels)
    token_logps = logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, -1)
    return token_logps.new_zeros(len(sequences)).index_add(0, rows, token_logps)


def reference_logps(model, sequences: list[Sequence], *, pad_id: int,
                    device: str) -> torch.Tensor:
    """`sequence_logps` of the reference: the same model with its LoRA adapter disabled (a
    model without adapters is its own reference); no dropout, no gradients."""
    disabled = model.disable_adapter() if hasattr(model, "disable_adapter") else \
        contextlib.nullcontext()
    with torch.no_grad(), eval_mode(model), disabled:
        return sequence_logps(model, sequences, pad_id=pad_id, device=device)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """Per pair, TRL's sigmoid DPO loss."""
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    return -F.logsigmoid(beta * logits)


def kto_losses(policy: torch.Tensor, reference: torch.Tensor, desirable: torch.Tensor,
               z0: torch.Tensor | float, beta: float, desirable_weight: float,
               undesirable_weight: float) -> torch.Tensor:
    """Per label, TRL's weighted KTO loss; `desirable` is a bool tensor, z0 the (clamped,
    detached) reference point."""
    ratio = policy - reference
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio - z0)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - ratio)))
    return torch.where(desirable, good, bad)


def kto_reference_point(policy_mismatched: torch.Tensor,
                        reference_mismatched: torch.Tensor) -> torch.Tensor:
    """z0: the batch's KL estimate, clamped at 0 and detached (TRL)."""
    return (policy_mismatched - reference_mismatched).mean().detach().clamp(min=0)


def mismatched(examples: list[Example]) -> list[Sequence]:
    """Each example's prompt with the previous example's reply (TRL rotates by one)."""
    out = []
    for index, example in enumerate(examples):
        other = examples[index - 1]
        cut = _prompt_length(example)
        other_cut = _prompt_length(other)
        reply = other.input_ids[other_cut:]
        out.append((example.input_ids[:cut] + reply, [IGNORE_INDEX] * cut + reply))
    return out


def _prompt_length(example: Example) -> int:
    return next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX),
                len(example.labels))


def _sft_share(model, micro: list[Example], batch: list[Example], pad_id: int,
               device: str) -> torch.Tensor:
    """Summed cross-entropy of the micro-batch's targets over the batch's target tokens."""
    micro_targets = [e for e in micro if e.kind in TARGET_KINDS]
    batch_tokens = sum(e.target_tokens for e in batch if e.kind in TARGET_KINDS)
    if not micro_targets or not batch_tokens:
        return torch.zeros((), device=device)
    logps = sequence_logps(model, [(e.input_ids, e.labels) for e in micro_targets],
                           pad_id=pad_id, device=device)
    return -logps.sum() / batch_tokens


@dataclass
class PreferenceObjective:
    """SFT on targets + dpo_weight x DPO on pairs + kto_weight x KTO on labels.

    With both weights 0 it is plain SFT (SupervisedObjective's loss)."""

    dpo_weight: float = 0.5
    kto_weight: float = 0.5
    beta: float = 1.0
    desirable_weight: float = 0.0  # a 👍 reply is an SFT target already
    undesirable_weight: float = 1.0
    sft_weight: float = 1.0

    def __post_init__(self):
        # What the report calls it: the terms that take part, e.g. "sft+dpo+kto".
        terms = [("sft", self.sft_weight), ("dpo", self.dpo_weight), ("kto", self.kto_weight)]
        self.name = "+".join(term for term, weight in terms if weight) or "none"
        self._reference: dict[tuple, float] = {}
        self._z0: tuple[list[Example], torch.Tensor] | None = None

    def uses(self, example: Example) -> bool:
        if example.kind in TARGET_KINDS:
            return bool(self.sft_weight)
        if example.kind == "pair":
            return bool(self.dpo_weight)
        weight = self.desirable_weight if example.kind == "desirable" else \
            self.undesirable_weight
        return bool(self.kto_weight and weight)

    def reference(self, model, sequences: list[Sequence], *, pad_id: int,
                  device: str) -> torch.Tensor:
        """Reference log-probs, computed once per sequence."""
        keys = [(tuple(ids), tuple(labels)) for ids, labels in sequences]
        missing = [s for s, k in zip(sequences, keys, strict=True) if k not in self._reference]
        if missing:
            values = reference_logps(model, missing, pad_id=pad_id, device=device)
            for sequence, value in zip(missing, values.tolist(), strict=True):
                self._reference[(tuple(sequence[0]), tuple(sequence[1]))] = value
        return torch.tensor([self._reference[k] for k in keys], device=device)

    def micro_loss(self, model, micro: list[Example], batch: list[Example], *, pad_id: int,
                   device: str) -> torch.Tensor:
        loss = torch.zeros((), device=device)
        if self.sft_weight:
            loss = loss + self.sft_weight * _sft_share(model, micro, batch, pad_id, device)
        if self.dpo_weight:
            loss = loss + self.dpo_weight * self._dpo_share(model, micro, batch, pad_id, device)
        if self.kto_weight:
            loss = loss + self.kto_weight * self._kto_share(model, micro, batch, pad_id, device)
        return loss

    def _dpo_share(self, model, micro, batch, pad_id, device) -> torch.Tensor:
        micro_pairs = [e for e in micro if e.kind == "pair"]
        count = sum(1 for e in batch if e.kind == "pair")
        if not micro_pairs:
            return torch.zeros((), device=device)
        chosen = [(e.input_ids, e.labels) for e in micro_pairs]
        rejected = [(list(e.rejected_ids), list(e.rejected_labels)) for e in micro_pairs]
        with eval_mode(model):
            policy = sequence_logps(model, chosen + rejected, pad_id=pad_id, device=device)
        ref = self.reference(model, chosen + rejected, pad_id=pad_id, device=device)
        n = len(micro_pairs)
        losses = dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], self.beta)
        weights = torch.tensor([e.weight for e in micro_pairs], device=device)
        return (weights * losses).sum() / count

    def batch_z0(self, model, batch: list[Example], pad_id: int, device: str) -> torch.Tensor:
        """The KTO reference point of a batch, computed once per batch."""
        # Kept with the batch itself: an id() of a freed list could be reused by the next one.
        if self._z0 is not None and self._z0[0] is batch:
            return self._z0[1]
        batch_labels = [e for e in batch if e.kind in LABEL_KINDS]
        sequences = mismatched(batch_labels)
        with torch.no_grad(), eval_mode(model):
            policy = sequence_logps(model, sequences, pad_id=pad_id, device=device)
        ref = reference_logps(model, sequences, pad_id=pad_id, device=device)
        z0 = kto_reference_point(policy, ref)
        self._z0 = (batch, z0)
        return z0

    def _kto_share(self, model, micro, batch, pad_id, device) -> torch.Tensor:
        micro_labels = [e for e in micro if e.kind in LABEL_KINDS]
        # A label weighted 0 adds nothing (the fit leaves such labels out of its batches).
        active = [e for e in micro_labels
                  if (self.desirable_weight if e.kind == "desirable" else self.undesirable_weight)]
        count = sum(1 for e in batch if e.kind in LABEL_KINDS)
        if not active:
            return torch.zeros((), device=device)
        z0 = self.batch_z0(model, batch, pad_id, device)
        sequences = [(e.input_ids, e.labels) for e in active]
        with eval_mode(model):
            policy = sequence_logps(model, sequences, pad_id=pad_id, device=device)
        ref = self.reference(model, sequences, pad_id=pad_id, device=device)
        desirable = torch.tensor([e.kind == "desirable" for e in active], device=device)
        weights = torch.tensor([e.weight for e in active], device=device)
        losses = kto_losses(policy, ref, desirable, z0, self.beta, self.desirable_weight,
                            self.undesirable_weight)
        return (weights * losses).sum() / count


@dataclass(frozen=True)
class PreferenceConfig:
    """The preference epochs' loss as the settings ask for it (DPO_WEIGHT=KTO_WEIGHT=0: SFT
    only): DPO_WEIGHT, KTO_WEIGHT, PREFERENCE_BETA, KTO_DESIRABLE_WEIGHT."""

    dpo_weight: float = 0.5
    kto_weight: float = 0.5
    beta: float = 1.0
    desirable_weight: float = 0.0

    @classmethod
    def from_settings(cls, settings) -> PreferenceConfig:
        return cls(dpo_weight=settings.dpo_weight, kto_weight=settings.kto_weight,
                   beta=settings.preference_beta, desirable_weight=settings.kto_desirable_weight)

    def objective(self) -> PreferenceObjective:
        """A fresh objective: its cache of reference log-probs serves one base model."""
        return PreferenceObjective(dpo_weight=self.dpo_weight, kto_weight=self.kto_weight,
                                   beta=self.beta, desirable_weight=self.desirable_weight)
