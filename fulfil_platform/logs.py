"""structlog set-up shared by every service, with PII redaction.

Customer data must never reach a log line: the redaction processor runs last
before rendering, so it also covers values bound by libraries or by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from fulfil_platform.config import mask_url_password

REDACTED = "[redacted]"
# Keys whose values are personal data wherever they appear.
PII_KEYS = frozenset({"email", "name", "customer", "customer_name", "recipient", "to", "rcpt"})
# Keys whose values are credentials: masked like personal data.
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "authorization",
        "api_key",
        "kafka_sasl_password",
        "sasl_plain_password",
        "smtp_password",
        "webhook_secret",
    }
)
HIDDEN_KEYS = PII_KEYS | SECRET_KEYS
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# PII inside serialised text (a raw payload, a repr): JSON pairs and repr pairs.
_CUSTOMER_JSON = re.compile(r'"customer"\s*:\s*\{[^{}]*\}')
_PII_JSON = re.compile(r'"(email|name|customer_name)"\s*:\s*"(?:[^"\\]|\\.)*"')
_PII_REPR = re.compile(r"\b(email|name)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


def _scrub_text(text: str) -> str:
    text = _CUSTOMER_JSON.sub('"customer": "[redacted]"', text)
    text = _PII_JSON.sub(lambda m: f'"{m.group(1)}": "[redacted]"', text)
    text = _PII_REPR.sub(lambda m: f"{m.group(1)}=[redacted]", text)
    # A URL's password first: the email pattern would otherwise eat `pass@host` and leave the rest.
    return _EMAIL.sub(REDACTED, mask_url_password(text))


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return REDACTED
    if isinstance(value, str):
        return _scrub_text(value)
    if hasattr(value, "model_dump"):  # pydantic models: scrub their fields, not their repr
        return _scrub(value.model_dump(mode="json"), depth + 1)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if str(k).lower() in HIDDEN_KEYS else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub(v, depth + 1) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    # Models, exceptions and other objects render through str(): scrub that text.
    return _scrub_text(str(value))


def redact_pii(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog processor: drop customer blocks, names and email addresses."""
    return {
        key: (REDACTED if key.lower() in HIDDEN_KEYS else _scrub(value))
        for key, value in event_dict.items()
    }


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_pii,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Library loggers (aiokafka, faststream) go through the standard library:
    # route them to stderr at WARNING so they cannot flood or leak payloads.
    logging.basicConfig(level=logging.WARNING, stream=stream or sys.stderr, force=True)


def bind_event(event: Any) -> None:
    """Bind the ids of the message being handled to every log line that follows."""
    structlog.contextvars.bind_contextvars(
        event_id=getattr(event, "id", None),
        event_type=getattr(event, "type", None),
        correlation_id=getattr(event, "correlation_id", None),
        causation_id=getattr(event, "causation_id", None),
    )


def unbind_event() -> None:
    structlog.contextvars.unbind_contextvars(
        "event_id", "event_type", "correlation_id", "causation_id"
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
