"""The Redis data layer: `Store` and the records it keeps (see connection.py for its parts and
keys.py for the key layout)."""

from bot.core.generation import BASE_VERSION
from bot.core.store.connection import Store, StoreUnavailable, TenantStore
from bot.core.store.keys import SCHEMA_VERSION
from bot.core.store.records import (
    ActiveChanged,
    AdapterCorrupt,
    AdapterEvent,
    AdapterRecord,
    Correction,
    Exchange,
    HeldItem,
    OtherTenant,
    RatedExchange,
    StoreError,
    Style,
    TurnRecord,
    UnknownAdapter,
    UnknownExchange,
    UnknownHeldItem,
)
from bot.core.store.trainer_state import TrainerSnapshot
from bot.core.store.trust import TrustState

__all__ = ["BASE_VERSION", "SCHEMA_VERSION", "ActiveChanged", "AdapterCorrupt", "AdapterEvent",
           "AdapterRecord", "Correction", "Exchange", "HeldItem", "OtherTenant", "RatedExchange",
           "Store", "StoreError", "StoreUnavailable", "Style", "TenantStore", "TrainerSnapshot",
           "TrustState", "TurnRecord", "UnknownAdapter", "UnknownExchange", "UnknownHeldItem"]
