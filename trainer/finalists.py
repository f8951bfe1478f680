"""Which of the search's trials a cycle keeps: the one whose replies score best on the exam, not
the one with the lowest validation loss.

A lower loss is not a better bot: on the chit-chat dialogues the lowest-loss fit of a sweep had
the worst held-out 👍 share (0.056 against 0.222 for another trial). The search still ranks
trials by validation loss (Optuna's pruner needs a number per epoch); afterwards each trial
that kept an adapter (a pruned one with its best epoch so far) answers the exam's prompts
(greedy, as the gate asks them) and the highest mean sentence chrF wins if it beats the
lowest-loss trial beyond noise (the gate's paired bootstrap); else the lowest loss stays. A
choice the noise made would also flatter the chosen adapter on these prompts when the next
cycle's gate compares a new candidate with it there. No exam prompt was chosen against any
of them, so comparing them with each other is fair, unlike comparing them with the model that
answered those prompts (`trainer.exam.Reference.chosen_against`). With fewer than
`min_prompts` references the loss decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from trainer.evaluate import with_adapter
from trainer.exam import Reference
from trainer.quality import GateConfig, exam_answers, paired_bootstrap

log = logging.getLogger(__name__)

# (adapter bytes, first the one that stays unless beaten; their names, else "trial N")
Chooser = Callable[..., "tuple[int, str] | None"]


def exam_chooser(base_model, tokenizer, refs: list[Reference], config: GateConfig,
                 min_prompts: int) -> Chooser | None:
    """A function that picks the index of the adapter (among bytes ordered by validation loss,
    or named) whose replies score best on `refs` beyond noise over the first one's, with a note
    saying so; None when the exam is too small to choose by. `trainer.tune` also asks it
    whether the preference epochs left the replies worse than the search's winner."""
    if len(refs) < min_prompts:
        return None

    def exam_scores(blob: bytes) -> list[float]:
        return exam_answers(with_adapter(base_model, blob, config.device), tokenizer, refs,
                            config)[1]

    def choose(blobs: list[bytes], names: list[str] | None = None) -> tuple[int, str] | None:
        if len(blobs) < 2:
            return None
        scores = [exam_scores(blob) for blob in blobs]
        means = [float(np.mean(found)) for found in scores]
        best = max(range(len(means)), key=lambda i: (means[i], -i))
        gain = paired_bootstrap(scores[best], scores[0], config.bootstrap_samples)
        if not gain.low > 0:  # a choice the noise could have made: the first one stays
            best = 0
        if names is None:
            kept = f"trial {best + 1} of {len(blobs)} (lowest validation loss first)"
            listed = ", ".join(f"{mean:.2f}" for mean in means)
        else:
            kept = names[best]
            listed = ", ".join(f"{name} {mean:.2f}" for name, mean in zip(names, means,
                                                                          strict=True))
        note = (f"kept {kept}: its exam replies scored chrF {means[best]:.2f} on {len(refs)} "
                f"prompts (all: {listed}; another wins over the first only beyond noise)")
        log.info("search: %s", note)
        return best, note

    return choose
