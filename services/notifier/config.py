"""The notifier's settings: the shared ones (fulfil_platform.config.Settings) plus its own.

Every notifier-only variable starts with `FULFIL_NOTIFIER_` (SMTP details with
`SMTP_`, like the shared `SMTP_URL`). An invalid value is one ConfigError line,
as everywhere else (exit code 2 from the CLI).
"""

from __future__ import annotations

import binascii
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator

from fulfil_platform.config import ConfigError, Settings, settings_error

CHANNELS = ("email", "webhook")
SECRET_PREFIX = "whsec_"

# A send is many waits, each bounded by the channel's timeout, not one. SMTP (aiosmtplib
# applies SMTP_TIMEOUT_SECONDS to each): connect, greeting, EHLO, STARTTLS, TLS handshake,
# EHLO again, AUTH (LOGIN: 3 exchanges), MAIL, RCPT, DATA, the message, QUIT. HTTP (httpx
# applies WEBHOOK_TIMEOUT_SECONDS to each): pool, connect, write, read.
SMTP_STEPS = 14
HTTP_STEPS = 4
# On top of the slowest channel's worst case: marking the row, clock skew between notifiers.
LEASE_MARGIN_SECONDS = 5.0
LEASE_MARGIN_FRACTION = 0.1


def secret_key(secret: str) -> bytes:
    """The webhook HMAC key WEBHOOK_SECRET stands for; ValueError for a malformed `whsec_` secret.

    `whsec_<base64>` is the Standard Webhooks form (the key is the decoded bytes, as
    their libraries read it); any other string is used as its UTF-8 bytes, which is
    what existing deployments have (e.g. `openssl rand -hex 32`)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            key = binascii.a2b_base64(
                secret[len(SECRET_PREFIX) :].encode() + b"==", strict_mode=False
            )
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
        if not key:
            raise ValueError("a whsec_ secret must not be empty")
        return key
    if not secret:
        raise ValueError("the secret must not be empty")
    return secret.encode()


class NotifierSettings(Settings):
    # SMTP beyond SMTP_URL / SMTP_FROM: STARTTLS upgrade on a plain port, and auth.
    # `smtps://` in SMTP_URL means implicit TLS instead. Credentials may also sit in
    # SMTP_URL (`smtp://user:pass@host`, percent-encoded); these two win (smtp_credentials).
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # CA bundle (PEM) the SMTP server's certificate must chain to, for STARTTLS and
    # smtps://; unset = the system's trust store. The host name is always checked.
    smtp_ssl_cafile: FilePath | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=600)

    # Channel switches: a channel runs when it is configured AND switched on.
    fulfil_notifier_email: bool = True
    fulfil_notifier_webhook: bool = True
    # OrderAllocated (everything ships at once) as an order confirmation; shops
    # that already confirm orders themselves switch it off.
    fulfil_notifier_order_confirmation: bool = True

    fulfil_cancel_url_template: str = Field(
        default="https://shop.example/orders/{order_id}/cancel", pattern=r"^https?://\S+$"
    )
    # Where a customer agrees to wait for a later date (delay-consent rule: the shop's
    # page publishes BackorderConsentGiven); offered when a delay needs their consent.
    fulfil_consent_url_template: str = Field(
        default="https://shop.example/orders/{order_id}/consent", pattern=r"^https?://\S+$"
    )

    # Delivery: attempts, then `failed`; capped exponential backoff with jitter between them.
    # Defaults: 2 s, 4 s, … capped at 30 min; 24 attempts ride out about 7 hours of outage.
    fulfil_notifier_max_attempts: int = Field(default=24, ge=1, le=1_000)
    fulfil_notifier_backoff_initial_seconds: float = Field(default=2.0, gt=0, le=3_600)
    fulfil_notifier_backoff_max_seconds: float = Field(default=1_800.0, gt=0, le=86_400)
    # A claimed row whose sender died is sent again after the lease (same Message-ID). The
    # lease is derived from the channel timeouts (lease_seconds); this can only lengthen it.
    fulfil_notifier_lease_seconds: float = Field(default=120.0, gt=0, le=86_400)
    fulfil_notifier_poll_seconds: float = Field(default=1.0, gt=0, le=300)
    fulfil_notifier_concurrency: int = Field(default=8, ge=1, le=256)
    fulfil_notifier_batch_size: int = Field(default=500, ge=1, le=10_000)
    # Anti-spam: ETA changes wait this long for a later change to fold into (README).
    fulfil_notifier_eta_hold_seconds: float = Field(default=300.0, ge=0, le=86_400)

    # Weekly reminders for lines still backordered; 0 switches them off.
    fulfil_notifier_reminder_days: float = Field(default=7.0, ge=0, le=365)
    fulfil_notifier_reminder_check_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # Where the projector's `orders` / `order_lines` live: its live schema, which a
    # `fulfil rebuild` replaces by renaming, so reading it by name always finds the live one.
    fulfil_read_model_schema: str = Field(default="projection", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    fulfil_notifier_message_id_domain: str = Field(
        default="fulfil", pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,250}[A-Za-z0-9])?$"
    )

    @field_validator("fulfil_cancel_url_template", "fulfil_consent_url_template")
    @classmethod
    def _has_order_id(cls, value: str) -> str:
        if "{order_id}" not in value:
            raise ValueError("must contain {order_id}")
        try:
            value.format(order_id="x")
        except (KeyError, IndexError, ValueError):
            raise ValueError("may contain no placeholder but {order_id}") from None
        return value

    # ------------------------------------------------------------ derived

    @property
    def email_enabled(self) -> bool:
        return self.fulfil_notifier_email and bool(self.smtp_url)

    @property
    def webhook_enabled(self) -> bool:
        return self.fulfil_notifier_webhook and bool(self.webhook_url)

    def smtp_credentials(self) -> tuple[str | None, str | None]:
        """(user, password) for SMTP AUTH; (None, None) = no AUTH.

        SMTP_USERNAME / SMTP_PASSWORD win over `user:password@` in SMTP_URL, which is
        percent-decoded (`p%40ss` is `p@ss`). SMTP_PASSWORD also completes a URL that
        names only the user (`smtp://orders@host`), keeping the secret out of the URL.
        """
        explicit_password = self.smtp_password.get_secret_value() if self.smtp_password else None
        if self.smtp_username:
            return self.smtp_username, explicit_password
        url = urlsplit(self.smtp_url or "")
        user = unquote(url.username) if url.username else None
        url_password = unquote(url.password) if url.password else None
        return user, explicit_password or (url_password if user else None)

    def smtp_tls_context(self) -> ssl.SSLContext | None:
        """The context that verifies the SMTP server (SMTP_SSL_CAFILE); None = aiosmtplib's
        default, which verifies against the system's trust store."""
        if self.smtp_ssl_cafile is None:
            return None
        try:
            return ssl.create_default_context(cafile=str(self.smtp_ssl_cafile))
        except (OSError, ssl.SSLError):
            raise ConfigError(
                f"SMTP_SSL_CAFILE ({self.smtp_ssl_cafile}) is not a readable PEM file of CA certificates"
            ) from None

    def _check_smtp(self) -> None:
        # Never put SMTP_URL itself in these messages: it may hold a password.
        if self.smtp_username and not self.smtp_password:
            raise ConfigError("SMTP_PASSWORD is required when SMTP_USERNAME is set")
        if not self.smtp_url:
            return
        url = urlsplit(self.smtp_url)
        userinfo, _, _ = url.netloc.rpartition("@")
        if "@" in userinfo:
            # Unencoded, it would also defeat the log masking of the URL's password.
            raise ConfigError(
                "SMTP_URL: write '@' in a user name or password as %40 (percent-encoded)"
            )
        try:
            url.port  # noqa: B018 - raises for a port out of range
        except ValueError:
            raise ConfigError("SMTP_URL: the port must be between 0 and 65535") from None
        user, password = self.smtp_credentials()
        if user and not password:
            raise ConfigError(
                "SMTP_URL names an SMTP user but no password: add it to the URL "
                "(smtp://user:password@host, percent-encoded) or set SMTP_PASSWORD"
            )
        if (password or url.password) and not user:
            raise ConfigError(
                "SMTP_PASSWORD (or a password in SMTP_URL) is set without a user: "
                "set SMTP_USERNAME or write smtp://user@host in SMTP_URL"
            )
        self.smtp_tls_context()

    def enabled_channels(self) -> tuple[str, ...]:
        return tuple(
            c for c in CHANNELS if (self.email_enabled if c == "email" else self.webhook_enabled)
        )

    def require_channels(self) -> tuple[str, ...]:
        # Consuming with no channel would mark events handled and drop their messages for good.
        channels = self.enabled_channels()
        if not channels:
            raise ConfigError(
                "no notification channel is configured: set SMTP_URL and/or WEBHOOK_URL "
                "(and leave FULFIL_NOTIFIER_EMAIL / FULFIL_NOTIFIER_WEBHOOK switched on)"
            )
        return channels

    def check_channels(self) -> None:
        """Cross-field rules, phrased for the operator."""
        if self.webhook_enabled and not self.webhook_secret:
            # Unsigned webhooks let anyone forge customer notifications downstream.
            raise ConfigError("WEBHOOK_SECRET is required when WEBHOOK_URL is set")
        if self.webhook_secret:
            try:
                secret_key(self.webhook_secret.get_secret_value())
            except ValueError as exc:
                raise ConfigError(f"WEBHOOK_SECRET: {exc}") from None
        self._check_smtp()

    def send_deadline_seconds(self, channel: str) -> float:
        """The longest one send on `channel` may take; the sender cuts it off there."""
        if channel == "email":
            return self.smtp_timeout_seconds * SMTP_STEPS
        return self.webhook_timeout_seconds * HTTP_STEPS

    @property
    def lease_seconds(self) -> float:
        """How long a claimed row stays with its sender: past the worst-case send of every
        channel (derived from their timeouts), so a slow but live send is never handed to a
        second sender. FULFIL_NOTIFIER_LEASE_SECONDS only raises it."""
        worst = max(self.send_deadline_seconds(c) for c in CHANNELS)
        derived = worst * (1 + LEASE_MARGIN_FRACTION) + LEASE_MARGIN_SECONDS
        return max(self.fulfil_notifier_lease_seconds, derived)


def load_notifier_settings(**overrides: Any) -> NotifierSettings:
    """Read the environment; any invalid value becomes one ConfigError line."""
    try:
        settings = NotifierSettings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc) from None
    settings.check_channels()
    return settings
