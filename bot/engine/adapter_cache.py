"""Which adapter versions an engine holds, under which peft names, and which one to evict.

The event loop owns this bookkeeping; the model thread only runs the attach and delete jobs it
is handed. So choosing what to evict never races with forming a batch: a version pinned by a
batch that is formed but not finished is never chosen, and a version chosen for eviction leaves
the table at once, so no later batch counts on it (its next request loads it again).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections import Counter, OrderedDict

from bot.core.generation import BASE_VERSION

log = logging.getLogger(__name__)

BASE_NAME = "__base__"  # peft's name for "no adapter" in a mixed batch


class AdapterCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._names: OrderedDict[str, str] = OrderedDict()  # version -> peft name, LRU first
        self._pins: Counter[str] = Counter()
        self._digests: dict[str, str] = {}  # version -> sha256 of the bytes it was loaded from
        self._retired: list[str] = []  # peft names of replaced weights, still to delete
        self._numbers = itertools.count(1)

    def __contains__(self, version: str) -> bool:
        return version == BASE_VERSION or version in self._names

    @property
    def versions(self) -> list[str]:
        """The loaded versions, least recently used first."""
        return list(self._names)

    def name_of(self, version: str) -> str:
        """The peft adapter name serving `version` (which must be loaded)."""
        return BASE_NAME if version == BASE_VERSION else self._names[version]

    def use(self, versions: list[str]) -> None:
        """A batch with these versions is formed: keep them, and mark them recently used."""
        for version in versions:
            if version != BASE_VERSION:
                self._pins[version] += 1
                self._names.move_to_end(version)

    def release(self, versions: list[str]) -> None:
        """That batch is done."""
        for version in versions:
            if version != BASE_VERSION:
                self._pins[version] -= 1
                if self._pins[version] <= 0:
                    del self._pins[version]

    def plan(self) -> tuple[str, str | None]:
        """A fresh peft name for a version about to load, and the peft name of the version to
        delete to make room (None when there is room, or when every loaded one is in use: the
        cache then holds one more than its capacity until a later load)."""
        name = f"adapter_{next(self._numbers)}"
        if self._retired:
            return name, self._retired.pop()
        if len(self._names) < self.capacity:
            return name, None
        for version in self._names:  # least recently used first
            if not self._pins[version]:
                self._digests.pop(version, None)
                return name, self._names.pop(version)
        return name, None

    def add(self, version: str, name: str, blob: bytes | None = None) -> None:
        self._names[version] = name
        if blob is not None:
            self._digests[version] = hashlib.sha256(blob).hexdigest()

    def stale(self, version: str, sha256: str | None) -> bool:
        """`version` is loaded from other bytes than those with digest `sha256` (None: not
        known, so not stale): the registry reused its name after Redis lost its data."""
        known = self._digests.get(version)
        return None not in (sha256, known) and known != sha256

    async def retire(self, version: str) -> None:
        """Take stale `version` out of the table, so its new requests wait for the reload;
        once the rows that started with it are done (a reply keeps its weights), the next
        `plan` names its peft adapter for deletion."""
        log.warning("adapter %s has new bytes in the registry (did Redis lose its data?): "
                    "loading it again", version)
        self._digests.pop(version, None)
        name = self._names.pop(version)
        while self._pins[version] > 0:
            await asyncio.sleep(0.05)
        self._retired.append(name)
