"""What is read twice changes nothing: a dead letter is published once, a resent output
is sent once (issue 12, defects 14c and 8)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from fulfil_platform import kafka
from schemas.registry import ALLOCATIONS, DLQ_SUFFIX
from services.notifier.entrypoints.app import NOTIFIER_GROUP
from tests.builders import allocations as b
from tests.kafka_helpers import publish, read_topic, wait_for
from tests.services.notifier.conftest import WEBHOOK_SECRET, notifier_settings_for
from tests.services.notifier.helpers import outbox, running_notifier


def _start(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "fulfil", "notifier"], env=env, stdout=output, stderr=output
        )


async def _dead_letters(settings: Any, value: bytes) -> int:
    # Both the notifier's own topic and the one it used before: a copy anywhere counts.
    found = 0
    for topic in (NOTIFIER_GROUP + DLQ_SUFFIX, ALLOCATIONS + DLQ_SUFFIX):
        found += sum(
            r.value == value for rs in (await read_topic(settings, topic)).values() for r in rs
        )
    return found


async def test_a_dead_letter_is_published_once_when_its_batch_is_read_again_after_a_crash(
    settings, test_database, smtp_server, webhook_receiver, env_for_subprocess, tmp_path
) -> None:
    notifier = notifier_settings_for(
        settings,
        test_database,
        smtp_url=smtp_server.url,
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
    )
    await kafka.create_topics(notifier)
    env = env_for_subprocess(notifier)
    log = tmp_path / "notifier.log"
    first, second = (
        b.order_allocated("ord-1", b.customer(1)),
        b.order_allocated("ord-2", b.customer(2)),
    )
    bad = b'{"id": "broken'
    blocker = await asyncpg.connect(test_database)
    process = _start(env, log)
    try:
        await publish(notifier, [first])

        async def sent(event_id: str) -> bool:
            if process.poll() is not None:
                raise AssertionError(log.read_text()[-3000:])
            return any(
                r["event_id"] == event_id and r["status"] == "sent" for r in await outbox(notifier)
            )

        await wait_for(
            lambda: sent(first.id), timeout=90, what="the first message (notifier running)"
        )

        # Hold the offsets table: the next batch gets as far as its offsets, never commits.
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE notifier_offsets IN ACCESS EXCLUSIVE MODE")
        await publish(notifier, [bad], topic=ALLOCATIONS)
        await publish(notifier, [second])

        async def batch_waiting() -> bool:
            return bool(
                await blocker.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    " AND datname = current_database()"
                )
            )

        await wait_for(
            batch_waiting, timeout=60, what="the batch with the bad record waiting on its commit"
        )
        process.send_signal(signal.SIGKILL)  # the crash: the batch never commits
        process.wait(timeout=30)
        await locked.rollback()

        process = _start(env, log)  # reads the batch again
        await wait_for(
            lambda: sent(second.id), timeout=90, what="the message behind the bad record"
        )
        await wait_for(lambda: _dead_letters(notifier, bad), timeout=30, what="the dead letter")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await blocker.close()
    assert await _dead_letters(notifier, bad) == 1, (
        "dead-lettered once, though its batch was read twice"
    )


async def test_a_resent_batch_sends_each_message_once_per_channel(
    notifier_settings, smtp_server, webhook_receiver
) -> None:
    settings = notifier_settings
    await kafka.create_topics(settings)
    events = [
        b.order_allocated(f"ord-{n}", b.customer(n), warehouse=f"wh-{n % 3}") for n in range(6)
    ]
    events += [b.backordered(f"ord-b{n}", b.customer(n)) for n in range(3)]
    await publish(settings, events)
    async with running_notifier(settings):

        async def all_sent(n: int) -> bool:
            rows = await outbox(settings, status="sent")
            return len(rows) == 2 * n

        await wait_for(
            lambda: all_sent(len(events)), timeout=60, what="every message of the first delivery"
        )
        # The producer resends after a lost response: the same outputs again, at new offsets.
        marker = b.order_allocated("ord-marker", b.customer(99))
        await publish(settings, [*events, marker])
        await wait_for(
            lambda: all_sent(len(events) + 1),
            timeout=60,
            what="the message behind the resent batch",
        )
        await wait_for(
            lambda: _true(len(webhook_receiver.received()) >= len(events) + 1), timeout=30
        )
    mails = Counter(m.message_id for m in smtp_server.mails)
    hooks = Counter(h.idempotency_key for h in webhook_receiver.received())
    assert mails == Counter(f"<{e.id}.email@fulfil>" for e in [*events, marker])
    assert hooks == Counter(e.id for e in [*events, marker])


async def _true(value: bool) -> bool:
    return value
