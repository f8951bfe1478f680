"""What one training cycle did: the record `python -m trainer once` prints, the report keeps,
the mod log posts and `/adapter status` shows."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass
class CycleOutcome:
    """What one cycle did: the `--json` line, the recorded run and the report derive from it."""

    outcome: Literal["promoted", "rejected", "skipped"]
    reason: str
    guild: int | None = None  # the server (tenant) trained
    version: str | None = None  # the promoted adapter (or the one saved but refused)
    parent: str | None = None  # the version active when the cycle started
    new_ratings: int | None = None
    ratings_used: bool = False  # the cursor moves past the ratings this cycle saw
    data: dict = field(default_factory=dict)
    val_loss: dict = field(default_factory=lambda: {"base": None, "active": None,
                                                    "candidate": None})
    # The gate's numbers (trainer.quality.Quality.numbers) and "failed": the number that
    # refused the candidate; "samples": a few prompts with each model's reply (report only).
    gate: dict = field(default_factory=dict)
    learning_rate: float | None = None
    batch_size: int | None = None
    hyperparameters: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    trials: int | None = None  # how many trials the search ran
    trial_details: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What was learned, held or refused, in words (trainer.summary): headline, taught, held,
    # exam.
    learned: dict = field(default_factory=dict)
    report_path: str | None = None
    png_path: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict:
        """The one-line JSON of `python -m trainer once --json`."""
        return {"outcome": self.outcome, "reason": self.reason, "guild": self.guild,
                "version": self.version, "val_loss": dict(self.val_loss),
                "gate": {k: v for k, v in self.gate.items() if k != "samples"},
                "data": dict(self.data), "learning_rate": self.learning_rate,
                "batch_size": self.batch_size, "trials": self.trials,
                "learned": self.learned}

    def report(self) -> dict:
        """The training report saved with the adapter and written to the reports folder."""
        # The gate's numbers come first: the mod-log post shows the report's first lines.
        return {"outcome": self.outcome, "reason": self.reason, "guild": self.guild,
                "version": self.version, "parent": self.parent, "gate": self.gate,
                "learned": self.learned, "val_loss": self.val_loss, "data": self.data,
                "hyperparameters": self.hyperparameters, "metrics": self.metrics,
                "trials": self.trial_details, "notes": self.notes}

    def as_record(self) -> dict:
        """The entry kept in the store's list of recent runs."""
        return {**asdict(self), "at": time.time()}
