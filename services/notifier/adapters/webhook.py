"""The webhook channel: an HTTP POST of the JSON body, signed.

Headers: `Idempotency-Key` is the event id (the same on every resend), and
`X-Fulfil-Signature: sha256=<hex>` is HMAC-SHA256 of the exact body bytes
with WEBHOOK_SECRET, so the receiver can check origin and integrity.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx

from services.notifier.adapters.channels import DeliveryError
from services.notifier.adapters.outbox import Claimed
from services.notifier.config import NotifierSettings

SIGNATURE_HEADER = "X-Fulfil-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Worth retrying: timeouts, conflicts with an in-flight twin, rate limits, server trouble.
_TRANSIENT = {408, 409, 425, 429}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does (used by our tests): constant-time comparison."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


class WebhookChannel:
    name = "webhook"

    def __init__(self, settings: NotifierSettings):
        self.url = settings.webhook_url or ""
        self.secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        self.timeout = settings.webhook_timeout_seconds
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
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: row.event_id,
            SIGNATURE_HEADER: sign(self.secret, body),
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
