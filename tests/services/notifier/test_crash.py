"""SIGKILL `python -m fulfil notifier` mid-stream, again and again: nothing lost, nothing doubled in the outbox."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

from fulfil_platform import kafka
from tests.builders import allocations as b
from tests.kafka_helpers import publish, wait_for
from tests.services.notifier.conftest import WEBHOOK_SECRET, notifier_settings_for
from tests.services.notifier.helpers import assert_no_pii, outbox

ORDERS = int(os.environ.get("NOTIFIER_CRASH_ORDERS", 300))
KILLS = int(os.environ.get("NOTIFIER_CRASH_KILLS", 4))
SEED = int(os.environ.get("NOTIFIER_CRASH_SEED", 11))


def _stream(orders: int) -> list:
    """Realistic order histories; each ETA change is its order's last event, so nothing folds."""
    events = []
    for n in range(orders):
        cust = b.customer(n, locale="de" if n % 3 == 0 else "en")
        order = f"ord-{n}"
        wh = {"warehouse": f"wh-{n % 4}"}  # spread over the partitions
        kind = n % 5
        if kind == 0:
            events.append(b.order_allocated(order, cust, **wh))
        elif kind == 1:
            events.append(b.backordered(order, cust, **wh))
            events.append(
                b.eta_changed(
                    order,
                    cust,
                    lines=[
                        b.line(
                            1, "SKU-9", 2, backordered=2, eta=date(2026, 5, 4), previous_eta=None
                        )
                    ],
                    **wh,
                )
            )
        elif kind == 2:
            events.append(b.partially_shipped(order, cust, **wh))
            events.append(b.backorder_allocated(order, cust, **wh))
        elif kind == 3:
            events.append(b.backordered(order, cust, **wh))
            events.append(
                b.cancellation_processed(
                    order, cust, lines=[b.line(1, "SKU-9", 2, cancelled=2)], **wh
                )
            )
        else:
            events.append(b.order_rejected(order, cust, **wh))
        if n % 10 == 0:
            events.append(b.stock_position(f"SKU-{n}"))
    return events


def _start(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open(
        "ab"
    ) as output:  # our logs (stderr) and FastStream's (stdout): all checked for PII
        return subprocess.Popen(
            [sys.executable, "-m", "fulfil", "notifier"], env=env, stdout=output, stderr=output
        )


async def test_sigkill_mid_stream_sends_every_message_once_per_channel(
    settings, test_database, smtp_server, webhook_receiver, env_for_subprocess, tmp_path
) -> None:
    rng = random.Random(SEED)
    notifier = notifier_settings_for(
        settings,
        test_database,
        smtp_url=smtp_server.url,
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
        fulfil_notifier_lease_seconds=2.0,
        fulfil_notifier_concurrency=4,
        fulfil_notifier_batch_size=50,
        fulfil_log_level="DEBUG",
    )
    await kafka.create_topics(notifier)
    events = _stream(ORDERS)
    await publish(notifier, events)
    expected = {e.id for e in events if e.type != "StockPositionChanged"}
    env = env_for_subprocess(notifier)
    log = tmp_path / "notifier.log"

    def delivered() -> int:
        return len(smtp_server.mails) + len(webhook_receiver.received())

    process = None
    kills = 0
    try:
        while kills < KILLS:
            process = _start(env, log)
            if kills == 0:
                # The first kill lands while the first batches are being recorded.
                async def recording(process=process):
                    return process.poll() is not None or bool(await outbox(notifier))

                await wait_for(recording, timeout=90, interval=0.02, what="the first outbox rows")
            else:
                # Then: deep into sending, at random depths.
                target = min(delivered() + rng.choice([1, 20, 60, 150]), 2 * len(expected) - 1)

                async def reached_or_exited(target=target, process=process):
                    return process.poll() is not None or delivered() >= target

                await wait_for(
                    reached_or_exited,
                    timeout=90,
                    what=f"{target} deliveries before kill {kills + 1}",
                )
            assert process.poll() is None, log.read_text()[-3000:]
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            kills += 1

        process = _start(env, log)

        async def all_sent():
            if process.poll() is not None:
                raise AssertionError(log.read_text()[-3000:])
            rows = await outbox(notifier)
            return len(rows) == 2 * len(expected) and all(r["status"] == "sent" for r in rows)

        await wait_for(
            all_sent, timeout=120, interval=0.5, what="every message sent after the last restart"
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "graceful stop must exit 0"
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    rows = await outbox(notifier)
    per_event = defaultdict(list)
    for row in rows:
        per_event[row["event_id"]].append(row["channel"])
    assert set(per_event) == expected
    assert all(sorted(channels) == ["email", "webhook"] for channels in per_event.values())
    assert {r["status"] for r in rows} == {"sent"}

    # On the wire: every message arrived; a resend after a kill is the same message.
    mails = defaultdict(list)
    for mail in smtp_server.mails:
        mails[mail.message_id].append(mail)
    assert set(mails) == {f"<{event_id}.email@fulfil>" for event_id in expected}
    for copies in mails.values():
        assert len({(m.subject, m.text, m.html, m.to) for m in copies}) == 1
    hooks = defaultdict(list)
    for hook in webhook_receiver.received():
        hooks[hook.idempotency_key].append(hook)
    assert set(hooks) == expected
    for copies in hooks.values():
        assert len({h.body for h in copies}) == 1 and all(h.verified for h in copies)
    assert kills == KILLS
    assert sum(len(c) for c in mails.values()) >= len(
        expected
    )  # (resends after a kill are allowed)

    text = log.read_text()
    assert "notifier started" in text and "notifier stopped" in text
    assert_no_pii(text, "Customer Number")
