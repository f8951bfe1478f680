"""What the gate measures on the exam, for the base model, the active adapter and the candidate:
greedy replies scored against the endorsed references, checks on the replies themselves,
preference accuracy, NLL on the validation side and on general text.

- References: the server's exam (`trainer.exam`): pinned replies and the validation side's
  endorsed references, at most GATE_MAX_PROMPTS, the same ones every cycle.
- Replies: greedy, from exactly the prompt the bot serves (`bot.core.dialogue.build_prompt`
  within the model's positions minus MAX_NEW_TOKENS, the bot's repetition penalty), decoded as
  the engine streams a reply (`bot.core.reply_decoder.reply_text`: no broken character, cut
  where it ends), batched, in this process: the base model alone or with one adapter attached.
- Reply score: sentence chrF (sacrebleu; character n-grams, so it reads Chinese as well as
  English) of each reply against its reference, averaged. The difference candidate minus
  another model gets a paired bootstrap (fixed seed): its mean and a 90 % interval, over the
  prompts not taught after that model's own replies when enough are left (`reply_difference`).
- Degeneracy (`trainer.degeneracy`): shared long passages, distinct word pairs and new links
  in each model's replies and in the references.
- Preference accuracy: the share of validation preferences an adapter gets right, counting
  log-probability gained over the reference model (the base, adapter disabled) as DPO's and
  KTO's implicit reward does: a pair (taught reply vs the reply it replaced) when the chosen
  reply gains more than the rejected one, a 👍 label when its reply gains, a 👎 label when its
  reply loses. The base model is the reference itself: it has no accuracy of its own (a tie on
  every preference; the gate counts it as 0.5). The difference to another model gets the same
  paired bootstrap as chrF, over the preferences.
- NLL: the masked validation loss per reply token over the validation targets, with the same
  paired bootstrap of another model's minus the candidate's over the targets (each target's
  loss per reply token); and the same loss on general text (`trainer.forgetting`), which no
  moderator's data can move.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from sacrebleu.metrics import CHRF

from bot.core.dialogue import build_prompt
from bot.core.generation import BASE_VERSION
from bot.core.reply_decoder import TokenBytes, reply_text
from trainer.dataset import Example, labels, pairs
from trainer.degeneracy import ReplyFigures, figures
from trainer.evaluate import evaluate_loss, example_losses, per_token, with_adapter
from trainer.exam import Reference

BOOTSTRAP_SEED = 20261124  # fixed: the same numbers give the same interval every cycle
INTERVAL = 0.90  # two-sided; its lower end is a one-sided 95 % bound
GATE_BATCH = 16  # prompts per generate call

_CHRF = CHRF()


@dataclass(frozen=True)
class GateConfig:
    """What the gate's measurements need of the settings."""

    device: str = "cpu"  # resolved: cpu, cuda, cuda:N or mps
    max_prompts: int = 48  # GATE_MAX_PROMPTS: references the replies are generated for
    bootstrap_samples: int = 1000  # GATE_BOOTSTRAP_SAMPLES
    max_new_tokens: int = 64  # the bot's reply length and repetition penalty: replies as served
    repetition_penalty: float = 1.2
    micro_batch_size: int = 8  # most examples in one forward pass
    max_train_tokens: int = 256  # the general-text examples are cut as training examples are

    @classmethod
    def from_settings(cls, settings) -> GateConfig:
        return cls(device=settings.resolved_device(), max_prompts=settings.gate_max_prompts,
                   bootstrap_samples=settings.gate_bootstrap_samples,
                   max_new_tokens=settings.max_new_tokens,
                   repetition_penalty=settings.repetition_penalty,
                   micro_batch_size=settings.micro_batch_size,
                   max_train_tokens=settings.max_train_tokens)


