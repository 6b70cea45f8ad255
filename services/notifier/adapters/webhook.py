"""The webhook channel: an HTTP POST of the JSON body, signed the Standard Webhooks way.

Headers (https://www.standardwebhooks.com): `webhook-id` (derived from the
event id, the same on every resend, so receivers deduplicate by it),
`webhook-timestamp` (Unix seconds of this attempt, from the service's clock)
and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
Signing the id and the time as well as the body lets a receiver refuse a
captured request replayed later (outside its tolerance) or under another id.
The signature comes from the `standardwebhooks` library (`Webhook.sign`).

WEBHOOK_SECRET: see config.secret_key.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime

import httpx
from standardwebhooks.webhooks import Webhook

from services.notifier.adapters.channels import DeliveryError
from services.notifier.adapters.outbox import Claimed
from services.notifier.config import NotifierSettings, secret_key

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
# Kept for receivers that deduplicate by it: the same value as webhook-id.
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Worth retrying: timeouts, conflicts with an in-flight twin, rate limits, server trouble.
_TRANSIENT = {408, 409, 425, 429}
# The id is part of the signed "{id}.{timestamp}.{body}": no dots, nothing a header cannot carry.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_ID_NAMESPACE = uuid.UUID("0b6c1d8e-3f55-4a0e-9d8b-6a4f6f1c2e71")


def webhook_id(event_id: str) -> str:
    """The `webhook-id` of an event's webhook: the event id itself when it is header- and
    signature-safe, else a UUID derived from it (still stable across resends)."""
    return event_id if _SAFE_ID.match(event_id) else str(uuid.uuid5(_ID_NAMESPACE, event_id))


def signed_headers(key: bytes, event_id: str, body: bytes, now: datetime) -> dict[str, str]:
    wid = webhook_id(event_id)
    timestamp = int(now.timestamp())
    return {
        ID_HEADER: wid,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: Webhook(key).sign(wid, now, body),
    }


class WebhookChannel:
    name = "webhook"

    def __init__(self, settings: NotifierSettings, now: Callable[[], datetime]):
        self.url = settings.webhook_url or ""
        self.key = secret_key(
            settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        )
        self.timeout = settings.webhook_timeout_seconds
        # The service layer's clock: each attempt is signed with the time it is made.
        self.now = now
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def send(self, row: Claimed) -> None:
        assert self.client is not None, "start() first"
        body = (row.body_json or "{}").encode()
        signed = signed_headers(self.key, row.event_id, body, self.now())
        headers = {
            "Content-Type": "application/json",
            **signed,
            IDEMPOTENCY_HEADER: signed[ID_HEADER],
            "X-Fulfil-Event-Type": row.event_type,
            "User-Agent": "fulfil-notifier/1",
        }
        try:
            response = await self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook unavailable: {type(exc).__name__}") from None
        if response.is_success:
            return
        status = response.status_code
        transient = status in _TRANSIENT or status >= 500
        raise DeliveryError(f"webhook answered HTTP {status}", permanent=not transient)
