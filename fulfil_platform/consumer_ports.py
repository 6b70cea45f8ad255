"""What a service supplies to the consumer runtime (`fulfil_platform.consumer`), and what
its handler may raise.

A service supplies two things and nothing else:

- a **position port** (`Positions`): where its positions live. On assignment
  `recover(partitions)` rebuilds whatever the service keeps per partition and
  returns the next offset to read for each; on revoke (and on a graceful
  stop) `release(partitions)` lets go cleanly (may persist); after a failed
  batch `discard(partitions)` drops the partitions' in-memory state unseen
  (it may be ahead of what reached the outside world);
- a **batch handler** (`Handler`): gets a `Batch` (records per partition, in
  log order, each partition continuing exactly at its expected offset) and
  returns the next offset per partition it finished (or None: all of them).
  It calls `await batch.fence()` right before its first write to the outside
  world that another owner of the partitions would also make.

The projector (offsets in PostgreSQL, same transaction as rows) is ported:
`recover` = `store.init_offsets(...)`; `release`/`discard` = forget its
positions; the handler applies the batch in chunks (one transaction each,
the next chunk decoded meanwhile) and raises `OffsetsMoved` (a `Fenced`) on
`StalePositions`. When its database connection is lost its `idle` calls
`recover_again()`: asynchronous commits may have been lost with it.

Porting the notifier (outbox rows + offsets in one transaction): replace the
FastStream subscriber with this runtime; `recover` = `store.stored_offsets`
(falling back to Kafka's committed offset: return `await
runtime.consumer.committed(tp)` or 0), `release`/`discard` = nothing; the
handler = `BatchHandler.handle(records)` (it no longer needs its own retry:
raise and the runtime re-reads the batch with backoff), `commit_offsets=True`.

The core (services/allocator/entrypoints/core.py) is the first user: its
positions are snapshots plus the output tail; it fences before producing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import TopicPartition

# Exit code of a process that refuses to run on inconsistent state (see Refused).
EXIT_REFUSED = 3


class Fenced(Exception):
    """This member lost (or may have lost) the batch's partitions: write nothing of it."""


class Refused(Exception):
    """Stop the service: running on would be wrong. The message is one line for the operator,
    naming the remedy; the process exits with `exit_code`."""

    exit_code = EXIT_REFUSED


@dataclass
class Batch:
    records: dict[TopicPartition, list[Any]]
    fence: Callable[[], Awaitable[None]]


class Positions(Protocol):
    async def recover(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Rebuild the partitions' state; the next offset to read per partition. Raise to retry later."""
        ...

    async def release(self, partitions: list[TopicPartition]) -> None:
        """The partitions leave cleanly (revoked, or a graceful stop): persist if useful, forget."""
        ...

    async def discard(self, partitions: list[TopicPartition]) -> None:
        """A batch of these partitions failed: forget their state without persisting it."""
        ...


Handler = Callable[[Batch], Awaitable[Mapping[TopicPartition, int] | None]]
