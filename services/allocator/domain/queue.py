"""The backorder queue of one SKU, and every change a line goes through in it.

Queue logic lives here only: a line enters (`enqueue`), is served from the
head (`serve_head`), leaves when its order is cancelled (`dequeue`) or its
SKU is discontinued (`drain`). Each keeps the line's, its order's and the
SKU's `waiting` counters, the line's queue entry and the block sums in step;
what the change *means* for the command's outputs is the caller's business.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import Line, SkuState

QUEUE_BLOCK = 64  # target entries per backorder-queue block (tests may lower it)

# A backorder queue entry: (-priority, placed_at in µs since the epoch, order_id, line_no, line).
# The first four fields are unique within a queue, so the line itself is never compared.
QueueEntry = tuple[int, int, str, int, "Line"]


class QueueBlock:
    """A sorted run of queue entries with the sum of their lines' waiting units.

    `dirty`: a line was added, removed or changed here since the last ETA walk.
    """

    __slots__ = ("entries", "waiting", "dirty")

    def __init__(self, entries: list[QueueEntry], waiting: int) -> None:
        self.entries = entries
        self.waiting = waiting
        self.dirty = False

    def __getstate__(self) -> tuple[Any, ...]:
        return _block_state(self)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.entries, self.waiting, self.dirty = state


_block_state = attrgetter(*QueueBlock.__slots__)


class BackorderQueue:
    """The backorder queue of one SKU: entries sorted by (-priority, placed_at, order_id, line_no).

    A list of blocks (sorted lists of about `load` entries) with per-block
    sums of waiting units: O(log n + load) insert and remove, O(1) head, and
    an ETA walk that skips whole blocks whose dates cannot have changed.
    Callers keep `block.waiting` in step with the lines' `waiting` through
    `add`, `remove`, `take_head`.
    """

    __slots__ = ("load", "blocks", "maxes", "size", "touched")

    def __init__(self, load: int | None = None) -> None:
        self.load = max(2, load or QUEUE_BLOCK)
        self.blocks: list[QueueBlock] = []
        self.maxes: list[QueueEntry] = []  # last entry of each block, for bisect
        self.size = 0
        self.touched: list[QueueBlock] = []  # dirty blocks (may hold dropped ones)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __iter__(self) -> Iterator[QueueEntry]:
        for block in self.blocks:
            yield from block.entries

    def head(self) -> QueueEntry:
        return self.blocks[0].entries[0]

    def tail(self) -> QueueEntry:
        return self.maxes[-1]

    def _touch(self, block: QueueBlock) -> None:
        if not block.dirty:
            block.dirty = True
            self.touched.append(block)

    def clean(self) -> None:
        """Forget what changed (after the ETAs were brought up to date)."""
        for block in self.touched:
            block.dirty = False
        self.touched.clear()

    def add(self, entry: QueueEntry, waiting: int) -> None:
        self.size += 1
        blocks = self.blocks
        if not blocks:
            block = QueueBlock([entry], waiting)
            blocks.append(block)
            self.maxes.append(entry)
            self._touch(block)
            return
        index = bisect_left(self.maxes, entry)
        if index == len(blocks):
            index -= 1
        block = blocks[index]
        insort(block.entries, entry)
        block.waiting += waiting
        self.maxes[index] = block.entries[-1]
        self._touch(block)
        if len(block.entries) > 2 * self.load:
            self._split(index)

    def remove(self, entry: QueueEntry, waiting: int) -> None:
        """Remove `entry`, whose line still counted `waiting` units in its block."""
        index = bisect_left(self.maxes, entry)
        block = self.blocks[index]
        entries = block.entries
        position = bisect_left(entries, entry)
        if entries[position] is not entry:
            raise KeyError(entry[:4])
        del entries[position]
        block.waiting -= waiting
        self.size -= 1
        self._shrunk(index)

    def take_head(self, units: int, done: bool) -> None:
        """The head line got `units`; `done`: it waits no more and leaves the queue."""
        block = self.blocks[0]
        block.waiting -= units
        if done:
            del block.entries[0]
            self.size -= 1
            self._shrunk(0)
        else:
            self._touch(block)

    def clear(self) -> None:
        self.blocks.clear()
        self.maxes.clear()
        self.touched.clear()
        self.size = 0

    def _shrunk(self, index: int) -> None:
        blocks = self.blocks
        block = blocks[index]
        if not block.entries:
            del blocks[index]
            del self.maxes[index]
            return
        self.maxes[index] = block.entries[-1]
        self._touch(block)
        if len(block.entries) < self.load // 2 and index + 1 < len(blocks):
            following = blocks.pop(index + 1)
            del self.maxes[index + 1]
            block.entries.extend(following.entries)
            block.waiting += following.waiting
            self.maxes[index] = block.entries[-1]
            if len(block.entries) > 2 * self.load:
                self._split(index)

    def _split(self, index: int) -> None:
        block = self.blocks[index]
        half = len(block.entries) // 2
        upper = QueueBlock(block.entries[half:], 0)
        del block.entries[half:]
        upper.waiting = sum(entry[4].waiting for entry in upper.entries)
        block.waiting -= upper.waiting
        self.blocks.insert(index + 1, upper)
        self.maxes[index] = block.entries[-1]
        self.maxes.insert(index + 1, upper.entries[-1])
        self._touch(block)
        self._touch(upper)


# ---------------------------------------------------------------- a line's way through the queue


def enqueue(sku: SkuState, line: Line, quantity: int) -> bool:
    """Queue `quantity` units of `line` (not waiting yet); True if it went to the tail."""
    order = line.order
    entry = (-order.priority, order.placed_us, order.order_id, line.line_no, line)
    queue = sku.queue
    if queue is None:
        queue = sku.queue = BackorderQueue()
    at_tail = not queue or entry > queue.tail()
    line.qkey = entry
    line.waiting = quantity
    order.waiting += quantity
    sku.waiting += quantity
    queue.add(entry, quantity)
    return at_tail


def serve_head(sku: SkuState, queue: BackorderQueue) -> tuple[Line, int]:
    """Give available units to the head line of `sku.queue`; return it and what it got.

    The head leaves the queue once it waits no more. `available` must be > 0.
    """
    line = queue.head()[4]
    waiting = line.waiting
    take = waiting if waiting < sku.available else sku.available
    line.waiting = waiting - take
    line.order.waiting -= take
    sku.waiting -= take
    sku.available -= take
    if waiting == take:
        queue.take_head(take, done=True)
        line.qkey = None
        line.raw_eta = None
    else:
        queue.take_head(take, done=False)
    return line, take


def dequeue(sku: SkuState, line: Line) -> int:
    """Take a waiting line out of the queue; return the units it was waiting for."""
    units = line.waiting
    sku.queue.remove(line.qkey, units)  # type: ignore[union-attr, arg-type]
    line.qkey = None
    line.raw_eta = None
    line.waiting = 0
    line.order.waiting -= units
    sku.waiting -= units
    return units


def drain(sku: SkuState, reason: str) -> list[Line]:
    """Reject every waiting unit of `sku` for `reason`; return the lines, head first."""
    lines = sku.queued_lines()
    for line in lines:
        units = line.waiting
        line.waiting = 0
        line.rejected += units
        line.reason = reason
        line.qkey = None
        line.raw_eta = None
        line.order.waiting -= units
    sku.waiting = 0
    if sku.queue is not None:
        sku.queue.clear()
    sku.any_covered = False
    return lines
