"""Pure planning of one consumed batch against the outbox: which rows to add or change.

The service layer decides each event's notice once (`Consumed`), loads what
`lookups` names (keys already present, the held ETA notices of the batch's
orders), `plan_batch` decides, and the planned rows are rendered and written
with the offsets in the same transaction. Events are applied in log order,
and rows created earlier in the same batch take part in folding, so a batch
gives the same outbox as the same events one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.notifier.domain.decide import Policy, fold, outgoing
from services.notifier.domain.model import ETA_CHANGED, Notice

Key = tuple[str, str]  # (event_id, channel)
OrderKey = tuple[str, str, str]  # (warehouse_id, order_id, channel)

NOTHING_NEW = "nothing new for the customer after folding"


@dataclass
class Row:
    """An outbox row as the plan sees it. `row_id` None = not in the database yet."""

    channel: str
    notice: Notice
    due: datetime
    status: str = "pending"
    row_id: int | None = None
    superseded_by: str | None = None
    note: str | None = None
    source: tuple[str, int, int] | None = None  # (topic, partition, offset)
    changed: bool = False  # an existing row whose notice or status changed


@dataclass
class Plan:
    inserts: list[Row] = field(default_factory=list)
    updates: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class Consumed:
    """An allocation event's notice (decide.notice_for) and where the event was read."""

    notice: Notice
    topic: str
    partition: int
    offset: int


def lookups(batch: list[Consumed]) -> tuple[list[str], set[tuple[str, str]]]:
    """What planning `batch` needs from the outbox: the keys of its events (event ids)
    and the held notices of its orders ((warehouse_id, order_id)); a back-in-stock
    notice is about no order, so nothing is held for it."""
    event_ids = [item.notice.source_id for item in batch]
    orders = {
        (item.notice.warehouse_id, item.notice.order_id)
        for item in batch
        if item.notice.order_id is not None
    }
    return event_ids, orders


def plan_batch(
    batch: list[Consumed],
    *,
    existing: set[Key],
    held: dict[OrderKey, list[Row]],
    policy: Policy,
    now: datetime,
) -> Plan:
    """Fold a batch of events into outbox rows (see decide.py for the anti-spam rule).

    `existing`: (event_id, channel) keys already in the outbox (re-delivered
    events are skipped). `held`: the unsent, never attempted ETA notices of
    the batch's orders, oldest first. Both are updated in place.
    """
    plan = Plan()
    loaded = [row for rows in held.values() for row in rows]
    for item in batch:
        notice = item.notice
        for decision in outgoing(notice, policy):
            key = (notice.source_id, decision.channel)
            if key in existing:
                continue  # already recorded by an earlier delivery of this event
            existing.add(key)
            # A notice about no order (back in stock) folds with nothing.
            rows = (
                held.setdefault((notice.warehouse_id, notice.order_id, decision.channel), [])
                if notice.order_id is not None
                else []
            )
            current, due = _fold_into(rows, notice, now + timedelta(seconds=decision.hold_seconds))
            new = Row(
                channel=decision.channel,
                notice=current or notice,
                due=due,
                source=(item.topic, item.partition, item.offset),
            )
            if current is None:
                new.status, new.note = "superseded", NOTHING_NEW
            elif current.kind == ETA_CHANGED:
                rows.append(new)
            plan.inserts.append(new)
    plan.updates = [row for row in loaded if row.changed]
    return plan


def _fold_into(rows: list[Row], notice: Notice, due: datetime) -> tuple[Notice | None, datetime]:
    """Fold `notice` with the held rows of its order and channel, oldest first: what is
    left of it to send (None: nothing), and when it is due. Held rows it supersedes
    leave `rows`; every held row it changes is marked `changed`."""
    current: Notice | None = notice
    for row in list(rows):
        if current is None:  # folded completely into a held notice
            break
        was = row.notice
        new_held, current = fold(was, current)
        if new_held is None:
            row.status, row.superseded_by, row.changed = "superseded", notice.source_id, True
            row.note = "folded into a later message"
            rows.remove(row)
            if notice.kind == ETA_CHANGED:
                # The burst keeps the first notice's send time: later changes
                # within the window never postpone the message.
                due = min(due, row.due)
        elif new_held != was:
            row.notice, row.changed = new_held, True
    return current, due
