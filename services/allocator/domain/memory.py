"""What the allocator remembers of keys: recent envelope ids (a bounded FIFO window) and
business keys for ever (per warehouse). See state.py for why both."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

DEFAULT_DEDUP_WINDOW = 100_000


class BoundedWindow:
    """A map of recently seen keys with FIFO eviction beyond `maxlen` keys.

    Re-adding a present key updates its value and keeps its place. A deque
    plus a dict: O(1) per operation and deterministic (insertion order only).
    """

    __slots__ = ("maxlen", "_order", "_items")

    def __init__(self, maxlen: int = DEFAULT_DEDUP_WINDOW) -> None:
        if maxlen < 1:
            raise ValueError("a dedup window needs room for at least one key")
        self.maxlen = maxlen
        self._order: deque[Any] = deque()
        self._items: dict[Any, Any] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: object, default: Any = None) -> Any:
        return self._items.get(key, default)

    def add(self, key: Any, value: Any = True) -> None:
        items = self._items
        if key in items:
            items[key] = value
            return
        items[key] = value
        order = self._order
        order.append(key)
        if len(order) > self.maxlen:
            del items[order.popleft()]

    def keys(self) -> list[Any]:
        return list(self._order)


class IdSet:
    """Ids remembered for ever, grouped by scope (the warehouse).

    One `set[str]` per warehouse: no tuple per key (a (wh, id) tuple would
    cost more than the id itself), and the id string is usually shared with
    the event or order that brought it.
    """

    __slots__ = ("by_scope",)

    def __init__(self) -> None:
        self.by_scope: dict[str, set[str]] = {}

    def has(self, scope: str, key: str) -> bool:
        ids = self.by_scope.get(scope)
        return ids is not None and key in ids

    def add(self, scope: str, key: str) -> None:
        ids = self.by_scope.get(scope)
        if ids is None:
            ids = self.by_scope[scope] = set()
        ids.add(key)

    def discard(self, scope: str, key: str) -> None:
        ids = self.by_scope.get(scope)
        if ids is not None:
            ids.discard(key)

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.by_scope.values())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for scope, ids in self.by_scope.items():
            for key in ids:
                yield scope, key