@dataclass(frozen=True)
class Scores:
    """One model's numbers on the validation side (None: not measurable there)."""

    nll: float
    chrf: float | None = None  # mean sentence chrF of its greedy replies (0-100)
    preference_accuracy: float | None = None
    general_nll: float | None = None  # reply-format NLL on the general text (forgetting)


@dataclass(frozen=True)
class Interval:
    """The mean of the candidate's score minus another model's, paired over the same items,
    with its bootstrap interval (chrF over exam prompts, hits over preferences)."""

    mean: float
    low: float
    high: float
    # chrF only: the prompts it was read on, and whether those leave out every prompt the
    # other model was put on the exam by (`Reference.chosen_against`): only then can it show
    # a win (on the prompts it answered badly, anything else looks better).
    prompts: int | None = None
    fair: bool = True


@dataclass
class Quality:
    """Everything the gate compares, and the replies behind the chrF numbers."""

    base: Scores
    candidate: Scores
    active: Scores | None = None  # None: the base model serves (or the active was unreadable)
    vs_active: Interval | None = None  # None: no references, or no active adapter
    vs_base: Interval | None = None
    # Preference accuracy's difference, the same way (None: no preferences to count).
    preference_vs_active: Interval | None = None
    preference_vs_base: Interval | None = None
    # The other's validation NLL minus the candidate's, paired over the validation targets
    # (each target's NLL per reply token; above 0: the candidate's is lower).
    nll_vs_active: Interval | None = None
    nll_vs_base: Interval | None = None
    # base / active / candidate / references -> figures of their replies (trainer.degeneracy)
    replies: dict[str, ReplyFigures] = field(default_factory=dict)
    prompts: int = 0  # references the replies were scored on
    pairs: int = 0  # validation pairs behind the preference accuracy
    labels: int = 0  # and validation 👍/👎 labels
    samples: list[dict] | None = None  # a few prompts with each model's reply, for the report

    def numbers(self) -> dict:
        """The flat numbers for the report, the --json line and the mod-log post."""
        found: dict = {"prompts": self.prompts, "pairs": self.pairs, "labels": self.labels}
        for name in ("base", "active", "candidate"):
            scores = getattr(self, name)
            for key, value in (asdict(scores) if scores else {}).items():
                found[f"{key}_{name}"] = None if value is None else round(value, 4)
        for prefix, name in (("chrf", "vs_active"), ("chrf", "vs_base"),
                             ("preference", "preference_vs_active"),
                             ("preference", "preference_vs_base"),
                             ("nll", "nll_vs_active"), ("nll", "nll_vs_base")):
            interval = getattr(self, name)
            if interval is not None:
                short = name.removeprefix("preference_").removeprefix("nll_")
                found.update({f"{prefix}_{short}_{k}": _rounded(v)
                              for k, v in asdict(interval).items()
                              if prefix == "chrf" or k in ("mean", "low", "high")})
        for name, reply_figures in self.replies.items():
            found.update({f"{key}_{name}": _rounded(value)
                          for key, value in reply_figures.as_dict().items()})
        return found


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value


def sentence_chrf(replies: list[str], refs: list[Reference]) -> list[float]:
    return [_CHRF.sentence_score(reply, [ref.text]).score
            for reply, ref in zip(replies, refs, strict=True)]


