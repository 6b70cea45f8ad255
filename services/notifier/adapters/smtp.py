"""The email channel: aiosmtplib, one SMTP session per message.

The Message-ID comes from the outbox row (derived from the event id), so a
message sent again after a crash carries the same Message-ID and receiving
systems can drop the duplicate. The Date header is the row's creation time,
so a resend is byte-identical apart from transport headers.

Connection: `smtp://` (plain, upgraded with SMTP_STARTTLS=true) or `smtps://`
(implicit TLS, port 465 unless given). TLS always verifies the server's
certificate and host name, against SMTP_SSL_CAFILE when set. AUTH uses
SMTP_USERNAME / SMTP_PASSWORD, else the credentials written in SMTP_URL
(NotifierSettings.smtp_credentials).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import urlsplit

import aiosmtplib

from services.notifier.adapters.channels import DeliveryError
from services.notifier.adapters.outbox import Claimed
from services.notifier.config import NotifierSettings


def build_message(row: Claimed, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row.recipient or ""
    message["Subject"] = row.subject or ""
    message["Message-ID"] = row.message_id
    message["Date"] = format_datetime(row.created_at)
    # Transactional mail: no auto-replies (out-of-office) back to the shop.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(row.body_text or "")
    if row.body_html:
        message.add_alternative(row.body_html, subtype="html")
    return message


class EmailChannel:
    name = "email"

    def __init__(self, settings: NotifierSettings):
        url = urlsplit(settings.smtp_url or "")
        self.implicit_tls = url.scheme == "smtps"
        self.hostname = url.hostname or "localhost"
        self.port = url.port or (465 if self.implicit_tls else 25)
        self.starttls = settings.smtp_starttls
        self.username, self.password = settings.smtp_credentials()
        self.tls_context = settings.smtp_tls_context()
        self.timeout = settings.smtp_timeout_seconds
        self.sender = settings.smtp_from

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, row: Claimed) -> None:
        if not row.recipient:
            raise DeliveryError("no recipient address", permanent=True)
        try:
            message = build_message(row, self.sender)
        except (ValueError, TypeError) as exc:  # a header the email library refuses: no retry helps
            raise DeliveryError(
                f"message could not be built: {type(exc).__name__}", permanent=True
            ) from None
        try:
            await aiosmtplib.send(
                message,
                hostname=self.hostname,
                port=self.port,
                use_tls=self.implicit_tls,
                start_tls=self.starttls if not self.implicit_tls else False,
                username=self.username,
                password=self.password,
                tls_context=self.tls_context,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            # The channel's credentials, not this message: retried with backoff like an
            # outage, so mail written while the password is being fixed is not lost.
            raise DeliveryError(f"SMTP authentication failed ({exc.code})") from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise DeliveryError(
                f"SMTP recipient refused ({', '.join(map(str, codes))})",
                permanent=all(code >= 500 for code in codes),
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is the server's final answer for this message; 4xx means try later.
            raise DeliveryError(
                f"SMTP {exc.code}: {exc.message}", permanent=exc.code >= 500
            ) from None
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP unavailable: {type(exc).__name__}") from None
