"""What the store keeps, as pydantic records (stored as JSON), and the errors it raises."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Literal

from pydantic import BaseModel, Field

from bot.core.dialogue import Turn
from bot.core.generation import BASE_VERSION

HELD_ID_CHARS = 12  # an id an admin can type; 48 bits are plenty within one server


class StoreError(Exception):
    """A request the store cannot carry out; the message says why."""


class UnknownExchange(StoreError):
    def __init__(self, exchange_id: str):
        super().__init__(f"no exchange with id {exchange_id!r} (it may have expired or been "
                         "forgotten)")
        self.exchange_id = exchange_id


class UnknownHeldItem(StoreError):
    def __init__(self, item_id: str):
        super().__init__(f"nothing held for review with id {item_id!r}")
        self.item_id = item_id


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
    parent_id: int | None = None  # a thread's parent channel (None elsewhere)
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
    # Shown where the mod-log says what was learned (None: not known, e.g. the console's
    # anonymous user or older data); `/forget me` removes it with the correction.
    moderator_name: str | None = None


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
    votes: dict[str, int] = {}  # moderator hash -> +1 | -1: who gave the score


class HeldItem(BaseModel):
    """A moderator's teaching (or 👍) the trainer holds for an admin's review instead of
    training on it (trainer/trust.py says when)."""

    exchange_id: str
    moderator_hash: str
    kind: Literal["teach", "like"]  # a taught reply, or a 👍 on the bot's reply
    text: str  # the taught reply, or the liked bot reply
    reason: str
    moderator_name: str | None = None  # for the review queue and the mod log, when known
    held_at: float = Field(default_factory=time.time)
    status: Literal["pending", "approved", "rejected"] = "pending"
    decided_at: float | None = None

    @property
    def id(self) -> str:
        """Names exactly this text by this moderator here: a changed teaching is a new item."""
        key = "\0".join((self.exchange_id, self.moderator_hash, self.kind, self.text))
        return hashlib.sha256(key.encode()).hexdigest()[:HELD_ID_CHARS]


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
    # own listeners, never published); cycle: a training cycle ended without changing what
    # serves but with something to tell (a refused candidate, teachings newly held)
    # canary: a canary started or ended (reason: started, promoted, rolled back, aborted,
    # replaced; detail: the numbers; previous: the active version it is judged against)
    kind: Literal["activated", "rollback", "default", "refused", "cycle", "canary"]
    tenant: int | None = None  # the server whose active adapter changed
    version: str  # cycle: the version serving
    previous: str  # refused: the version serving instead; cycle: when its run was recorded
    reason: str | None = None  # refused: the check it failed; cycle: its outcome
    detail: str | None = None  # canary: the live test's numbers, or the offline gate's reason
