"""The model work of a cycle: data set, search and the three validation losses (blocking; the
cycle runs it in a worker thread)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot.adapter_io import AdapterLoadError
from bot.generation import BASE_VERSION
from bot.store import RatedExchange
from trainer.dataset import DataSet, build_dataset
from trainer.fit import evaluate_adapter, load_base_model, load_tokenizer
from trainer.report import loss_curve_png
from trainer.search import SearchResult, run_search

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """What the search produced and how it compares on the validation set."""

    data: DataSet
    search: SearchResult | None = None
    val_loss: dict = field(default_factory=dict)  # base, active, candidate
    notes: list[str] = field(default_factory=list)
    png: bytes | None = None  # the loss curve of the winning trial


def train_candidate(settings, rated: list[RatedExchange], parent: str,
                    active_blob: bytes | None, first_trial: dict | None,
                    progress: bool) -> Candidate:
    """Build the data set, search for the best adapter and measure it against base and active.

    The search and the losses are skipped when the data set has no train or no validation
    examples; `search.best` is None when every trial failed or was pruned.
    """
    device = settings.resolved_device()
    tokenizer = load_tokenizer(settings.model_name)
    data = build_dataset(rated, tokenizer, max_tokens=settings.max_train_tokens,
                         max_examples=settings.max_train_examples,
                         val_fraction=settings.val_fraction)
    candidate = Candidate(data=data)
    if not data.train or not data.validation:
        return candidate
    base = load_base_model(settings.model_name, device)
    pad_id = tokenizer.eos_token_id
    log.info("training: %d train / %d validation examples on %s, up to %d trials",
             len(data.train), len(data.validation), device, settings.search_trials)
    candidate.search = run_search(base, data.train, data.validation, settings, device=device,
                                  pad_id=pad_id, previous=first_trial, progress=progress)
    best = candidate.search.best
    if best is None:
        return candidate

    def loss_of(blob: bytes | None) -> float:
        return evaluate_adapter(base, blob, data.validation, device=device,
                                micro_batch_size=settings.micro_batch_size, pad_id=pad_id)

    losses = candidate.val_loss
    losses["base"] = loss_of(None)
    losses["active"] = losses["base"] if parent == BASE_VERSION else None
    if active_blob is not None:
        try:
            losses["active"] = loss_of(active_blob)
        except AdapterLoadError as error:
            candidate.notes.append(f"active adapter {parent} could not be evaluated: {error}")
            log.warning(candidate.notes[-1])
    # The candidate is measured from its serialized bytes, as the bot will load it.
    losses["candidate"] = loss_of(best.adapter)
    params = candidate.search.best_params
    candidate.png = loss_curve_png(
        f"LoRA after {parent}: lr {params['learning_rate']:.2e}, batch {params['batch_size']}",
        best.train_losses, best.steps_per_epoch, best.val_losses,
        {"base model": losses["base"],
         f"active ({parent})": None if parent == BASE_VERSION else losses["active"]})
    return candidate