def paired_bootstrap(ours: list[float], theirs: list[float], samples: int,
                     seed: int = BOOTSTRAP_SEED) -> Interval:
    """Mean of ours - theirs and its INTERVAL bootstrap interval (resampling the prompts)."""
    diffs = np.asarray(ours, dtype=float) - np.asarray(theirs, dtype=float)
    if diffs.size == 0:
        raise ValueError("a bootstrap needs at least one paired score")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, diffs.size, size=(samples, diffs.size))
    means = diffs[picks].mean(axis=1)
    tail = (1 - INTERVAL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(mean=float(diffs.mean()), low=float(low), high=float(high))


@torch.inference_mode()
def greedy_replies(model, tokenizer, refs: list[Reference], *, max_new_tokens: int,
                   repetition_penalty: float, device: str, batch_size: int = GATE_BATCH,
                   min_new_tokens: int = 0) -> list[str]:
    """The bot's greedy reply to each reference prompt, from exactly the served prompt
    (`min_new_tokens`: end-of-text held off until then, for the benches' length check)."""
    n_positions = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    budget = n_positions - max_new_tokens
    pad = tokenizer.eos_token_id
    token_bytes = TokenBytes(tokenizer)
    replies = []
    for start in range(0, len(refs), batch_size):
        chunk = refs[start:start + batch_size]
        rows = [tokenizer.encode(build_prompt(r.turns, r.style, tokenizer, budget),
                                 add_special_tokens=False) for r in chunk]
        width = max(len(row) for row in rows)
        # Left-padded, as the engine batches: every row ends where its reply starts.
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        output = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                repetition_penalty=repetition_penalty, pad_token_id=pad,
                                eos_token_id=pad, temperature=None, top_p=None, top_k=None)
        # Decoded as the engine streams a reply: never a broken character, cut where it ends.
        replies += [reply_text(row, token_bytes, tokenizer.eos_token)
                    for row in output[:, width:].tolist()]
    return replies


def preference_hits(model, examples: list[Example], *, pad_id: int, device: str,
                    batch_size: int) -> list[float]:
    """For each preference among `examples`, 1.0 when the adapter gets it right relative to
    the reference model, else 0.0: a pair when its chosen reply gains more log-probability
    than the rejected one, a 👍 label when its reply gains, a 👎 label when its reply loses."""
    found = pairs(examples) + labels(examples)
    from trainer.objectives import reference_logps, sequence_logps

    def gain(sequences):  # log-probability over the reference model's
        return (sequence_logps(model, sequences, pad_id=pad_id, device=device)
                - reference_logps(model, sequences, pad_id=pad_id, device=device))

    hits = []
    with torch.no_grad():
        for start in range(0, len(found), batch_size):
            chunk = found[start:start + batch_size]
            ours = gain([(list(e.input_ids), list(e.labels)) for e in chunk])
            rejected = [(list(e.rejected_ids), list(e.rejected_labels)) for e in chunk
                        if e.kind == "pair"]
            theirs = iter(gain(rejected).tolist() if rejected else [])
            for example, value in zip(chunk, ours.tolist(), strict=True):
                right = (value > next(theirs) if example.kind == "pair"
                         else (value > 0) == (example.kind == "desirable"))
                hits.append(float(right))
    return hits


@dataclass
class Measurement:
    """One model's scores, its replies to the references and its hits on the preferences."""

    scores: Scores
    replies: list[str]
    sentence: list[float]
    hits: list[float] | None = None  # None: the base model (the reference: a tie on each)
    losses: list[float] | None = None  # NLL per reply token of each validation target


ExamAnswers = tuple[list[str], list[float]]  # greedy replies, each one's sentence chrF


def exam_answers(model, tokenizer, refs: list[Reference], config: GateConfig) -> ExamAnswers:
    """`model`'s greedy replies to the exam prompts and each one's sentence chrF."""
    replies = greedy_replies(model, tokenizer, refs, max_new_tokens=config.max_new_tokens,
                             repetition_penalty=config.repetition_penalty, device=config.device)
    return replies, sentence_chrf(replies, refs)


