"""Which adapter a cycle keeps of what the search made: the one whose replies score best on
the exam, not the one with the lowest validation loss.

A lower loss is not a better bot. On the chit-chat dialogues, over 68 adapters (five learning
rates and batch sizes, 4-8 epochs each, one round of a moderator's ratings), the mean sentence
chrF of the greedy replies to the exam's 13-16 prompts followed the held-out 👍 share (the
benches' moderator) with a correlation of 0.54-0.63, the validation loss with 0.38 and -0.11;
the epoch with the best exam replies averaged a held-out share of 0.50-0.51 where the
lowest-loss epoch averaged 0.38-0.49. So each search trial keeps the epoch its exam replies
score best (`ExamJudge` as the fit's judge), and the cycle keeps the trial whose kept epoch
scored best; the loss still stops a trial early and prunes it. No exam prompt was chosen
against any of these adapters, so comparing them with each other is fair, unlike comparing
them with the model that answered those prompts (`trainer.exam.Reference.chosen_against`).
An epoch whose exam replies the gate would call degenerate next to the base model's and the
references' (`trainer.degeneracy`; shared stock passages score chrF against many references)
ranks below every healthy one: a round-1 candidate chosen for its chrF alone was refused for
38 % of its replies sharing one passage, and the cycle was lost. The preference epochs'
adapter gives way to the search's winner only when its replies are degenerate or worse beyond
noise (the gate's paired bootstrap). With fewer than `min_prompts` references there is no
judge and the loss decides.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from trainer import degeneracy
from trainer.evaluate import with_adapter
from trainer.exam import Reference
from trainer.fit import FitResult
from trainer.quality import (
    ExamAnswers,
    GateConfig,
    exam_answers,
    paired_bootstrap,
    reference_figures,
)

log = logging.getLogger(__name__)

# Taken off a degenerate epoch's mean chrF (0-100): it ranks below every healthy one, and
# among degenerate ones (all of a trial's epochs may be) the better replies still rank first.
DEGENERATE_PENALTY = 100.0


class ExamJudge:
    """Scores adapter bytes by their greedy replies to the exam (mean sentence chrF), each
    adapter once; the gate reuses what it answered (`answered`)."""

    def __init__(self, base_model, tokenizer, refs: list[Reference], config: GateConfig):
        self.base_model, self.tokenizer, self.refs, self.config = (base_model, tokenizer, refs,
                                                                   config)
        self.prompts = [ref.prompt for ref in refs]
        self._answered: dict[bytes, tuple[ExamAnswers, str | None]] = {}  # by sha256
        self._base: tuple[ExamAnswers, degeneracy.ReplyFigures] | None = None  # answered once
        self.reference_figures = reference_figures(refs)

    def scores(self, blob: bytes) -> list[float]:
        """Each exam prompt's sentence chrF of the adapter's greedy reply."""
        return self._answer(blob)[0][1]

    def answered(self, blob: bytes | None) -> ExamAnswers | None:
        """The exam answers already given by adapter `blob` (None: the base model), else None:
        the gate's measurement of the same model would answer the same greedy replies."""
        if blob is None:
            return None if self._base is None else self._base[0]
        found = self._answered.get(hashlib.sha256(blob).digest())
        return None if found is None else found[0]

    def degenerate(self, blob: bytes) -> str | None:
        """Why the adapter's exam replies are degenerate (`trainer.degeneracy`), or None."""
        return self._answer(blob)[1]

    def __call__(self, blob: bytes) -> float:
        mean = float(np.mean(self.scores(blob)))
        return mean - DEGENERATE_PENALTY if self.degenerate(blob) else mean

    def _answer(self, blob: bytes) -> tuple[ExamAnswers, str | None]:
        key = hashlib.sha256(blob).digest()
        if key not in self._answered:
            model = with_adapter(self.base_model, blob, self.config.device)
            answers = exam_answers(model, self.tokenizer, self.refs, self.config)
            why = degeneracy.refusal(degeneracy.figures(answers[0], self.prompts),
                                     {"base model": self.base_figures()},
                                     self.reference_figures)
            self._answered[key] = answers, why
        return self._answered[key]

    def base_figures(self) -> degeneracy.ReplyFigures:
        """The base model's reply figures on the exam (answered once)."""
        if self._base is None:
            answers = exam_answers(self.base_model, self.tokenizer, self.refs, self.config)
            self._base = answers, degeneracy.figures(answers[0], self.prompts)
        return self._base[1]

    def pick(self, finalists: list[FitResult]) -> tuple[int, str] | None:
        """The index of the finalist (lowest validation loss first) whose kept epoch scored
        best (ties: the lower loss), with a note; None without judged finalists."""
        judged = [fit.kept_score for fit in finalists]
        if not judged or None in judged:
            return None
        best = max(range(len(judged)), key=lambda i: (judged[i], -i))
        listed = ", ".join(shown(score) for score in judged)
        note = (f"kept trial {best + 1} of {len(finalists)} (lowest validation loss first): "
                f"its exam replies scored chrF {shown(judged[best])} on {len(self.refs)} "
                f"prompts at epoch {finalists[best].best_epoch} (all: {listed})")
        log.info("search: %s", note)
        return best, note

    def worse(self, tuned: bytes, searched: bytes) -> str | None:
        """Why the search's winner should stay instead of the tuned adapter: the tuned one's
        exam replies are degenerate and the winner's are not, or the winner's are better
        beyond noise; None when the tuned one may stay."""
        why = self.degenerate(tuned)
        if why and not self.degenerate(searched):
            return f"the tuned adapter's exam replies are degenerate: {why}"
        gain = paired_bootstrap(self.scores(searched), self.scores(tuned),
                                self.config.bootstrap_samples)
        if not gain.low > 0:
            return None
        return (f"the search's winner replies better on {len(self.refs)} exam prompts "
                f"(chrF {np.mean(self.scores(searched)):.2f} against "
                f"{np.mean(self.scores(tuned)):.2f}, interval [{gain.low:+.2f}, "
                f"{gain.high:+.2f}])")


def shown(score: float) -> str:
    """A judge's score as chrF, marked when the replies were degenerate."""
    return f"{score:.2f}" if score >= 0 else f"{score + DEGENERATE_PENALTY:.2f} degenerate"


def exam_judge(base_model, tokenizer, refs: list[Reference], config: GateConfig,
               min_prompts: int) -> ExamJudge | None:
    """The judge of the search's epochs and trials; None when the exam is too small to choose
    by."""
    if len(refs) < min_prompts:
        return None
    return ExamJudge(base_model, tokenizer, refs, config)
