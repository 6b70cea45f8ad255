"""Settings shared by every service, read from the environment (DESIGN.md §9)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A configuration problem, already phrased as one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    kafka_bootstrap_servers: str | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    # Tansu holds JoinGroup for about half the session timeout: keep it short
    # by default so groups form quickly; production clusters may raise it.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    kafka_heartbeat_interval_ms: int = Field(default=1_000, ge=100, le=60_000)
    # The idempotent producer: the broker drops a batch resent after a lost response.
    # On for Apache Kafka; the embedded broker (Tansu) cannot do it (`fulfil dev env` says false).
    kafka_enable_idempotence: bool = True
    # How long a produce may wait for the broker before it fails (and the batch is redone).
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1_000, le=300_000)

    # asyncpg takes postgresql:// and postgres:// URLs; anything else fails deep in the driver.
    database_url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")

    fulfil_topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    fulfil_partitions: int = Field(default=6, ge=1, le=1024)
    # For `fulfil topics create` (and services ensuring topics): 3 on a production cluster.
    fulfil_replication_factor: int = Field(default=1, ge=1, le=32)
    fulfil_state_dir: Path = Path(".fulfil")
    fulfil_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    fulfil_log_format: Literal["json", "console"] = "json"
    # The allocator snapshots a partition after this many commands or seconds,
    # whichever comes first: a restart re-folds at most that much of the log.
    fulfil_snapshot_every: int = Field(default=50_000, ge=1, le=10_000_000)
    fulfil_snapshot_seconds: float = Field(default=30.0, gt=0, le=86_400)
    # The allocator core commits its offsets to Kafka at most this often (0: after every
    # batch). Its positions are its snapshots and the output tail, so a longer interval
    # only makes lag tooling lag and saves a round trip per batch.
    fulfil_commit_interval_ms: int = Field(default=0, ge=0, le=3_600_000)
    fulfil_max_message_bytes: int = Field(default=1_000_000, ge=1_024, le=16_000_000)
    # Prometheus /metrics, /healthz and /readyz; unset = not served.
    fulfil_metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    fulfil_metrics_host: str = Field(default="0.0.0.0", min_length=1, max_length=255)  # noqa: S104 - probes come from outside the container
    # /readyz fails when a consumer has lag and made no progress for this long.
    fulfil_ready_stall_seconds: float = Field(default=60.0, gt=0, le=86_400)
    # `fulfil allocator` writes a ClockTicked on every command partition this often
    # (0: never; then ticks come from `fulfil clock tick` only).
    fulfil_clock_tick_seconds: float = Field(default=60.0, ge=0, le=86_400)
    # An inbound past its ETA plus this many days, with units still to come, is overdue.
    fulfil_overdue_grace_days: int = Field(default=2, ge=0, le=365)
    # The delay-consent rule (16 CFR Part 435; not legal advice): `ftc` turns it on.
    fulfil_delay_consent: Literal["off", "ftc"] = "off"

    @property
    def consent_rule(self) -> bool:
        return self.fulfil_delay_consent == "ftc"

    smtp_url: str | None = Field(default=None, pattern=r"^smtps?://[^\s/]+(:\d+)?/?$")
    smtp_from: str = "orders@shop.example"
    webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("webhook_secret")
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("fulfil_log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    def topic(self, base: str) -> str:
        return f"{self.fulfil_topic_prefix}{base}"

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS is not set "
                '(run `fulfil dev up` and `eval "$(fulfil dev env)"` for a local broker)'
            )
        return self.kafka_bootstrap_servers

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set "
                '(run `fulfil dev up` and `eval "$(fulfil dev env)"` for a local PostgreSQL)'
            )
        return self.database_url

    def kafka_client_options(self) -> dict[str, Any]:
        """Connection options for any aiokafka client, SASL/TLS passed through."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.require_kafka(),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
            )
            if self.kafka_ssl_certfile:
                context.load_cert_chain(
                    str(self.kafka_ssl_certfile),
                    str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                )
            options["ssl_context"] = context
        if self.kafka_security_protocol.startswith("SASL"):
            if not (self.kafka_sasl_mechanism and self.kafka_sasl_username):
                raise ConfigError(
                    "KAFKA_SASL_MECHANISM and KAFKA_SASL_USERNAME are required with "
                    f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
                )
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
            )
        return options

    def loggable(self) -> dict[str, Any]:
        """The settings as an operator may see them in a log: secrets and URL passwords masked."""
        shown: dict[str, Any] = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            if isinstance(value, str):
                value = mask_url_password(value)
            shown[name] = value  # SecretStr fields already dump as "**********"
        return shown

    def consumer_group_options(self) -> dict[str, Any]:
        return {
            "session_timeout_ms": self.kafka_session_timeout_ms,
            "heartbeat_interval_ms": self.kafka_heartbeat_interval_ms,
        }


# Greedy up to the last "@" of the token: a password with an unencoded "/" or "@"
# is still masked whole (masking a little too much is the safe side).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)\S*@")
_URL_USERINFO = re.compile(
    r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://).*@", re.DOTALL
)  # one whole value


def mask_url_password(text: str) -> str:
    """`scheme://user:password@host` → `scheme://user:***@host` (DATABASE_URL, SMTP and proxy URLs)."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "***@", text)


def settings_error(exc: ValidationError) -> ConfigError:
    """The first problem of a settings model as one line for the operator; a secret's
    value is never shown, nor the user part of a URL (it may hold a password the URL's
    pattern refused, so the masking above would not find it)."""
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"]).upper() or "settings"
    if any(word in field.lower() for word in ("password", "secret")):
        return ConfigError(f"invalid {field}: {err['msg']}")
    value = err.get("input")
    if isinstance(value, str):
        value = _URL_USERINFO.sub(lambda m: m.group("scheme") + "***@", value)
    return ConfigError(f"invalid {field}: {err['msg']} (got {value!r})")


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; any invalid value becomes one ConfigError line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc) from None
