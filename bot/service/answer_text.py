"""How the acts word their answers: dates, numbers, status lines and lists that fit a message.

Pure text from plain values, shared by every front end through bot/service/actions.py.
"""

from __future__ import annotations

import time

from bot.core.text import snippet

LIST_SHOWN = 4  # longer lists (loss curves, trials) stay in the report, out of a status line
ANSWER_LIMIT = 2000  # the longest answer a front end is sure to show whole (Discord's limit)


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def pairs(values: dict) -> str:
    """`key value` pairs for a status line: nested dicts inline, long lists left out."""
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, dict):
            return f"({pairs(value)})"
        return str(value)
    shown = {key: value for key, value in values.items()
             if not (isinstance(value, list) and len(value) > LIST_SHOWN)}
    return ", ".join(f"{key} {fmt(value)}" for key, value in shown.items()) or "none recorded"


def refusal_line(version: str, check: str | None, serving: str) -> str:
    """One refused adapter, the same words in /adapter status and the mod log."""
    return f"{version} refused: {check or 'it does not load'}; serving {serving}"


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def version_order(version: str) -> tuple[int, str]:
    """v2 before v10; the base model first of all."""
    digits = version.lstrip("v")
    return (int(digits) if digits.isdigit() else -1, version)


def stats_text(numbers: dict, active: str) -> str:
    """A server's /stats (counters as from exchanges.stats()) per adapter version, newest first
    after the one in service; versions past ANSWER_LIMIT characters are summed in one line."""
    total = numbers["total"]
    head = (f"Exchanges {total['exchanges']}, rated {total['rated']}, positive share "
            f"{share(total['positive_share'])}, corrections {total['corrections']}")
    rows = sorted(numbers["per_version"].items(), key=lambda item: version_order(item[0]),
                  reverse=True)
    if active in numbers["per_version"]:  # the one in service first
        rows.sort(key=lambda item: item[0] != active)

    def line(version: str, row: dict) -> str:
        mark = " (in service)" if version == active else ""
        return (f"  {version}{mark}: exchanges {row['exchanges']}, rated {row['rated']}, "
                f"positive {share(row['positive_share'])}")

    def rest(left: list) -> str:
        rated = sum(row["rated"] for _, row in left)
        positive = sum(row["positive"] for _, row in left)
        return (f"  ... and {len(left)} older versions: exchanges "
                f"{sum(row['exchanges'] for _, row in left)}, rated {rated}, positive "
                f"{share(positive / rated if rated else None)}")

    lines = [head]
    for shown, (version, row) in enumerate(rows):
        left = rows[shown + 1:]
        reserve = len(rest(left)) + 1 if left else 0
        if len("\n".join([*lines, line(version, row)])) + reserve > ANSWER_LIMIT:
            lines.append(rest(rows[shown:]))
            break
        lines.append(line(version, row))
    return "\n".join(lines)


def learned_lines(learned: dict) -> list[str]:
    """What a training cycle learned, held or refused (its `learned` record: headline, taught,
    held, exam), one line each: the mod log, /adapter status and the console show them."""
    lines = [learned.get("headline", "")]
    taught = learned.get("taught") or []
    if taught:
        lines.append("Taught since the last cycle: " + "; ".join(
            f"“{snippet(t['text'], 60)}” ×{t['count']} ({', '.join(t['moderators'])})"
            for t in taught))
    held = learned.get("held") or {}
    if held.get("pending"):
        lines.append(f"Held for review: {held['pending']} ({held['new']} new), not trained on: "
                     + "; ".join(f"“{snippet(h['text'], 60)}” by {h['moderator']} "
                                 f"({h['reason']})" for h in held["examples"]))
    for answer in learned.get("exam") or []:
        lines.append(f"Exam “{snippet(answer['prompt'], 50)}”: before "
                     f"[{answer['before_version']}] “{snippet(answer['before'], 60)}” → after "
                     f"“{snippet(answer['after'], 60)}”")
    return [line for line in lines if line]


def fitted(lines: list[str], limit: int = ANSWER_LIMIT) -> str:
    """`lines` joined, whole lines only, up to `limit` characters (the first one cut if it
    alone is longer)."""
    kept: list[str] = []
    for line in lines:
        if len("\n".join([*kept, line])) > limit:
            break
        kept.append(line)
    return "\n".join(kept) if kept else (lines[0][:limit - 1] + "…" if lines else "")
