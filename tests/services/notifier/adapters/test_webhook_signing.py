"""Webhooks are signed over id + timestamp + body (Standard Webhooks), so a captured request
cannot be replayed later or under another id (issue 12, defect 14a).

The oracle is the spec written out in conftest.standard_webhook_valid, and the
`standardwebhooks` library's own verifier; the channel signs through real HTTP.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from fulfil_platform.config import ConfigError
from services.notifier.adapters.channels import DeliveryError
from services.notifier.adapters.outbox import Claimed
from services.notifier.adapters.webhook import WebhookChannel
from tests.services.notifier.conftest import (
    TOLERANCE_SECONDS,
    WEBHOOK_SECRET,
    FakeClock,
    notifier_settings_for,
    standard_webhook_valid,
)

WHSEC = "whsec_" + base64.b64encode(b"a 24-byte key for tests!").decode()


def _row(event_id: str = "3f2a8c4e-1b7d-4e8a-9c55-0d6f2e1a7b90") -> Claimed:
    now = datetime.now(UTC)
    return Claimed(
        id=1,
        event_id=event_id,
        channel="webhook",
        kind="backordered",
        event_type="Backordered",
        order_id="ord-1",
        message_id=f"<{event_id}.webhook@fulfil>",
        recipient=None,
        subject="s",
        body_text=None,
        body_html=None,
        body_json='{"notification_id": "x", "order_id": "ord-1"}',
        attempts=1,
        created_at=now,
    )


async def _send(settings: Any, clock: FakeClock, row: Claimed) -> None:
    channel = WebhookChannel(settings, clock.now)
    await channel.start()
    try:
        await channel.send(row)
    finally:
        await channel.close()


@pytest.mark.parametrize("secret", [WEBHOOK_SECRET, WHSEC], ids=["raw-secret", "whsec-secret"])
async def test_a_signed_request_verifies_and_tampering_or_a_late_replay_is_refused(
    settings, test_database, webhook_receiver, secret
) -> None:
    webhook_receiver.secret = secret
    notifier = notifier_settings_for(
        settings, test_database, webhook_url=webhook_receiver.url, webhook_secret=secret
    )
    clock = FakeClock(datetime.now(UTC))
    row = _row()
    await _send(notifier, clock, row)
    (hook,) = webhook_receiver.received()
    assert hook.verified, "a fresh, untouched request verifies"
    headers, body = hook.headers, hook.body
    assert headers["webhook-id"] == row.event_id, (
        "the webhook id is the event id (the receiver's dedup key)"
    )
    assert headers["webhook-timestamp"] == str(int(clock.now().timestamp())), (
        "signed at the service clock's time"
    )
    assert headers["webhook-signature"].startswith("v1,")

    # The library's verifier (5 minutes tolerance, its own clock) agrees; it reads raw secrets as bytes.
    library = Webhook(secret if secret.startswith("whsec_") else secret.encode())
    library.verify(body, headers)

    stamp = int(headers["webhook-timestamp"])
    tampered = [
        ({**headers}, body.replace(b"ord-1", b"ord-2")),  # another body
        ({**headers, "webhook-id": "another-event"}, body),  # another id
        ({**headers, "webhook-timestamp": str(stamp + 60)}, body),  # a re-dated copy
    ]
    for bad_headers, bad_body in tampered:
        assert not standard_webhook_valid(secret, bad_headers, bad_body)
        with pytest.raises(WebhookVerificationError):
            library.verify(bad_body, bad_headers)
    # A captured request replayed outside the tolerance is refused...
    assert not standard_webhook_valid(secret, headers, body, now=stamp + TOLERANCE_SECONDS + 1)
    assert standard_webhook_valid(secret, headers, body, now=stamp + TOLERANCE_SECONDS - 1)


async def test_each_attempt_is_signed_at_its_own_time_with_the_same_id(
    settings, test_database, webhook_receiver
) -> None:
    notifier = notifier_settings_for(
        settings, test_database, webhook_url=webhook_receiver.url, webhook_secret=WEBHOOK_SECRET
    )
    # ...and a request signed 10 minutes ago (what a replay looks like to the receiver) is refused by it.
    clock = FakeClock(datetime.now(UTC) - timedelta(minutes=10))
    row = _row("ord-1.event/with dots")  # not header-safe: the id is derived from it, stably
    with pytest.raises(DeliveryError, match="HTTP 401"):
        await _send(notifier, clock, row)
    clock.current = datetime.now(UTC)
    await _send(notifier, clock, row)
    late, fresh = webhook_receiver.received()
    assert not late.verified and fresh.verified
    assert late.headers["webhook-id"] == fresh.headers["webhook-id"] != row.event_id
    assert "." not in fresh.headers["webhook-id"]
    assert int(fresh.headers["webhook-timestamp"]) - int(late.headers["webhook-timestamp"]) >= 599


def test_a_malformed_whsec_secret_is_one_config_line(settings, test_database) -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET: a whsec_ secret must not be empty"):
        notifier_settings_for(
            settings, test_database, webhook_url="http://127.0.0.1:9/x", webhook_secret="whsec_"
        )
