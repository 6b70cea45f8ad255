"""Fixtures for the notifier: a real SMTP server (aiosmtpd) and a real HTTP receiver on loopback.

Both record what arrives so tests can check content, Message-IDs,
Idempotency-Keys and signatures. Both are always stopped.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller

from fulfil import embedded
from fulfil_platform.config import Settings
from fulfil_platform.logs import configure_logging
from services.notifier.config import NotifierSettings, load_notifier_settings

WEBHOOK_SECRET = "test-webhook-secret"
# What a receiver allows between the signed timestamp and its own clock (Standard Webhooks: 5 minutes).
TOLERANCE_SECONDS = 300


def standard_webhook_valid(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> bool:
    """A receiver's check, written here from the Standard Webhooks spec (not from our code):
    HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}", base64, `v1,` prefix, any of
    the space-separated signatures; the timestamp within `tolerance` of the receiver's clock."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (
        lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not (msg_id and stamp and signatures and stamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        return False
    key = (
        base64.b64decode(secret[len("whsec_") :])
        if secret.startswith("whsec_")
        else secret.encode()
    )
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    )
    return any(
        sig.startswith("v1,") and hmac.compare_digest(sig[3:].encode(), expected)
        for sig in signatures.split(" ")
    )


# ---------------------------------------------------------------- SMTP


@dataclass
class ReceivedMail:
    message_id: str
    to: str
    subject: str
    text: str
    html: str
    raw: bytes
    # How the session that carried it looked to the server.
    auth_login: str | None = None  # the user it authenticated as (None: no AUTH)
    tls_version: str | None = None  # e.g. "TLSv1.3" (None: plain text)


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mails: list[ReceivedMail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd API)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        tls = server.transport.get_extra_info("ssl_object") if server.transport else None
        login = session.auth_data.login if session.authenticated and session.auth_data else None
        mail = ReceivedMail(
            message_id=str(message["Message-ID"]),
            to=",".join(envelope.rcpt_tos),
            subject=str(message["Subject"]),
            # SMTP carries CRLF line ends; compare text as it was written.
            text=text.get_content().replace("\r\n", "\n") if text else "",
            html=html.get_content().replace("\r\n", "\n") if html else "",
            raw=envelope.content,
            auth_login=login.decode() if isinstance(login, bytes) else login,
            tls_version=tls.version() if tls is not None else None,
        )
        with self.lock:
            self.mails.append(mail)
        return "250 OK"


class SmtpServer:
    """aiosmtpd on a fixed loopback port that can go down and come back.

    `options` go to aiosmtpd's Controller as they are (authenticator, tls_context,
    require_starttls, ssl_context for implicit TLS, ...).
    """

    def __init__(self, **options: Any) -> None:
        self.port = embedded.free_port()
        self.recorder = _Recorder()
        self.options = options
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        scheme = "smtps" if self.options.get("ssl_context") else "smtp"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def mails(self) -> list[ReceivedMail]:
        with self.recorder.lock:
            return list(self.recorder.mails)

    def start(self) -> None:
        if self.controller is None:
            controller = Controller(
                self.recorder, hostname="127.0.0.1", port=self.port, **self.options
            )
            try:
                controller.start()
            except BaseException:
                controller.stop(no_assert=True)  # start() may leave its thread and loop running
                raise
            self.controller = controller

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- webhook receiver


@dataclass
class ReceivedHook:
    idempotency_key: str | None
    signature: str | None
    verified: bool
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class WebhookReceiver:
    secret: str = WEBHOOK_SECRET
    hooks: list[ReceivedHook] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/fulfil"

    def received(self) -> list[ReceivedHook]:
        with self.lock:
            return list(self.hooks)

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender died mid-request (a kill test): nothing was delivered
                headers = dict(self.headers.items())
                ok = standard_webhook_valid(receiver.secret, headers, body)
                with receiver.lock:
                    receiver.hooks.append(
                        ReceivedHook(
                            self.headers.get("webhook-id"),
                            self.headers.get("webhook-signature"),
                            ok,
                            body,
                            headers,
                        )
                    )
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="webhook-receiver", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


# ---------------------------------------------------------------- settings, clock, logs


def notifier_settings_for(
    settings: Settings, database_url: str, **overrides: Any
) -> NotifierSettings:
    values = {
        **settings.model_dump(),
        "database_url": database_url,
        "fulfil_notifier_poll_seconds": 0.1,
        "fulfil_notifier_backoff_initial_seconds": 0.2,
        "fulfil_notifier_backoff_max_seconds": 1.0,
        "fulfil_notifier_lease_seconds": 5.0,
        "fulfil_notifier_eta_hold_seconds": 0.0,
        "fulfil_notifier_reminder_days": 7.0,
        "fulfil_notifier_reminder_check_seconds": 3600.0,
        "smtp_timeout_seconds": 1.5,
        "webhook_timeout_seconds": 1.5,
    }
    values.update(overrides)
    return load_notifier_settings(**values)


@pytest.fixture
def notifier_settings(settings, test_database, smtp_server, webhook_receiver) -> NotifierSettings:
    return notifier_settings_for(
        settings,
        test_database,
        smtp_url=smtp_server.url,
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
    )


class FakeClock:
    def __init__(self, start: datetime | None = None):
        self.current = start or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the in-process notifier (structlog and the standard library)."""
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    try:
        yield stream
    finally:
        configure_logging("INFO", "json")
