"""The model work of a cycle: data set, search, then the gate's numbers for base, active and
candidate on the validation side (`trainer.quality`; blocking: the cycle runs it in a worker
thread)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot.core.adapter_io import AdapterLoadError
from bot.core.generation import BASE_VERSION
from bot.core.store import RatedExchange
from trainer.dataset import DataSet, build_dataset
from trainer.exam import ExamSource, Reference, exam_references
from trainer.finalists import ExamJudge, exam_judge
from trainer.fit import load_base_model, load_tokenizer
from trainer.forgetting import general_examples
from trainer.gate import MIN_REPLY_PROMPTS
from trainer.quality import GateConfig, Quality, compare, measure_model
from trainer.report import loss_curve_png
from trainer.search import SearchConfig, SearchResult
from trainer.tune import tuned_best_fit

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """What the search produced and how it compares on the validation set."""

    data: DataSet
    search: SearchResult | None = None
    val_loss: dict = field(default_factory=dict)  # base, active, candidate
    quality: Quality | None = None  # what the gate compares
    notes: list[str] = field(default_factory=list)
    png: bytes | None = None  # the loss curve of the winning trial


def fit_candidate(settings, rated: list[RatedExchange], exam: ExamSource, parent: str,
                  active_blob: bytes | None, first_trial: dict | None,
                  progress: bool) -> Candidate:
    """Build the data set (`rated`: the endorsed view; the exam's pinned exchanges never
    train), search for the best adapter and measure it against base and active.

    The search and the losses are skipped when the data set has no train or no validation
    examples; `search.best` is None when every trial failed or was pruned.
    """
    search_config = SearchConfig.from_settings(settings)
    device = search_config.fit.device
    tokenizer = load_tokenizer(settings.model_name)
    data = build_dataset(rated, tokenizer, max_tokens=settings.max_train_tokens,
                         max_examples=settings.max_train_examples,
                         val_fraction=settings.val_fraction,
                         exam_ids=exam.pinned_ids)
    candidate = Candidate(data=data)
    if not data.train or not data.validation:
        return candidate
    base = load_base_model(settings.model_name, device)
    gate_config = GateConfig.from_settings(settings)
    refs = server_exam(gate_config, rated, exam, data, parent)
    judge = exam_judge(base, tokenizer, refs, gate_config, MIN_REPLY_PROMPTS)
    log.info("training: %d train / %d validation examples on %s, up to %d trials",
             len(data.train), len(data.validation), device, search_config.trials)
    candidate.search = tuned_best_fit(
        base, data, search_config, pad_id=tokenizer.eos_token_id, previous=first_trial,
        progress=progress, judge=judge)
    candidate.notes += candidate.search.notes
    best = candidate.search.best
    if best is None:
        return candidate

    candidate.quality = measure_candidate(gate_config, base, tokenizer, refs, data, parent,
                                          active_blob, best.adapter, candidate.notes, judge)
    quality = candidate.quality
    losses = candidate.val_loss
    losses["base"] = quality.base.nll
    losses["active"] = (losses["base"] if parent == BASE_VERSION
                        else None if quality.active is None else quality.active.nll)
    losses["candidate"] = quality.candidate.nll
    params = candidate.search.best_params
    candidate.png = loss_curve_png(
        f"LoRA after {parent}: lr {params['learning_rate']:.2e}, batch {params['batch_size']}",
        best.train_losses, best.steps_per_epoch, best.val_losses,
        {"base model": losses["base"],
         f"active ({parent})": None if parent == BASE_VERSION else losses["active"]})
    return candidate


def server_exam(config: GateConfig, rated: list[RatedExchange], exam: ExamSource,
                data: DataSet, parent: str) -> list[Reference]:
    """The exam the search's finalists and the gate answer (`trainer.exam`); the models the
    gate compares (base and `parent`) are not endorsed by their own agreed replies."""
    return exam_references(rated, data.held_out, list(exam.pinned), config.max_prompts,
                           frozenset({BASE_VERSION, parent}), exam.importers)


def measure_candidate(config: GateConfig, base, tokenizer, refs: list[Reference],
                      data: DataSet, parent: str, active_blob: bytes | None,
                      candidate_blob: bytes, notes: list[str],
                      judge: ExamJudge | None = None) -> Quality:
    """The gate's numbers: base, active (unless the base serves) and candidate, on the same
    exam (`refs`: `trainer.exam.exam_references`), validation examples and general text. An
    active adapter that cannot be loaded is noted and left out (the gate then compares with
    the base model). The exam answers `judge` (the search's, on the same exam) already gave
    are not asked again."""
    general = general_examples(tokenizer, config.max_train_tokens)
    log.info("gate: greedy replies to %d exam prompt(s) from base, active and candidate",
             len(refs))

    def measure(blob: bytes | None):
        answered = judge.answered(blob) if judge else None
        return measure_model(base, blob, tokenizer, refs, data.validation, general, config,
                             answered)

    base_measured = measure(None)
    active = None
    if active_blob is not None:
        try:
            active = measure(active_blob)
        except AdapterLoadError as error:
            notes.append(f"active adapter {parent} could not be evaluated: {error}")
            log.warning(notes[-1])
    # The candidate is measured from its serialized bytes, as the bot will load it.
    measured = measure(candidate_blob)
    return compare(base_measured, measured, active, refs, data.validation,
                   config.bootstrap_samples, active_version=parent, min_fair=MIN_REPLY_PROMPTS)
