"""Consuming allocations.v1: a batch of records → outbox rows + offsets, in one transaction.

Exactly one row per (event, channel): the unique key drops re-deliveries, and
the offsets are stored with the rows, so a crash before the commit re-reads
the batch and a crash after it resumes behind it. Sending is not done here:
a slow or broken channel cannot slow consumption down.

The domain work is done here, and once: each event's notice is decided and
rendered while decoding (an event no template renders is quarantined before
any transaction); in one outbox transaction this module opens, the adapter
loads what planning needs, `plan_batch` plans, and the adapter writes the
planned rows with their messages (a fold's new notice is rendered then, the
others are not rendered again). The adapter stores; it never calls back.

A record the notifier cannot apply is quarantined, never retried forever: it
breaks the contract, no template renders it, or PostgreSQL refuses what it
would store (SQLSTATE class 22: a NUL character, a value out of range, ...).
When a whole batch is refused, the records are tried alone (bisecting, in
transactions that are rolled back) to find the culprits; the rest is stored.
Quarantined records are written to `notifier_dead_letters` in the batch's own
transaction and published to `<group>.dlq` after the commit, so a batch read
again (after a crash or an outage) publishes none of them a second time.
An outage (connection lost, PostgreSQL restarting) is not poison: the error
is raised as it is, and the consumer runtime (fulfil_platform.consumer)
classifies it, backs off and reads the batch again; nothing is retried here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import asyncpg
from jinja2 import TemplateError

from fulfil_platform.consumer import is_transient
from fulfil_platform.dead_letter_writer import dead_letter_headers
from fulfil_platform.logs import bound_record, get_logger
from schemas.registry import ContractError, parse_output
from services.notifier.adapters.outbox import OutboxStore, OutboxTransaction, Quarantined
from services.notifier.domain.decide import Policy, notice_for
from services.notifier.domain.model import Notice
from services.notifier.domain.plan import Consumed, Plan, lookups, plan_batch
from services.notifier.service_layer.clock import Clock
from services.notifier.service_layer.messages import Renderer

log = get_logger("notifier.consumer")

# Publishes one quarantined record to the dead-letter topic (raises when the broker is away).
PublishDeadLetter = Callable[[Quarantined], Awaitable[None]]

STAGE = "notifier"
UNSTORABLE = "unstorable"
RENDER_ERROR = "render_error"


class BatchFailed(Exception):
    """The batch could not be recorded; it will be delivered again. No message content inside."""


@dataclass
class _Batch:
    """One batch as decoded: what to plan, what to quarantine, the offsets to store."""

    consumed: list[Consumed] = field(default_factory=list)
    # id(Consumed) → its record, for quarantining it later
    raw: dict[int, Any] = field(default_factory=dict)
    dead: list[Quarantined] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    events: int = 0  # valid allocation events, with or without a message


class BatchHandler:
    def __init__(
        self,
        store: OutboxStore,
        policy: Policy,
        render: Renderer,
        clock: Clock,
        *,
        wakers: Iterable[asyncio.Event] = (),
        publish_dead_letter: PublishDeadLetter | None = None,
    ):
        self.store = store
        self.policy = policy
        self.render = render
        self.clock = clock
        self.wakers = list(wakers)
        self.publish_dead_letter = publish_dead_letter
        self.records = 0
        self.rows = 0
        self.quarantined = 0

    async def handle(self, records: Iterable[Any]) -> None:
        """Record one batch (rows, dead letters and offsets in one transaction), then publish
        its dead letters. Raises when nothing was recorded: the runtime reads the batch again."""
        records = list(records)
        # Each notice of this batch is rendered once per channel, however often it is
        # planned (a bisected batch is planned again in every trial).
        render = cache(self.render)
        batch = self._decode(records, render)
        plan = await self._store(batch, render, len(records))
        for d in batch.dead:
            with bound_record(d):  # where it was read, and its ids as far as its bytes have them
                log.warning("allocation event quarantined", kind=d.kind, reason=d.reason)
        self.records += batch.events
        self.rows += len(plan.inserts)
        self.quarantined += len(batch.dead)
        if any(row.status == "pending" for row in plan.inserts) or plan.updates:
            for waker in self.wakers:
                waker.set()
        log.debug(
            "batch recorded",
            events=batch.events,
            rows=len(plan.inserts),
            folded=len(plan.updates),
            quarantined=len(batch.dead),
        )
        await self.publish_dead_letters()

    def _decode(self, records: list[Any], render: Renderer) -> _Batch:
        batch = _Batch()
        for record in records:
            key = (record.topic, record.partition)
            batch.offsets[key] = max(batch.offsets.get(key, 0), record.offset + 1)
            try:
                event = parse_output(record.value or b"")
            except ContractError as exc:
                # The reason names fields, never values: safe to log.
                batch.dead.append(_quarantine(record, exc.kind, exc.reason))
                continue
            try:
                notice = self._notice(event, render)
            except Exception as exc:  # noqa: BLE001 - any template or data problem
                # One odd event must not stall everyone behind it: dead-letter it, visibly.
                problem = f"notifier could not render it: {type(exc).__name__}"
                batch.dead.append(_quarantine(record, RENDER_ERROR, problem))
                continue
            batch.events += 1
            if notice is not None:
                item = Consumed(notice, record.topic, record.partition, record.offset)
                batch.raw[id(item)] = record
                batch.consumed.append(item)
        return batch

    def _notice(self, event: Any, render: Renderer) -> Notice | None:
        """The event's notice, rendered for every channel now: an event that cannot be is
        found before the transaction (pure; the batch's renderer keeps the messages)."""
        notice = notice_for(event, self.policy)
        if notice is not None:
            for channel in self.policy.channels:
                render(notice, channel)
        return notice

    async def _store(self, batch: _Batch, render: Renderer, seen: int) -> Plan:
        """Record the batch; when PostgreSQL refuses some records' data, quarantine those and
        record the rest. An outage is raised as it is (the runtime backs off and reads the
        batch again); anything else as BatchFailed (no message content inside)."""
        try:
            return await self._record(batch, render)
        except Exception as exc:
            if is_transient(exc):
                raise
            if not _poison(exc):
                log.error("batch not recorded", error=_describe(exc), records=seen)
                raise BatchFailed(_describe(exc)) from None
            log.warning(
                "batch refused, looking for the records that break it",
                error=_describe(exc),
                records=seen,
            )
            refused = exc
        try:
            culprits = await self._isolate(batch.consumed, render)
            if not culprits:
                raise BatchFailed(_describe(refused))
            bad = {id(item) for item, _ in culprits}
            batch.consumed = [c for c in batch.consumed if id(c) not in bad]
            batch.events -= len(culprits)
            batch.dead += [
                _quarantine(
                    batch.raw[id(item)],
                    UNSTORABLE,
                    f"notifier could not store it: {_describe(err)}",
                )
                for item, err in culprits
            ]
            return await self._record(batch, render)
        except BatchFailed:
            log.error("batch not recorded", error=_describe(refused), records=seen)
            raise
        except Exception as again:
            if is_transient(again):
                raise
            log.error("batch not recorded", error=_describe(again), records=seen)
            raise BatchFailed(_describe(again)) from None

    async def publish_dead_letters(self) -> int:
        """Publish what is recorded but not yet on the dead-letter topic (also what a crash
        after an earlier commit left). The broker being away only delays it."""
        if self.publish_dead_letter is None:
            return 0
        published = 0
        try:
            while n := await self.store.publish_dead_letters(
                self.publish_dead_letter, self.clock.now()
            ):
                published += n
        except Exception as exc:  # noqa: BLE001 - retried after the next batch
            log.warning("dead letters not published yet", error=type(exc).__name__)
        return published

    # ------------------------------------------------------------ internals

    async def _apply(
        self, tx: OutboxTransaction, batch: list[Consumed], render: Renderer, now: datetime
    ) -> Plan:
        """Load what planning the batch needs, plan it, write the planned rows with their
        messages: all in the caller's transaction, so the held rows stay locked throughout."""
        event_ids, orders = lookups(batch)
        existing, held = await tx.load(event_ids, orders)
        plan = plan_batch(batch, existing=existing, held=held, policy=self.policy, now=now)
        await tx.write(
            [(row, render(row.notice, row.channel)) for row in plan.inserts],
            [(row, render(row.notice, row.channel)) for row in plan.updates],
            now,
        )
        return plan

    async def _record(self, batch: _Batch, render: Renderer) -> Plan:
        now = self.clock.now()
        async with self.store.transaction() as tx:
            plan = await self._apply(tx, batch.consumed, render, now)
            await tx.write_dead_letters(batch.dead, now)
            await tx.save_offsets(batch.offsets, now)
        return plan

    async def _isolate(
        self, consumed: list[Consumed], render: Renderer
    ) -> list[tuple[Consumed, Exception]]:
        """The records that fail alone with a poison error (bisecting the batch)."""
        now = self.clock.now()

        async def probe(items: list[Consumed]) -> Exception | None:
            """Plan and write `items` as a batch would, then roll back: None if they would
            go through, else the error they raise."""
            try:
                async with self.store.transaction(keep=False) as tx:
                    await self._apply(tx, items, render, now)
            except Exception as exc:  # noqa: BLE001 - classified by the caller
                return exc
            return None

        async def failing(items: list[Consumed]) -> list[tuple[Consumed, Exception]]:
            error = await probe(items)
            if error is None:
                return []
            if not _poison(error):
                raise error  # an outage or a bug: not an answer about these records
            if len(items) == 1:
                return [(items[0], error)]
            mid = len(items) // 2
            return await failing(items[:mid]) + await failing(items[mid:])

        return await failing(consumed) if consumed else []


def _quarantine(record: Any, kind: str, reason: str) -> Quarantined:
    headers = dead_letter_headers(
        reason=reason,
        kind=kind,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        stage=STAGE,
        original=record.headers,
    )
    return Quarantined(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value or b"",
        tuple(headers),
        kind,
        reason,
    )


def _describe(exc: Exception) -> str:
    # Type and SQLSTATE only: PostgreSQL's message may quote the value (a customer's data).
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} (SQLSTATE {state})" if state else type(exc).__name__


def _poison(exc: BaseException) -> bool:
    """Bad data in some record, not an outage and not a bug: SQLSTATE class 22 (asyncpg
    also raises DataError for an argument it cannot encode), or a value the planner or a
    template cannot handle."""
    if is_transient(exc):
        return False
    return isinstance(exc, (asyncpg.DataError, ValueError, ArithmeticError, TemplateError))
