"""The notifier on the shared consumer runtime, under PostgreSQL faults (issue 12).

- `pg_ctl restart -m immediate` while batches are being recorded: every
  message is in the outbox exactly once per channel and reaches the wire
  (a resend after the restart is the same message).
- PostgreSQL is away when partitions are (re)assigned: the stored offsets
  cannot be read, so nothing is consumed for those partitions, /readyz says
  `partitions not recovered`, and recovery is retried with backoff until the
  database is back; then everything is sent once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from fulfil import embedded
from fulfil_platform import kafka
from fulfil_platform.metrics import Health
from services.notifier.entrypoints.app import group_id, run_notifier
from tests.builders import allocations as b
from tests.faults.chaos import Postgres, private_postgres
from tests.kafka_helpers import publish, wait_for
from tests.services.notifier.conftest import WEBHOOK_SECRET, notifier_settings_for
from tests.services.notifier.helpers import running_notifier


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL of this test's own: restarting it must not disturb other tests."""
    with private_postgres() as postgres:
        yield postgres


def _events(prefix: str, n: int) -> list[Any]:
    return [
        b.order_allocated(f"{prefix}-{i}", b.customer(i), warehouse=f"wh-{i % 4}") for i in range(n)
    ]


async def _rows(url: str) -> list[dict[str, Any]]:
    """The outbox, or [] while PostgreSQL is away."""
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return []
    try:
        return [
            dict(r)
            for r in await conn.fetch("SELECT event_id, channel, status FROM notifier_outbox")
        ]
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return []
    finally:
        await conn.close()


async def _open_transaction(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()"
                " AND datname = current_database()"
            )
        )
    finally:
        await conn.close()


def _assert_once_per_channel(
    rows: list[dict[str, Any]], events: list[Any], smtp_server: Any, webhook_receiver: Any
) -> None:
    expected = {e.id for e in events}
    per_event = defaultdict(list)
    for row in rows:
        per_event[row["event_id"]].append(row["channel"])
    assert set(per_event) == expected
    assert all(sorted(channels) == ["email", "webhook"] for channels in per_event.values())
    assert {r["status"] for r in rows} == {"sent"}
    mails = defaultdict(set)
    for mail in smtp_server.mails:
        mails[mail.message_id].add((mail.subject, mail.text, mail.to))
    assert set(mails) == {f"<{i}.email@fulfil>" for i in expected}
    assert all(len(copies) == 1 for copies in mails.values()), "a resend is the same message"
    hooks = defaultdict(set)
    for hook in webhook_receiver.received():
        assert hook.verified
        hooks[hook.idempotency_key].add(hook.body)
    assert set(hooks) == expected
    assert all(len(copies) == 1 for copies in hooks.values())


async def test_postgres_restart_mid_batch_sends_every_message_once_per_channel(
    settings, own_postgres, smtp_server, webhook_receiver
) -> None:
    pg = own_postgres
    notifier = notifier_settings_for(
        settings,
        pg.url,
        smtp_url=smtp_server.url,
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
        fulfil_notifier_batch_size=10,
        fulfil_notifier_lease_seconds=2.0,
    )
    await kafka.create_topics(notifier)
    events = _events("ord", 300)
    await publish(notifier, events[:150])
    health = Health()
    async with running_notifier(notifier, health=health) as task:
        for restart, more in enumerate((events[150:], [])):

            async def recording(after: int = restart) -> bool:
                assert not task.done(), task
                return len(await _rows(pg.url)) > after and await _open_transaction(pg.url)

            await wait_for(
                recording,
                timeout=90,
                interval=0.01,
                what=f"a batch in flight before restart {restart + 1}",
            )
            await asyncio.to_thread(pg.restart_immediate)
            await publish(notifier, more)

        async def all_sent() -> bool:
            assert not task.done(), task
            rows = await _rows(pg.url)
            return len(rows) == 2 * len(events) and all(r["status"] == "sent" for r in rows)

        await wait_for(
            all_sent, timeout=120, interval=0.3, what="every message sent after the restarts"
        )
        await wait_for(lambda: _ready(health), timeout=30, what="/readyz ready again")
    _assert_once_per_channel(await _rows(pg.url), events, smtp_server, webhook_receiver)


