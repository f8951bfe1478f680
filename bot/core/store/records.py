"""What the store keeps, as pydantic records (stored as JSON), and the errors it raises."""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, Field

from bot.core.dialogue import Turn
from bot.core.generation import BASE_VERSION


class StoreError(Exception):
    """A request the store cannot carry out; the message says why."""


class UnknownExchange(StoreError):
    def __init__(self, exchange_id: str):
        super().__init__(f"no exchange with id {exchange_id!r} (it may have expired or been "
                         "forgotten)")
        self.exchange_id = exchange_id


class OtherTenant(StoreError):
    """The exchange or adapter belongs to another server than the one acting on it."""


class UnknownAdapter(StoreError):
    def __init__(self, version: str):
        super().__init__(f"no adapter version {version!r} in the registry")
        self.version = version


class AdapterCorrupt(StoreError):
    """The stored adapter bytes do not match their recorded sha256."""


class ActiveChanged(StoreError):
    """The active pointer was not where a compare-and-set expected it; nothing moved."""


class TurnRecord(BaseModel):
    role: Literal["user", "bot"]
    text: str
    # Where the turn came from, so deleting that message or forgetting its author removes it
    # from every exchange that holds it as context (None: not known, e.g. imported or old).
    message_id: int | None = None
    author_hash: str | None = None  # HMAC of the author's id (a user's turn only)

    def as_turn(self) -> Turn:
        return Turn(self.role, self.text)


class Exchange(BaseModel):
    """One user message and the bot's reply, with what produced it."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: Literal["discord", "console", "import"] = "discord"
    # The server whose data this is (its guild id; a DM's is HOME_GUILD_ID): its ratings, stats
    # and adapters. None: no server (a DM without HOME_GUILD_ID), never rated nor trained on.
    tenant: int | None = None
    guild_id: int | None = None  # where it was said (None in a DM)
    channel_id: int | None = None
    message_id: int | None = None  # the bot's reply message (its first piece)
    extra_message_ids: list[int] = []  # the later pieces of a reply split over messages
    user_message_id: int | None = None
    user_hash: str | None = None
    context: list[TurnRecord] = []  # earlier turns, oldest first
    user_message: str
    style: str | None = None
    reply: str
    adapter_version: str = BASE_VERSION
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    reply_tokens: int = 0
    created_at: float = Field(default_factory=time.time)
    # The bot's reply was deleted in Discord: the exchange left the training data.
    reply_deleted: bool = False

    @property
    def message_ids(self) -> list[int]:
        """Every Discord message of the reply, first piece first."""
        first = [self.message_id] if self.message_id is not None else []
        return first + [i for i in self.extra_message_ids if i != self.message_id]

    def turns(self) -> list[Turn]:
        """The dialogue the reply answered: context then the user's message."""
        return [t.as_turn() for t in self.context] + [Turn("user", self.user_message)]


class Correction(BaseModel):
    """A moderator's better reply for an exchange ("teach")."""

    exchange_id: str
    moderator_hash: str
    text: str
    created_at: float = Field(default_factory=time.time)


class Style(BaseModel):
    prefix: str
    scope: Literal["channel", "guild"]
    set_by: str | None = None  # HMAC of the admin's id
    set_at: float = Field(default_factory=time.time)


class RatedExchange(BaseModel):
    """An exchange with its derived moderator score and its corrections."""

    exchange: Exchange
    score: int
    ratings: int
    corrections: list[Correction]


class AdapterRecord(BaseModel):
    """What the registry knows of one adapter version."""

    version: str = ""
    tenant: int | None = None  # the server it was trained for
    parent: str | None = None
    base_model: str
    hyperparameters: dict = {}
    trials: list[dict] = []
    metrics: dict = {}
    data: dict = {}  # counts: train/validation examples, corrections, ...
    sha256: str = ""
    size_bytes: int = 0
    created_at: float = Field(default_factory=time.time)


class AdapterEvent(BaseModel):
    # default: another default tenant; refused: a version a bot would not serve (told to its
    # own listeners, never published)
    kind: Literal["activated", "rollback", "default", "refused"]
    tenant: int | None = None  # the server whose active adapter changed
    version: str
    previous: str  # refused: the version serving instead
    reason: str | None = None  # refused: the check it failed
