"""One LoRA fit on GPT-2: a plain torch loop over masked examples, from the base model.

The loss comes from an `Objective` (default: `SupervisedObjective`, the mean cross-entropy over
every reply token of the batch). Batches bigger than the micro-batch size accumulate gradients
over micro-batches; the objective says what each micro-batch adds to its batch's loss. On CUDA
the forward passes run under bf16 (fp16 with a grad scaler where bf16 is missing) autocast. The
validation loss is measured after each epoch; the fit stops early after `patience` epochs
without improvement. Which adapter it returns (as safetensors bytes, so nothing is refitted)
is the caller's `Keep`: the best epoch's, or the last. The best epoch is the lowest-loss one,
or, given a judge (`FitRun.judge`: the exam's replies), the best-judged one. A deadline is
checked before every optimizer step and every validation; a NaN or infinite loss ends the fit
with FitFailed.
"""

from __future__ import annotations

import copy
import enum
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from peft import get_peft_model
from tqdm import tqdm

from bot.core.adapter_io import attach_adapter, lora_config, parse_adapter, serialize_adapter
from trainer.dataset import Example
from trainer.evaluate import autocast, validation_loss
from trainer.objectives import Objective, SupervisedObjective

log = logging.getLogger(__name__)

ADAPTER_NAME = "candidate"


class FitFailed(RuntimeError):
    """The fit cannot go on (e.g. the loss became NaN); the message says where."""


class OutOfTime(FitFailed):
    """The deadline came before the fit finished a first epoch: nothing to keep."""


@dataclass(frozen=True)
class FitConfig:
    """What a fit needs of the settings: where it runs, its micro-batch, the LoRA shape, and the
    base model's name (written into every adapter it makes)."""

    model_name: str
    device: str = "cpu"  # resolved: cpu, cuda, cuda:N or mps
    micro_batch_size: int = 8  # most examples in one forward pass
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("c_attn", "c_proj")

    @property
    def lora_target_modules(self) -> list[str]:
        """The name `bot.core.adapter_io.lora_config` reads, as on the settings."""
        return list(self.lora_targets)

    @classmethod
    def from_settings(cls, settings) -> FitConfig:
        return cls(model_name=settings.model_name, device=settings.resolved_device(),
                   micro_batch_size=settings.micro_batch_size, lora_rank=settings.lora_rank,
                   lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                   lora_targets=tuple(settings.lora_target_modules))


@dataclass(frozen=True)
class FitParams:
    learning_rate: float
    batch_size: int
    max_epochs: int
    patience: int = 1
    seed: int = 0


class Keep(enum.Enum):
    """Which adapter a fit returns, and whether an epoch the deadline cut part-way counts."""

    BEST_WHOLE_EPOCH = "best whole epoch"  # a cut epoch is not measured
    # A cut epoch is measured and competes: a search trial cut short still says something.
    BEST_EPOCH = "best epoch"
    LAST_EPOCH = "last epoch"  # the adapter as it ends, a cut epoch included


@dataclass(frozen=True)
class FitRun:
    """How one fit runs, apart from what it learns."""

    label: str = "fit"  # its name in log lines and notes
    # A time.monotonic() value: past it no optimizer step starts and no epoch is validated.
    deadline: float | None = None
    # Hears each epoch's validation loss; returns True to end the fit there with what it has
    # kept (a pruner does).
    on_epoch: Callable[[int, float], bool] | None = None
    # Scores each epoch's adapter bytes, higher is better (`trainer.finalists.ExamJudge`): the
    # best epoch is then the best-scored one, and an epoch improves on the ones before it
    # with a higher score or a lower validation loss.
    judge: Callable[[bytes], float] | None = None
    progress: bool = True  # a progress bar when stderr is a terminal


@dataclass
class FitResult:
    adapter: bytes  # the kept epoch's adapter
    kept_val_loss: float  # the kept epoch's (with a judge, not always the lowest)
    best_epoch: int  # the kept one
    val_losses: list[float]  # one per epoch run
    train_losses: list[float]  # one per optimizer step
    steps_per_epoch: int
    tokens_seen: int  # every input token of every forward pass (padding excluded)
    seconds: float
    stopped_early: bool = False
    notes: list[str] = field(default_factory=list)
    judged: list[float] = field(default_factory=list)  # the judge's score of each epoch
    kept_score: float | None = None  # the kept epoch's, with a judge


