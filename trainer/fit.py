"""One LoRA fit on GPT-2: a plain torch loop over masked examples, from the base model.

The loss comes from an `Objective` (default: `SupervisedObjective`, the mean cross-entropy over
every reply token of the batch). Batches bigger than `micro_batch_size` accumulate gradients
over micro-batches; the objective says what each micro-batch adds to its batch's loss. On CUDA
the forward passes run under bf16 (fp16 with a grad scaler where bf16 is missing) autocast. The
validation loss is measured after each epoch; the fit stops early after `patience` epochs
without improvement and keeps the adapter of its best epoch (as safetensors bytes, so nothing
is refitted). A NaN or infinite loss ends the fit with FitFailed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from peft import get_peft_model
from tqdm import tqdm

from bot.core.adapter_io import attach_adapter, lora_config, parse_adapter, serialize_adapter
from trainer.dataset import IGNORE_INDEX, TARGET_KINDS, Example

log = logging.getLogger(__name__)

ADAPTER_NAME = "candidate"


class FitFailed(RuntimeError):
    """The fit cannot go on (e.g. the loss became NaN); the message says where."""


class OutOfTime(FitFailed):
    """The deadline came before the fit finished a first epoch: nothing to keep."""


@dataclass(frozen=True)
class FitParams:
    learning_rate: float
    batch_size: int
    max_epochs: int
    patience: int = 1
    seed: int = 0


@dataclass
class FitResult:
    adapter: bytes  # the best epoch's adapter
    best_val_loss: float
    best_epoch: int
    val_losses: list[float]  # one per epoch run
    train_losses: list[float]  # one per optimizer step
    steps_per_epoch: int
    tokens_seen: int  # every input token of every forward pass (padding excluded)
    seconds: float
    stopped_early: bool = False
    notes: list[str] = field(default_factory=list)


def load_base_model(model_name: str, device: str):
    """The GPT-2 weights of `model_name` (hub name or directory) on `device`, in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_name)
    return model.to(device).eval()


def load_tokenizer(model_name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_name)


def _autocast(device: str):
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


def summed_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of the cross-entropy over target tokens, how many target tokens)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Position t predicts token t+1.
    logits = logits[:, :-1, :].float()
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                             labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                             reduction="sum")
    return loss, int((labels != IGNORE_INDEX).sum())


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


@torch.no_grad()
def evaluate_loss(model, examples: list[Example], *, device: str, micro_batch_size: int,
                  pad_id: int) -> float:
    """Mean cross-entropy per reply token over the targets among `examples` (the masked
    validation loss); NaN when there is no target."""
    examples = [e for e in examples if e.kind in TARGET_KINDS]
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), micro_batch_size):
        batch = collate(examples[start:start + micro_batch_size], pad_id, device)
        with _autocast(device):
            loss, count = summed_loss(model, batch)
        total += float(loss)
        tokens += count
    if was_training:
        model.train()
    return total / tokens if tokens else math.nan


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
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(used), micro_batch_size):
        with _autocast(device):
            total += float(objective.micro_loss(model, used[start:start + micro_batch_size],
                                                used, pad_id=pad_id, device=device))
    if was_training:
        model.train()
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


def _check_finite(value: float, where: str) -> None:
    if not math.isfinite(value):
        raise FitFailed(f"loss became {value} at {where}")