async def _start_again(pg: Postgres) -> None:
    """Start the stopped PostgreSQL on its data directory and port."""
    pg.handle = await asyncio.to_thread(
        embedded.start_postgres,
        pg.handle.data_dir,
        port=pg.handle.port,
        log_path=pg.handle.log_path,
    )


async def _ready(health: Health) -> bool:
    return health.readiness()[0]


async def _rebalance(settings: Any) -> None:
    """Another member joins the notifier's group and leaves again: every partition is revoked
    and assigned anew, so the notifier must recover its positions."""
    member = kafka.consumer(settings, settings.topic("allocations.v1"), group_id=group_id(settings))
    await member.start()
    try:

        async def joined() -> bool:
            await member.getmany(timeout_ms=100)
            return bool(member.assignment())

        await wait_for(
            joined, timeout=60, interval=0.05, what="the second member to get partitions"
        )
    finally:
        await member.stop()


async def test_a_failed_recovery_is_not_ready_and_retried_until_postgres_is_back(
    settings, own_postgres, smtp_server, webhook_receiver, captured_logs
) -> None:
    pg = own_postgres
    notifier = notifier_settings_for(
        settings,
        pg.url,
        smtp_url=smtp_server.url,
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
    )
    await kafka.create_topics(notifier)
    first, second = _events("first", 12), _events("second", 12)
    await publish(notifier, first)
    health = Health()
    async with running_notifier(notifier, health=health) as task:

        async def sent(n: int) -> bool:
            assert not task.done(), task
            rows = await _rows(pg.url)
            return len(rows) == 2 * n and all(r["status"] == "sent" for r in rows)

        await wait_for(lambda: sent(len(first)), timeout=60, what="the first messages")
        await asyncio.to_thread(embedded.stop_postgres, pg.handle)
        await publish(notifier, second)
        await _rebalance(notifier)

        async def not_recovered() -> str | None:
            assert not task.done(), task
            ok, report = health.readiness()
            reason = report["notifier"]["reason"] or ""
            retries = captured_logs.getvalue().count("partition recovery failed; retrying")
            return (
                reason if not ok and "partitions not recovered" in reason and retries >= 3 else None
            )

        await wait_for(
            not_recovered,
            timeout=60,
            interval=0.05,
            what="/readyz naming the unrecovered partitions",
        )
        await _start_again(pg)
        await wait_for(
            lambda: sent(len(first) + len(second)),
            timeout=90,
            what="the messages behind the outage",
        )
        await wait_for(lambda: _ready(health), timeout=30, what="/readyz ready again")
    _assert_once_per_channel(await _rows(pg.url), first + second, smtp_server, webhook_receiver)


async def test_started_while_postgres_is_down_it_waits_and_then_sends(
    settings, own_postgres, smtp_server, webhook_receiver, captured_logs
) -> None:
    """A notifier (re)started by its orchestrator while PostgreSQL restarts must wait for
    it, not exit 1: an exit loop stalls every message behind the orchestrator's back-off."""
    pg = own_postgres
    notifier = notifier_settings_for(
        settings,
        pg.url,
        smtp_url=smtp_server.url,
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
    )
    await kafka.create_topics(notifier)
    events = _events("late-db", 8)
    await publish(notifier, events)
    await asyncio.to_thread(embedded.stop_postgres, pg.handle)
    stop = asyncio.Event()
    task = asyncio.create_task(run_notifier(notifier, stop, handle_signals=False, health=Health()))
    try:

        async def retried() -> bool:
            assert not task.done(), task
            return captured_logs.getvalue().count("notifier start failed; retrying") >= 2

        await wait_for(
            retried,
            timeout=60,
            interval=0.05,
            what="the start to be retried while PostgreSQL is down",
        )
        await _start_again(pg)

        async def sent() -> bool:
            assert not task.done(), task
            rows = await _rows(pg.url)
            return len(rows) == 2 * len(events) and all(r["status"] == "sent" for r in rows)

        await wait_for(sent, timeout=90, what="the messages once PostgreSQL is back")
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    _assert_once_per_channel(await _rows(pg.url), events, smtp_server, webhook_receiver)
