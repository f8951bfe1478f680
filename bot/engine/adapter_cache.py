"""Which adapter versions an engine holds, under which peft names, and which one to evict.

The event loop owns this bookkeeping; the model thread only runs the attach and delete jobs it
is handed. So choosing what to evict never races with forming a batch: a version pinned by a
batch that is formed but not finished is never chosen, and a version chosen for eviction leaves
the table at once, so no later batch counts on it (its next request loads it again).
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict

from bot.core.generation import BASE_VERSION

BASE_NAME = "__base__"  # peft's name for "no adapter" in a mixed batch


class AdapterCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._names: OrderedDict[str, str] = OrderedDict()  # version -> peft name, LRU first
        self._pins: Counter[str] = Counter()
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
        if len(self._names) < self.capacity:
            return name, None
        for version in self._names:  # least recently used first
            if not self._pins[version]:
                return name, self._names.pop(version)
        return name, None

    def add(self, version: str, name: str) -> None:
        self._names[version] = name