def measure_model(base_model, blob: bytes | None, tokenizer, refs: list[Reference],
                  validation: list[Example], general: list[Example],
                  config: GateConfig, answered: ExamAnswers | None = None) -> Measurement:
    """NLL (validation and `general` text), greedy replies (scored) and preference hits of the
    base with adapter `blob` (None: the base alone); `answered`: the same model's exam answers
    where the search's judge already has them. Raises AdapterLoadError for bytes that do not
    fit."""
    pad, device = tokenizer.eos_token_id, config.device
    model = with_adapter(base_model, blob, device)

    def nll(examples):  # NaN without reply targets (e.g. a 👎-only validation side)
        return evaluate_loss(model, examples, device=device,
                             micro_batch_size=config.micro_batch_size, pad_id=pad)

    losses = example_losses(model, validation, device=device,
                            micro_batch_size=config.micro_batch_size, pad_id=pad)
    replies, sentence = answered or exam_answers(model, tokenizer, refs, config)
    hits = None if blob is None else preference_hits(
        model, validation, pad_id=pad, device=device, batch_size=config.micro_batch_size)
    scores = Scores(nll=per_token(losses),
                    chrf=float(np.mean(sentence)) if sentence else None,
                    preference_accuracy=float(np.mean(hits)) if hits else None,
                    general_nll=nll(general) if general else None)
    return Measurement(scores, replies, sentence, hits,
                       [total / count for total, count in losses if count])


def reference_figures(refs: list[Reference]) -> ReplyFigures:
    """The degeneracy figures of the exam's references as replies to its prompts."""
    return figures([ref.text for ref in refs], [ref.prompt for ref in refs])


def reply_difference(candidate: Measurement, other: Measurement, refs: list[Reference],
                     version: str | None, samples: int, min_fair: int) -> Interval:
    """The candidate's chrF minus `other`'s (adapter `version`): over the prompts not chosen
    against `other` when at least `min_fair` are left (a fair interval), else over every
    prompt (not fair: it may refuse the candidate, never promote it)."""
    kept = [i for i, ref in enumerate(refs) if not ref.chosen_against(version)]
    fair = len(kept) == len(refs) or len(kept) >= min_fair
    if not fair:
        kept = list(range(len(refs)))
    interval = paired_bootstrap([candidate.sentence[i] for i in kept],
                                [other.sentence[i] for i in kept], samples)
    return replace(interval, prompts=len(kept), fair=fair)


def compare(base: Measurement, candidate: Measurement, active: Measurement | None,
            refs: list[Reference], validation: list[Example], samples: int,
            shown: int = 3, *, active_version: str | None = None,
            min_fair: int = 10) -> Quality:
    """The gate's numbers from the measurements of the same references and preferences
    (`active_version`: the version `active` measured; `min_fair`: the fewest prompts a
    fair chrF interval is read on)."""
    quality = Quality(base=base.scores, candidate=candidate.scores,
                      active=None if active is None else active.scores, prompts=len(refs),
                      pairs=len(pairs(validation)), labels=len(labels(validation)))
    if candidate.losses and len(candidate.losses) == len(base.losses or ()):
        quality.nll_vs_base = paired_bootstrap(base.losses, candidate.losses, samples)
        if active is not None and len(active.losses or ()) == len(candidate.losses):
            quality.nll_vs_active = paired_bootstrap(active.losses, candidate.losses, samples)
    if candidate.hits:
        quality.preference_vs_base = paired_bootstrap(
            candidate.hits, [0.5] * len(candidate.hits), samples)
        if active is not None and active.hits:
            quality.preference_vs_active = paired_bootstrap(candidate.hits, active.hits, samples)
    if refs:
        quality.vs_base = reply_difference(candidate, base, refs, BASE_VERSION, samples,
                                           min_fair)
        if active is not None:
            quality.vs_active = reply_difference(candidate, active, refs, active_version,
                                                 samples, min_fair)
        prompts = [ref.prompt for ref in refs]
        measured = {"base": base, "active": active, "candidate": candidate}
        quality.replies = {name: figures(m.replies, prompts)
                           for name, m in measured.items() if m is not None}
        quality.replies["references"] = reference_figures(refs)
        quality.samples = [
            {"prompt": ref.prompt, "reference": ref.text, "source": ref.source,
             "base": base.replies[i], "active": None if active is None else active.replies[i],
             "candidate": candidate.replies[i]}
            for i, ref in enumerate(refs[:shown])]
    return quality