def fit_lora(base_model, train: list[Example], validation: list[Example], params: FitParams,
             settings, *, device: str, pad_id: int, label: str = "fit",
             on_epoch: Callable[[int, float], None] | None = None,
             progress: bool = True, objective: Objective | None = None,
             init_adapter: bytes | None = None, keep_last: bool = False,
             deadline: float | None = None, measure_cut: bool = False) -> FitResult:
    """Fit a LoRA adapter on a copy of `base_model` (which is left untouched): a fresh one, or
    one that starts from the adapter bytes `init_adapter`.

    `objective` defaults to SFT. `on_epoch(epoch, val_loss)` is called after each epoch and may
    raise (a pruner does). The result is the best epoch's adapter by validation loss, or with
    `keep_last` the adapter as it ends. `deadline` (a `time.monotonic()` value) is checked
    before every optimizer step (one that would end past it, judged by the last step's time,
    does not start) and every validation: past it the fit stops and returns what it
    has: the best epoch so far; with `measure_cut` (or `keep_last`) an epoch cut part-way is
    validated too and counts as an epoch (with `keep_last` it is the result). It raises
    OutOfTime when it has nothing to return.
    """
    objective = objective or SupervisedObjective()
    train = [e for e in train if objective.uses(e)]
    if not train or not validation:
        raise FitFailed("a fit needs training and validation examples")
    started = time.perf_counter()
    torch.manual_seed(params.seed)
    order_rng = random.Random(params.seed)
    model = _trainable_model(base_model, settings, init_adapter, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=params.learning_rate, weight_decay=0.0)
    use_scaler = device.startswith("cuda") and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    micro = settings.micro_batch_size
    steps_per_epoch = math.ceil(len(train) / params.batch_size)

    val_losses: list[float] = []
    train_losses: list[float] = []
    best_loss, best_epoch, best_blob = math.inf, 0, b""
    tokens_seen, stale, stopped_early = 0, 0, False
    show = progress and sys.stderr.isatty()
    notes: list[str] = []

    last_step = 0.0  # seconds the last optimizer step took

    def out_of_time(where: str) -> bool:
        # A step that would end past the deadline does not start (the first one always may).
        if deadline is None or time.monotonic() + last_step < deadline:
            return False
        notes.append(f"{label} stopped by the time limit {where}")
        log.info(notes[-1])
        return True

    cut = False
    for epoch in range(1, params.max_epochs + 1):
        order = train[:]
        order_rng.shuffle(order)
        bar = tqdm(range(steps_per_epoch), desc=f"{label} epoch {epoch}/{params.max_epochs}",
                   disable=not show, leave=False, file=sys.stderr)
        epoch_steps = 0
        for step in bar:
            if out_of_time(f"before step {step + 1} of epoch {epoch}"):
                cut = True
                break
            epoch_steps += 1
            step_started = time.monotonic()
            batch_examples = order[step * params.batch_size:(step + 1) * params.batch_size]
            step_loss = 0.0
            optimizer.zero_grad(set_to_none=True)
            # Accumulate: each micro-batch adds its share of the batch's loss.
            for start in range(0, len(batch_examples), micro):
                micro_examples = batch_examples[start:start + micro]
                tokens_seen += sum(len(e.input_ids) for e in micro_examples)
                with _autocast(device):
                    loss = objective.micro_loss(model, micro_examples, batch_examples,
                                                pad_id=pad_id, device=device)
                _check_finite(loss.item(), f"epoch {epoch} step {step + 1}")
                if loss.requires_grad:
                    (scaler.scale(loss) if scaler else loss).backward()
                step_loss += loss.item()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            train_losses.append(step_loss)
            last_step = time.monotonic() - step_started
            bar.set_postfix(loss=f"{step_loss:.3f}")
        bar.close()
        last_step = 0.0  # the validation itself is not a step
        if cut or out_of_time(f"before the validation of epoch {epoch}"):
            cut = True
            break

        val_loss = validation_loss(model, objective, validation, device=device,
                                   micro_batch_size=micro, pad_id=pad_id)
        _check_finite(val_loss, f"validation after epoch {epoch}")
        val_losses.append(val_loss)
        epoch_train = sum(train_losses[-steps_per_epoch:]) / steps_per_epoch
        log.info("%s epoch %d/%d: train loss %.4f, val loss %.4f (lr %.2e, batch %d)",
                 label, epoch, params.max_epochs, epoch_train, val_loss, params.learning_rate,
                 params.batch_size)
        if val_loss < best_loss or keep_last:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_blob = serialize_adapter(model, ADAPTER_NAME, base_model=settings.model_name)
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(epoch, val_loss)
        if stale >= params.patience and epoch < params.max_epochs:
            stopped_early = True
            log.info("%s stops early: no better validation loss for %d epoch(s)", label, stale)
            break

    if cut and epoch_steps and (measure_cut or keep_last):
        # The weights as the deadline found them, measured: a short trial still says something.
        val_loss = validation_loss(model, objective, validation, device=device,
                                   micro_batch_size=micro, pad_id=pad_id)
        _check_finite(val_loss, f"validation of the cut epoch {epoch}")
        val_losses.append(val_loss)
        notes.append(f"{label} epoch {epoch} was cut after {epoch_steps} of {steps_per_epoch} "
                     f"steps (val loss {val_loss:.4f})")
        if val_loss < best_loss or keep_last:
            best_loss, best_epoch = val_loss, epoch
            best_blob = serialize_adapter(model, ADAPTER_NAME, base_model=settings.model_name)
    if not best_blob:
        raise OutOfTime(notes[-1] if notes else f"{label} ran out of time")
    return FitResult(adapter=best_blob, best_val_loss=best_loss, best_epoch=best_epoch,
                     val_losses=val_losses, train_losses=train_losses,
                     steps_per_epoch=steps_per_epoch, tokens_seen=tokens_seen,
                     seconds=time.perf_counter() - started,
                     stopped_early=stopped_early or cut, notes=notes)


def _trainable_model(base_model, settings, init_adapter: bytes | None, device: str):
    """A copy of the base model with a trainable LoRA adapter: fresh, or from adapter bytes."""
    if init_adapter is None:
        model = get_peft_model(copy.deepcopy(base_model), lora_config(settings),
                               adapter_name=ADAPTER_NAME)
    else:
        model = attach_adapter(copy.deepcopy(base_model), parse_adapter(init_adapter),
                               ADAPTER_NAME)
        model.set_adapter(ADAPTER_NAME)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(f".{ADAPTER_NAME}." in name and "lora_" in name)
    model.to(device)
    model.train()
    return model
