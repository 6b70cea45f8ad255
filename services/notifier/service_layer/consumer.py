"""Consuming allocations.v1: a batch of records → outbox rows + offsets, in one transaction.

Exactly one row per (event, channel): the unique key drops re-deliveries, and
the offsets are stored with the rows, so a crash before the commit re-reads
the batch and a crash after it resumes behind it. Sending is not done here:
a slow or broken channel cannot slow consumption down.

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
from typing import Any

import asyncpg
from jinja2 import TemplateError

from fulfil_platform.consumer import is_transient
from fulfil_platform.dead_letter_writer import dead_letter_headers
from fulfil_platform.logs import bound_record, get_logger
from schemas.registry import ContractError, parse_output
from services.notifier.adapters.outbox import OutboxStore, Quarantined, Renderer
from services.notifier.domain.decide import KIND_BY_EVENT, Policy, notice_for
from services.notifier.domain.plan import Consumed, Plan, plan_batch
from services.notifier.service_layer.clock import Clock

log = get_logger("notifier.consumer")

# Publishes one quarantined record to the dead-letter topic (raises when the broker is away).
PublishDeadLetter = Callable[[Quarantined], Awaitable[None]]

STAGE = "notifier"
UNSTORABLE = "unstorable"
RENDER_ERROR = "render_error"


class BatchFailed(Exception):
    """The batch could not be recorded; it will be delivered again. No message content inside."""


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
        consumed, raw, dead, offsets = self._decode(records)
        plan, consumed, dead = await self._store(consumed, raw, dead, offsets, len(records))
        for d in dead:
            with bound_record(d):  # where it was read, and its ids as far as its bytes have them
                log.warning("allocation event quarantined", kind=d.kind, reason=d.reason)
        self.records += len(consumed)
        self.rows += len(plan.inserts)
        self.quarantined += len(dead)
        if any(row.status == "pending" for row in plan.inserts) or plan.updates:
            for waker in self.wakers:
                waker.set()
        log.debug(
            "batch recorded",
            events=len(consumed),
            rows=len(plan.inserts),
            folded=len(plan.updates),
            quarantined=len(dead),
        )
        await self.publish_dead_letters()

    def _decode(
        self, records: list[Any]
    ) -> tuple[list[Consumed], dict[int, Any], list[Quarantined], dict[tuple[str, int], int]]:
        consumed: list[Consumed] = []
        raw: dict[int, Any] = {}  # id(Consumed) → its record, for quarantining it later
        dead: list[Quarantined] = []
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            offsets[key] = max(offsets.get(key, 0), record.offset + 1)
            try:
                event = parse_output(record.value or b"")
            except ContractError as exc:
                # The reason names fields, never values: safe to log.
                dead.append(_quarantine(record, exc.kind, exc.reason))
                continue
            problem = self._unrenderable(event)
            if problem is not None:
                # One odd event must not stall everyone behind it: dead-letter it, visibly.
                dead.append(
                    _quarantine(record, RENDER_ERROR, f"notifier could not render it: {problem}")
                )
                continue
            item = Consumed(event, record.topic, record.partition, record.offset)
            raw[id(item)] = record
            consumed.append(item)
        return consumed, raw, dead, offsets

    async def _store(
        self,
        consumed: list[Consumed],
        raw: dict[int, Any],
        dead: list[Quarantined],
        offsets: dict[tuple[str, int], int],
        seen: int,
    ) -> tuple[Plan, list[Consumed], list[Quarantined]]:
        """Record the batch; when PostgreSQL refuses some records' data, quarantine those and
        record the rest. An outage is raised as it is (the runtime backs off and reads the
        batch again); anything else as BatchFailed (no message content inside)."""
        try:
            return await self._record(consumed, offsets, dead), consumed, dead
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
            culprits = await self._isolate(consumed)
            if not culprits:
                raise BatchFailed(_describe(refused))
            bad = {id(item) for item, _ in culprits}
            consumed = [c for c in consumed if id(c) not in bad]
            dead = dead + [
                _quarantine(
                    raw[id(item)], UNSTORABLE, f"notifier could not store it: {_describe(err)}"
                )
                for item, err in culprits
            ]
            return await self._record(consumed, offsets, dead), consumed, dead
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

    def _planner(self, consumed: list[Consumed], now: Any) -> Callable[..., Plan]:
        return lambda existing, held: plan_batch(
            consumed, existing=existing, held=held, policy=self.policy, now=now
        )

    @staticmethod
    def _keys(consumed: list[Consumed]) -> tuple[list[str], set[tuple[str, str]]]:
        relevant = [c for c in consumed if c.event.type in KIND_BY_EVENT]  # type: ignore[attr-defined]
        event_ids = [c.event.id for c in relevant]  # type: ignore[attr-defined]
        order_keys = {(c.event.data.warehouse_id, c.event.data.order_id) for c in relevant}  # type: ignore[attr-defined]
        return event_ids, order_keys

    async def _record(
        self, consumed: list[Consumed], offsets: dict[tuple[str, int], int], dead: list[Quarantined]
    ) -> Plan:
        event_ids, order_keys = self._keys(consumed)
        now = self.clock.now()
        return await self.store.record(
            event_ids=event_ids,
            order_keys=order_keys,
            planner=self._planner(consumed, now),
            render=self.render,
            offsets=offsets,
            now=now,
            dead_letters=dead,
        )

    async def _isolate(self, consumed: list[Consumed]) -> list[tuple[Consumed, Exception]]:
        """The records that fail alone with a poison error (bisecting the batch)."""
        now = self.clock.now()

        async def probe(items: list[Consumed]) -> Exception | None:
            event_ids, order_keys = self._keys(items)
            return await self.store.probe(
                event_ids=event_ids,
                order_keys=order_keys,
                planner=self._planner(items, now),
                render=self.render,
                now=now,
            )

        async def failing(items: list[Consumed]) -> list[tuple[Consumed, Exception]]:
            error = await probe(items)
            if error is None:
                return []
            if not _poison(error):
                raise error
            if len(items) == 1:
                return [(items[0], error)]
            mid = len(items) // 2
            return await failing(items[:mid]) + await failing(items[mid:])

        return await failing(consumed) if consumed else []

    def _unrenderable(self, event: Any) -> str | None:
        """Render the event's messages once up front (pure; warms the render cache)."""
        try:
            notice = notice_for(event, self.policy)
            if notice is not None:
                for channel in self.policy.channels:
                    self.render(notice, channel)
        except Exception as exc:  # noqa: BLE001 - any template or data problem
            return type(exc).__name__
        return None


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