def load_base_model(model_name: str, device: str):
    """The GPT-2 weights of `model_name` (hub name or directory) on `device`, in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_name)
    return model.to(device).eval()


def load_tokenizer(model_name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_name)


def fit_lora(base_model, train: list[Example], validation: list[Example], params: FitParams,
             config: FitConfig, *, pad_id: int, objective: Objective | None = None,
             init_adapter: bytes | None = None, keep: Keep = Keep.BEST_WHOLE_EPOCH,
             run: FitRun = FitRun()) -> FitResult:
    """Fit a LoRA adapter on a copy of `base_model` (which is left untouched): a fresh one, or
    one that starts from the adapter bytes `init_adapter`; `objective` defaults to SFT.

    The result holds the adapter `keep` names. Past `run.deadline` the fit stops and returns
    what it has; it raises OutOfTime when that is nothing.
    """
    started = time.perf_counter()
    objective = objective or SupervisedObjective()
    train = [e for e in train if objective.uses(e)]
    if not train or not validation:
        raise FitFailed("a fit needs training and validation examples")
    fit = _LoraFit(base_model, train, validation, params, config, pad_id=pad_id,
                   objective=objective, init_adapter=init_adapter, run=run)
    stopped_early = fit.run_epochs(keep)
    if not fit.kept_adapter:
        raise OutOfTime(fit.notes[-1] if fit.notes else f"{run.label} ran out of time")
    return FitResult(adapter=fit.kept_adapter, kept_val_loss=fit.kept_loss,
                     best_epoch=fit.kept_epoch, val_losses=fit.val_losses,
                     train_losses=fit.train_losses, steps_per_epoch=fit.steps_per_epoch,
                     tokens_seen=fit.tokens_seen, seconds=time.perf_counter() - started,
                     stopped_early=stopped_early, notes=fit.notes, judged=fit.judged,
                     kept_score=fit.kept_score if fit.judged else None)


class _LoraFit:
    """One fit under way: the trainable copy, its optimizer, the curves so far and the adapter
    kept so far."""

    def __init__(self, base_model, train: list[Example], validation: list[Example],
                 params: FitParams, config: FitConfig, *, pad_id: int, objective: Objective,
                 init_adapter: bytes | None, run: FitRun):
        self.train, self.validation, self.params, self.config = train, validation, params, config
        self.pad_id, self.objective, self.run = pad_id, objective, run
        torch.manual_seed(params.seed)
        self.order_rng = random.Random(params.seed)
        self.model = _trainable_model(base_model, config, init_adapter)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters()
                                            if p.requires_grad],
                                           lr=params.learning_rate, weight_decay=0.0)
        use_scaler = config.device.startswith("cuda") and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.steps_per_epoch = math.ceil(len(train) / params.batch_size)
        self.val_losses: list[float] = []
        self.train_losses: list[float] = []
        self.notes: list[str] = []
        self.tokens_seen = 0
        self.kept_loss, self.kept_epoch, self.kept_adapter = math.inf, 0, b""
        self.kept_score = -math.inf
        self.judged: list[float] = []
        self.last_step = 0.0  # seconds the last optimizer step took

    def run_epochs(self, keep: Keep) -> bool:
        """Epochs until the last, early stopping or the deadline; True when it stopped early."""
        params, stale = self.params, 0
        for epoch in range(1, params.max_epochs + 1):
            steps = self.train_epoch(epoch)
            if steps < self.steps_per_epoch or \
                    self.out_of_time(f"before the validation of epoch {epoch}"):
                if steps and keep is not Keep.BEST_WHOLE_EPOCH:
                    self.measure_cut_epoch(epoch, steps, keep)
                return True
            val_loss = self.validate(f"validation after epoch {epoch}")
            epoch_train = sum(self.train_losses[-self.steps_per_epoch:]) / self.steps_per_epoch
            log.info("%s epoch %d/%d: train loss %.4f, val loss %.4f (lr %.2e, batch %d)",
                     self.run.label, epoch, params.max_epochs, epoch_train, val_loss,
                     params.learning_rate, params.batch_size)
            stale = 0 if self.keep_if(keep, val_loss, epoch) else stale + 1
            if self.run.on_epoch is not None and self.run.on_epoch(epoch, val_loss):
                return True
            if stale >= params.patience and epoch < params.max_epochs:
                log.info("%s stops early: no better validation loss for %d epoch(s)",
                         self.run.label, stale)
                return True
        return False

    def out_of_time(self, where: str) -> bool:
        """Whether the deadline stops the fit here (noted): a step that would end past it does
        not start, judged by the last step's time (the first one always may)."""
        deadline = self.run.deadline
        if deadline is None or time.monotonic() + self.last_step < deadline:
            return False
        self.notes.append(f"{self.run.label} stopped by the time limit {where}")
        log.info(self.notes[-1])
        return True

    def train_epoch(self, epoch: int) -> int:
        """The epoch's optimizer steps over a fresh order; how many ran (fewer: the deadline)."""
        order = self.train[:]
        self.order_rng.shuffle(order)
        size = self.params.batch_size
        bar = tqdm(range(self.steps_per_epoch),
                   desc=f"{self.run.label} epoch {epoch}/{self.params.max_epochs}",
                   disable=not (self.run.progress and sys.stderr.isatty()), leave=False,
                   file=sys.stderr)
        steps = 0
        for step in bar:
            if self.out_of_time(f"before step {step + 1} of epoch {epoch}"):
                break
            steps += 1
            loss = self.step(order[step * size:(step + 1) * size],
                             f"epoch {epoch} step {step + 1}")
            bar.set_postfix(loss=f"{loss:.3f}")
        bar.close()
        self.last_step = 0.0  # the validation itself is not a step
        return steps

    def step(self, batch: list[Example], where: str) -> float:
        """One optimizer step over `batch`; its loss."""
        started = time.monotonic()
        micro, device = self.config.micro_batch_size, self.config.device
        step_loss = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        # Accumulate: each micro-batch adds its share of the batch's loss.
        for start in range(0, len(batch), micro):
            examples = batch[start:start + micro]
            self.tokens_seen += sum(len(e.input_ids) for e in examples)
            with autocast(device):
                loss = self.objective.micro_loss(self.model, examples, batch,
                                                 pad_id=self.pad_id, device=device)
            _check_finite(loss.item(), where)
            if loss.requires_grad:
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            step_loss += loss.item()
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.train_losses.append(step_loss)
        self.last_step = time.monotonic() - started
        return step_loss

    def validate(self, where: str) -> float:
        val_loss = validation_loss(self.model, self.objective, self.validation,
                                   device=self.config.device,
                                   micro_batch_size=self.config.micro_batch_size,
                                   pad_id=self.pad_id)
        _check_finite(val_loss, where)
        self.val_losses.append(val_loss)
        return val_loss

    def measure_cut_epoch(self, epoch: int, steps: int, keep: Keep) -> None:
        """The weights as the deadline found them, validated, noted and offered to `keep`."""
        val_loss = self.validate(f"validation of the cut epoch {epoch}")
        self.notes.append(f"{self.run.label} epoch {epoch} was cut after {steps} of "
                          f"{self.steps_per_epoch} steps (val loss {val_loss:.4f})")
        self.keep_if(keep, val_loss, epoch)

    def keep_if(self, keep: Keep, val_loss: float, epoch: int) -> bool:
        """Keep the adapter as it is now when `keep` asks for it; whether this epoch improved
        on the ones before (see `FitRun.judge`; the last epoch always counts as one)."""
        lower = val_loss < min(self.val_losses[:-1], default=math.inf)  # validated: last
        if keep is Keep.LAST_EPOCH or (self.run.judge is None and lower):
            self.keep(val_loss, epoch, self.adapter_bytes())
            return True
        if self.run.judge is None:
            return False
        blob = self.adapter_bytes()
        score = self.run.judge(blob)
        self.judged.append(score)
        if score > self.kept_score:
            self.kept_score = score
            self.keep(val_loss, epoch, blob)
            return True
        return lower

    def adapter_bytes(self) -> bytes:
        return serialize_adapter(self.model, ADAPTER_NAME, base_model=self.config.model_name)

    def keep(self, val_loss: float, epoch: int, blob: bytes) -> None:
        self.kept_loss, self.kept_epoch, self.kept_adapter = val_loss, epoch, blob


def _check_finite(value: float, where: str) -> None:
    if not math.isfinite(value):
        raise FitFailed(f"loss became {value} at {where}")


def _trainable_model(base_model, config: FitConfig, init_adapter: bytes | None):
    """A copy of the base model with a trainable LoRA adapter: fresh, or from adapter bytes."""
    if init_adapter is None:
        model = get_peft_model(copy.deepcopy(base_model), lora_config(config),
                               adapter_name=ADAPTER_NAME)
    else:
        model = attach_adapter(copy.deepcopy(base_model), parse_adapter(init_adapter),
                               ADAPTER_NAME)
        model.set_adapter(ADAPTER_NAME)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(f".{ADAPTER_NAME}." in name and "lora_" in name)
    model.to(config.device)
    model.train()
    return model
