"""One consumer runtime for every service: poll, recover, handle, commit, stop.

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

What the runtime guarantees, in one place:

- **Poll loop** with `getmany`; a partition is paused from assignment until
  it is recovered, then sought to the offset `recover` returned and resumed.
  Records before the expected offset are dropped (a late prefetch); a batch
  starting after it is re-sought once (a lost race with aiokafka's own reset
  to the committed offset), after that the gap is logged (retention).
- **Recovery never escapes into aiokafka.** It runs in the poll loop, not in
  the rebalance listener: an error is caught and logged, the partitions stay
  paused and *not recovered* (`/readyz` fails with the reason), and recovery
  is retried with capped exponential backoff. Nothing is consumed for a
  partition that is not recovered, so there is no zombie that consumes,
  emits nothing and says ready. `Refused` from `recover` is the exception:
  the runtime stops and the process exits with `Refused.exit_code` and the
  one-line message (e.g. a log that no longer matches the saved state).
- **Failure semantics**: one classifier, `is_transient`. A batch whose
  handler raises is never committed: its partitions are discarded, paused
  and recovered again (so the batch is read again). Transient errors are
  retried for ever (not ready meanwhile); unexpected ones up to
  `max_unexpected_failures` in a row, then the runtime raises (exit 1).
- **Fencing**: a member that stalled (SIGSTOP, a long GC pause) may have
  been evicted without knowing. A watchdog notices event-loop stalls; when
  one happened since the batch was fetched, `batch.fence()` makes a round
  trip to the group coordinator (a commit of the batch's start offsets, which
  the broker refuses from a stale generation) and raises `Fenced` when this
  member lost the partitions. Revokes wait for the batch in flight (a lock).
- **Commit** to Kafka after the handler succeeded (`commit_offsets=True`):
  the positions for services whose positions live in Kafka, a courtesy for
  lag tooling for the others. A failed commit is logged, not retried.
  `commit_interval` (seconds) spaces commits out: offsets wait until the
  interval passed (checked after every poll, idle ones too) and are flushed
  before a revoke and at stop. Only for services whose positions live
  elsewhere: a crash loses the uncommitted ones.
- **Graceful stop** (`stop` set, e.g. by `stop_on_signals` on SIGTERM or
  SIGINT): the batch in hand finishes, every held partition is released,
  the consumer leaves its group (a successor takes over at once); the
  caller returns normally and the process exits 0.
- **Lag and health** through `fulfil_platform.metrics.Progress` (lag watcher, batch
  timing, not-ready reasons).

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

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.logs import get_logger
from fulfil_platform.metrics import Progress, watch_lag

log = get_logger("platform.consumer")

_T = TypeVar("_T")

# Exit code of a process that refuses to run on inconsistent state (see Refused).
EXIT_REFUSED = 3

# SQLSTATE classes that mean "the database is (temporarily) not there or busy":
# 08 connection, 53 insufficient resources, 57 operator intervention (shutdown,
# crash recovery), 40 rollback (serialization, deadlock), 55 lock not available.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40", "55"})


def is_transient(exc: BaseException) -> bool:
    """Infrastructure trouble worth waiting out (broker or database away), not a bug or bad data."""
    if isinstance(exc, Fenced):
        return True
    if isinstance(exc, (OSError, TimeoutError, ConnectionError, asyncpg.InterfaceError)):
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(
            exc,
            (
                KafkaTimeoutError,
                KafkaConnectionError,
                NodeNotReadyError,
                RequestTimedOutError,
                CommitFailedError,
            ),
        )
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    # A wrapper (the migration runner's DB-API errors) is as transient as what it wraps.
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


STARTUP_BACKOFF = wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2)


async def wait_out(
    step: Callable[[], Awaitable[_T]],
    stop: asyncio.Event,
    *,
    what: str,
    max_unexpected: int = 1,
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> _T | None:
    """Run `step` until it succeeds, waiting out a broker or database that is away.

    A service starting while PostgreSQL restarts or the broker is unreachable
    must wait, not exit: that would stall it behind an orchestrator's back-off.
    Transient failures are retried with exponential backoff and jitter for as
    long as it takes; other failures up to `max_unexpected` attempts in all,
    then the last one is raised. Returns None if `stop` is set meanwhile."""
    unexpected = 0

    def retry(exc: BaseException) -> bool:
        nonlocal unexpected
        if is_transient(exc):
            return True
        unexpected += 1
        return isinstance(exc, Exception) and unexpected < max_unexpected

    async def pause(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def failed(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        assert exc is not None
        log.warning(
            f"{what} failed; retrying",
            error=type(exc).__name__,
            detail=str(exc)[:200],
            attempt=state.attempt_number,
        )
        if on_retry is not None:
            on_retry(exc, state.attempt_number)

    async for attempt in AsyncRetrying(
        wait=STARTUP_BACKOFF,
        retry=retry_if_exception(retry),
        sleep=pause,
        before_sleep=failed,
        reraise=True,
    ):
        with attempt:
            if stop.is_set():
                return None
            return await step()
    return None  # pragma: no cover - AsyncRetrying either returns from the block or raises


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


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` (graceful stop) while inside; no-op outside the main thread."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


class StallWatch:
    """Notices when the event loop did not run for `threshold` seconds (SIGSTOP, GC, a long
    synchronous step): heartbeats did not go out either, so the group may have moved on."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.last_tick = time.monotonic()
        self.last_stall = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        tick = min(0.1, self.threshold / 4)
        while not stop.is_set():
            self.observe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)

    def observe(self) -> None:
        now = time.monotonic()
        if now - self.last_tick > self.threshold:
            self.last_stall = now
        self.last_tick = now

    def stalled_since(self, since: float) -> bool:
        """A stall ended after `since`, or the loop is stalled right now (this very step)."""
        return self.last_stall >= since or time.monotonic() - self.last_tick > self.threshold


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, runtime: ConsumerRuntime):
        self.runtime = runtime

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runtime._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.runtime._assigned(list(assigned))


class ConsumerRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        topics: list[str],
        group_id: str,
        positions: Positions,
        handler: Handler,
        progress: Progress,
        max_records: int = 5_000,
        commit_offsets: bool = True,
        idle: Callable[[], Awaitable[None]] | None = None,
        consumer_options: dict[str, Any] | None = None,
        max_unexpected_failures: int = 5,
        backoff_max: float = 10.0,
        poll_ms: int = 200,
        commit_interval: float = 0.0,
    ):
        self.settings = settings
        self.name = name
        self.topics = topics
        self.group_id = group_id
        self.positions = positions
        self.handler = handler
        self.progress = progress
        self.max_records = max_records
        self.commit_offsets = commit_offsets
        self.idle = idle
        self.consumer_options = consumer_options or {}
        self.max_unexpected_failures = max_unexpected_failures
        self.backoff_max = backoff_max
        self.poll_ms = poll_ms
        self.commit_interval = commit_interval
        self.uncommitted: dict[TopicPartition, int] = {}
        self.committed_at = float("-inf")
        self.consumer: Any = None
        # Held by a batch, a recovery, a revoke and `idle`: a partition changes hands only
        # between batches.
        self.lock = asyncio.Lock()
        self.expected: dict[TopicPartition, int] = {}  # recovered partitions: next offset to handle
        self.unrecovered: dict[
            TopicPartition, float
        ] = {}  # assigned, not recovered: retry at (monotonic)
        self.reseeked: set[TopicPartition] = set()
        self.failures = 0  # consecutive failed recoveries or batches (backoff)
        self.unexpected = 0  # consecutive non-transient failures
        self.last_error: str | None = None
        self.watch = StallWatch(max(0.2, settings.kafka_session_timeout_ms / 1000 / 3))
        self.poll_started = time.monotonic()
        self.ready = asyncio.Event()  # set after the first poll: joined, recovering or consuming
        self.batches = 0
        self.fenced = 0

    # ------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer = kafka.consumer(
            self.settings, group_id=self.group_id, **self.consumer_options
        )
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        await self.consumer.start()
        helpers_stop = asyncio.Event()
        helpers = [
            asyncio.create_task(
                watch_lag(self.progress, lambda: self.consumer, helpers_stop),
                name=f"{self.name}-lag",
            ),
            asyncio.create_task(self.watch.run(helpers_stop), name=f"{self.name}-stall-watch"),
        ]
        try:
            while not stop.is_set():
                await self._recover_due()
                self.poll_started = time.monotonic()
                fetched = await self.consumer.getmany(
                    timeout_ms=self.poll_ms, max_records=self.max_records
                )
                batch = self._admit(fetched)
                if batch:
                    async with self.lock:
                        await self._handle(batch)
                if self.uncommitted:
                    async with self.lock:
                        await self._commit()
                self._report()
                self.ready.set()
                if self.idle is not None:
                    async with self.lock:
                        await self.idle()
        finally:
            helpers_stop.set()
            await asyncio.gather(*helpers, return_exceptions=True)
            async with self.lock:
                await self._commit(force=True)
                held = list(self.expected)
                self.expected.clear()
                if held:
                    try:
                        await self.positions.release(held)
                    except Exception as exc:  # noqa: BLE001 - stopping anyway; the next owner recovers
                        log.warning(
                            "release at stop failed",
                            service=self.name,
                            error=type(exc).__name__,
                            detail=str(exc)[:200],
                        )
            await self.consumer.stop()  # leaves the group, so a successor takes over at once

    # ------------------------------------------------------------------ rebalance

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        mine = [tp for tp in assigned if tp.topic in self.topics]
        if not mine:
            return
        # Nothing is fetched for a partition until it is recovered and sought.
        self.consumer.pause(*mine)
        for tp in mine:
            self.unrecovered[tp] = 0.0
        self._report()

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:  # the batch in flight finishes first
            await self._commit(force=True)  # still a member of this generation
            held = [tp for tp in revoked if tp in self.expected]
            for tp in revoked:
                self.expected.pop(tp, None)
                self.unrecovered.pop(tp, None)
                self.reseeked.discard(tp)
            if held:
                try:
                    await self.positions.release(held)
                except Exception as exc:  # noqa: BLE001 - never into aiokafka; the next owner recovers
                    log.warning(
                        "release failed",
                        service=self.name,
                        error=type(exc).__name__,
                        detail=str(exc)[:200],
                    )

    # ------------------------------------------------------------------ recovery

    async def _recover_due(self) -> None:
        if not self.unrecovered:
            return
        assigned = self.consumer.assignment()
        for tp in [tp for tp in self.unrecovered if tp not in assigned]:
            del self.unrecovered[tp]
        now = time.monotonic()
        due = sorted(
            (tp for tp, at in self.unrecovered.items() if at <= now),
            key=lambda tp: (tp.topic, tp.partition),
        )
        if not due:
            return
        async with self.lock:
            due = [tp for tp in due if tp in self.unrecovered]  # a revoke may have run meanwhile
            if not due:
                return
            try:
                offsets = await self.positions.recover(due)
            except Refused:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: not recovered, retried
                delay = self._failed(exc, "recover")
                for tp in due:
                    self.unrecovered[tp] = time.monotonic() + delay
                log.warning(
                    "partition recovery failed; retrying",
                    service=self.name,
                    partitions=[f"{tp.topic}:{tp.partition}" for tp in due],
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                    retry_in_s=round(delay, 2),
                )
                self._report()
                if not is_transient(exc) and self.unexpected >= self.max_unexpected_failures:
                    raise
                return
            for tp in due:
                offset = offsets[tp]
                self.consumer.seek(tp, offset)
                self.expected[tp] = offset
                self.reseeked.discard(tp)
                del self.unrecovered[tp]
            self.consumer.resume(*due)
            self._succeeded()

    def _failed(self, exc: BaseException, what: str) -> float:
        self.failures += 1
        if not is_transient(exc):
            self.unexpected += 1
        self.last_error = f"{what}: {type(exc).__name__}"
        delay: float = min(self.backoff_max, 0.2 * 2.0 ** min(self.failures - 1, 10))
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security

    def _succeeded(self) -> None:
        self.failures = 0
        self.unexpected = 0
        self.last_error = None

    def _report(self) -> None:
        if self.unrecovered:
            parts = ",".join(sorted(f"{tp.topic}:{tp.partition}" for tp in self.unrecovered))
            why = f" (last error: {self.last_error})" if self.last_error else ""
            self.progress.set_unhealthy(f"partitions not recovered: {parts}{why}")
        else:
            self.progress.set_unhealthy(None)

    # ------------------------------------------------------------------ batches

    def _admit(self, fetched: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """Per partition, the records that continue exactly where it stands."""
        batch = {}
        for tp, records in fetched.items():
            expected = self.expected.get(tp)
            if expected is None or not records:
                continue  # not recovered (yet): fetched again after its seek
            if records[0].offset < expected:
                records = [r for r in records if r.offset >= expected]
                if not records:
                    continue
            if records[0].offset > expected:
                if tp not in self.reseeked:
                    self.reseeked.add(tp)
                    self.consumer.seek(tp, expected)
                    log.info(
                        "re-seeking partition",
                        service=self.name,
                        topic=tp.topic,
                        partition=tp.partition,
                        expected=expected,
                        got=records[0].offset,
                    )
                    continue
                log.warning(
                    "gap in log",
                    service=self.name,
                    topic=tp.topic,
                    partition=tp.partition,
                    expected=expected,
                    got=records[0].offset,
                )
            batch[tp] = records
        return batch

    async def _handle(self, records: dict[TopicPartition, list[Any]]) -> None:
        records = {
            tp: got for tp, got in records.items() if tp in self.expected
        }  # revoked since the poll
        if not records:
            return
        tps = list(records)
        since = self.poll_started
        try:
            with self.progress.batch():
                done = await self.handler(Batch(records, lambda: self._fence(tps, since)))
        except Fenced as exc:
            self.fenced += 1
            log.warning(
                "partitions lost during a batch; its results are dropped",
                service=self.name,
                partitions=[f"{tp.topic}:{tp.partition}" for tp in tps],
                detail=str(exc)[:200],
            )
            await self._discard(tps, self._failed(exc, "fenced"))
            return
        except Exception as exc:
            delay = self._failed(exc, "batch")
            transient = is_transient(exc)
            (log.warning if transient else log.error)(
                "batch failed; nothing committed, it is read again",
                service=self.name,
                partitions=[f"{tp.topic}:{tp.partition}" for tp in tps],
                error=type(exc).__name__,
                detail=str(exc)[:200],
                retry_in_s=round(delay, 2),
            )
            await self._discard(tps, delay)
            if not transient and self.unexpected >= self.max_unexpected_failures:
                raise
            return
        nexts = (
            dict(done)
            if done is not None
            else {tp: got[-1].offset + 1 for tp, got in records.items()}
        )
        for tp, offset in nexts.items():
            if tp in self.expected:
                self.expected[tp] = offset
        self.batches += 1
        self._succeeded()
        if self.commit_offsets:
            self.uncommitted.update(nexts)

    async def _commit(self, *, force: bool = False) -> None:
        if not self.uncommitted:
            return
        if not force and time.monotonic() - self.committed_at < self.commit_interval:
            return
        offsets = {tp: offset for tp, offset in self.uncommitted.items() if tp in self.expected}
        self.uncommitted.clear()
        self.committed_at = time.monotonic()
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (KafkaError, OSError) as exc:
            # The batch's effects are complete; the group has moved on (rebalance) or
            # the broker is away. The next owner starts from its own positions.
            log.warning("offset commit failed", service=self.name, error=type(exc).__name__)

    async def _discard(self, tps: list[TopicPartition], delay: float) -> None:
        held = [tp for tp in tps if tp in self.expected]
        for tp in held:
            del self.expected[tp]
        try:
            await self.positions.discard(held)
        except Exception as exc:  # noqa: BLE001 - recovery starts from scratch anyway
            log.warning("discard failed", service=self.name, error=type(exc).__name__)
        assigned = self.consumer.assignment()
        paused = [tp for tp in held if tp in assigned]
        if paused:
            self.consumer.pause(*paused)
        retry_at = time.monotonic() + delay
        for tp in paused:
            self.unrecovered[tp] = retry_at
        self._report()

    async def recover_again(self, partitions: list[TopicPartition] | None = None) -> None:
        """Forget the held partitions' state (all of them when None) and recover them again,
        as after a failed batch: for a service that learns outside a batch that its positions
        may be stale (its database restarted and may have lost recent commits). Call it with
        the lock held, i.e. from the handler or `idle`."""
        held = (
            list(self.expected)
            if partitions is None
            else [tp for tp in partitions if tp in self.expected]
        )
        if held:
            await self._discard(held, 0.0)

    async def _fence(self, tps: list[TopicPartition], since: float) -> None:
        if any(tp not in self.expected for tp in tps):
            raise Fenced("revoked")
        if not self.watch.stalled_since(since):
            return
        # The loop stalled after this batch was fetched: heartbeats stopped too, and the
        # group may have given the partitions to someone else. Ask the coordinator: it
        # refuses a commit from a stale generation or an evicted member.
        log.info("event loop stalled during a batch; checking group membership", service=self.name)
        try:
            await self.consumer.commit({tp: self.expected[tp] for tp in tps})
        except (CommitFailedError, IllegalStateError) as exc:
            raise Fenced(type(exc).__name__) from exc
        if any(tp not in self.consumer.assignment() for tp in tps):
            raise Fenced("no longer assigned")
