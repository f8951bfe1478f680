"""What crosses between a front end's RemoteGenerator and an inference worker: plain dicts of
str, numbers and lists (Ray serialises them; no class of ours travels).

A reply streams as `{"piece": str}` items, then one `{"end": generation, ...}` item with the
replica's state; a refusal or failure is one `{"error": kind, "message": str}` item, which the
front end raises again as the same exception class. Errors the Generator protocol documents
(busy, failed, prompt too long, adapter not loadable) keep their class across the wire.
"""

from __future__ import annotations

import dataclasses
import logging

from bot.core.adapter_io import AdapterLoadError
from bot.core.dialogue import Turn
from bot.core.generation import EngineBusy, Generation, GenerationFailed, PromptTooLong
from bot.core.store.records import AdapterCorrupt, UnknownAdapter

log = logging.getLogger(__name__)

# kind -> the class raised again on the front end (order matters: subclasses first)
ERRORS: dict[str, type[Exception]] = {
    "busy": EngineBusy, "failed": GenerationFailed, "prompt_too_long": PromptTooLong,
    "unknown_adapter": UnknownAdapter, "adapter_corrupt": AdapterCorrupt,
    "adapter_load": AdapterLoadError, "bad_request": ValueError, "bad_setting": TypeError,
}


def encode_error(error: BaseException) -> dict:
    """The wire form of `error`; an error outside the protocol becomes "failed" with a safe
    message, its details logged here on the worker."""
    for kind, cls in ERRORS.items():
        if isinstance(error, cls):
            # UnknownAdapter is built from the version alone
            message = error.version if kind == "unknown_adapter" else str(error)
            return {"error": kind, "message": message}
    log.exception("generation failed on this worker", exc_info=error)
    return {"error": "failed", "message": "the model failed to generate a reply"}


def decode_error(item: dict) -> Exception:
    cls = ERRORS.get(item.get("error"), GenerationFailed)
    return cls(item.get("message") or "the inference worker failed")


def encode_request(turns: list[Turn], style: str | None, adapter: str,
                   overrides: dict) -> dict:
    return {"turns": [[turn.role, turn.text] for turn in turns], "style": style,
            "adapter": adapter, "overrides": overrides}


def decode_turns(raw: list) -> list[Turn]:
    return [Turn(role, text) for role, text in raw]


def encode_generation(generation: Generation) -> dict:
    return dataclasses.asdict(generation)


def decode_generation(raw: dict) -> Generation:
    return Generation(**raw)
