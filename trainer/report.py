"""A training report: metrics as JSON and a loss-curve PNG the bot can post."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve_png(title: str, train_losses: list[float], steps_per_epoch: int,
                   val_losses: list[float], references: dict[str, float | None]) -> bytes:
    """Train loss per step, validation loss per epoch, and flat lines for `references`
    (e.g. the base model's and the active adapter's validation loss)."""
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        steps = list(range(1, len(train_losses) + 1))
        axes.plot(steps, train_losses, label="train loss (per step)", color="tab:blue",
                  alpha=0.7)
        epoch_ends = [steps_per_epoch * (i + 1) for i in range(len(val_losses))]
        axes.plot(epoch_ends, val_losses, "o-", label="validation loss (per epoch)",
                  color="tab:orange")
        styles = iter([("tab:gray", "--"), ("tab:green", ":"), ("tab:red", "-.")])
        for name, value in references.items():
            if value is not None:
                color, dash = next(styles)
                axes.axhline(value, color=color, linestyle=dash, label=f"{name} {value:.3f}")
        axes.set_xlabel("optimizer step")
        axes.set_ylabel("loss per reply token (nats)")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def write_report_files(directory: Path, name: str, report: dict,
                       png: bytes | None) -> tuple[Path, Path | None]:
    """`directory/<name>.json` and `directory/<name>.png`; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
    png_path = None
    if png is not None:
        png_path = directory / f"{name}.png"
        png_path.write_bytes(png)
    return json_path, png_path
