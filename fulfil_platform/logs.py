"""structlog set-up shared by every service, with PII redaction.

Every log line of a process is one JSON object (`FULFIL_LOG_FORMAT=console`:
the same fields, for humans), whoever wrote it: our own structlog loggers and
the standard library's (aiokafka, asyncio, FastStream, warnings) all end in
one stdlib handler whose structlog `ProcessorFormatter` renders them. Every
line carries `service`, `logger`, `level` and `timestamp`; a line about one
record also carries the record's `topic`, `partition`, `offset` and its
envelope's `event_id`, `event_type`, `correlation_id` and `causation_id`
(`bound_record`, or `bind_event` for a handler of one event).

Customer data must never reach a log line: the redaction processor runs last
before rendering, so it also covers values bound by libraries or by mistake,
and the text of the standard library's messages.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TextIO

import orjson
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

# The fields that say which record a line is about (see `bound_record`).
RECORD_KEYS = ("topic", "partition", "offset")
EVENT_KEYS = ("event_id", "event_type", "correlation_id", "causation_id")
# Our own loggers live under this stdlib logger, so libraries can be kept quieter.
ROOT_LOGGER = "fulfil"
_PREFIX = ROOT_LOGGER + "."
# Libraries whose INFO lines an operator wants (FastStream: assignments, start, stop).
_CHATTY_BUT_USEFUL = ("faststream",)
_MAX_ID = 200  # an id read from a record that failed the contract may be anything

_service = "fulfil"
_libraries = "WARNING"


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


def add_logger_name(logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: the stdlib logger's name (ours without the `fulfil.` prefix)."""
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name.removeprefix(_PREFIX))
    return event_dict


def add_service(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: the process's service name, unless the line names its own
    (the allocator's router and core share a process)."""
    event_dict.setdefault("service", _service)
    return event_dict


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a line is written (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(
    level: str = "INFO",
    fmt: str = "json",
    stream: Any = None,
    *,
    service: str | None = None,
    libraries: str | None = None,
) -> None:
    """One handler on the root logger renders every line (ours and the libraries').

    `service` names the process in every line and `libraries` is the threshold of
    other packages' loggers (ours and FastStream's follow `level`); both are kept
    from an earlier call when not given (defaults: "fulfil", WARNING)."""
    global _service, _libraries
    if service:
        _service = service
    if libraries:
        _libraries = libraries
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_logger_name,
        add_service,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_pii,
            renderer,
        ],
    )
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_libraries)
    logging.getLogger(ROOT_LOGGER).setLevel(level)
    # Python warnings (a ResourceWarning, a DeprecationWarning shown) become lines too.
    logging.captureWarnings(True)
    adopt_library_loggers(level)


def adopt_library_loggers(level: str | int | None = None) -> None:
    """Make libraries that install their own handlers (FastStream writes coloured text to
    stdout and stderr) propagate to the root handler instead. Called by configure_logging
    and again once a library's loggers exist (fulfil_platform.faststream_broker)."""
    names = [
        name
        for name in logging.root.manager.loggerDict
        if name.split(".", 1)[0] in _CHATTY_BUT_USEFUL
    ]
    for name in {*names, *_CHATTY_BUT_USEFUL}:
        library = logging.getLogger(name)
        for old in library.handlers[:]:
            library.removeHandler(old)
        library.propagate = True
        if "." not in name:
            library.setLevel(level if level is not None else logging.getLogger(ROOT_LOGGER).level)
        else:
            library.setLevel(logging.NOTSET)  # follow the package's logger


def _text(value: Any) -> str | None:
    return value[:_MAX_ID] if isinstance(value, str) else None


def envelope_ids(value: bytes | None) -> dict[str, str | None]:
    """The envelope ids of a raw record, as far as it has them (it may be anything)."""
    doc: Any = None
    if value:
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            doc = orjson.loads(value)
    if not isinstance(doc, dict):
        doc = {}
    return {
        "event_id": _text(doc.get("id")),
        "event_type": _text(doc.get("type")),
        "correlation_id": _text(doc.get("correlation_id")),
        "causation_id": _text(doc.get("causation_id")),
    }


def event_ids(event: Any) -> dict[str, Any]:
    """The ids of a parsed envelope."""
    return {
        "event_id": getattr(event, "id", None),
        "event_type": getattr(event, "type", None),
        "correlation_id": getattr(event, "correlation_id", None),
        "causation_id": getattr(event, "causation_id", None),
    }


def record_fields(record: Any, event: Any = None) -> dict[str, Any]:
    """What a line about one Kafka record carries: where it is, and its envelope's ids
    (from `event` when parsed, else read from the record's bytes as far as they go)."""
    fields: dict[str, Any] = {
        "topic": getattr(record, "topic", None),
        "partition": getattr(record, "partition", None),
        "offset": getattr(record, "offset", None),
    }
    fields.update(
        event_ids(event) if event is not None else envelope_ids(getattr(record, "value", None))
    )
    return fields


@contextlib.contextmanager
def bound_record(record: Any, event: Any = None) -> Iterator[None]:
    """Every line logged inside names `record` (see record_fields); the previous
    bindings come back afterwards. For batch paths: wrap what logs about one record."""
    with structlog.contextvars.bound_contextvars(**record_fields(record, event)):
        yield


def bind_event(event: Any, record: Any = None) -> None:
    """Bind the ids of the message being handled (and where it was read, when given)
    to every log line that follows, until `unbind_event`."""
    structlog.contextvars.bind_contextvars(
        **(record_fields(record, event) if record is not None else event_ids(event))
    )


def unbind_event() -> None:
    structlog.contextvars.unbind_contextvars(*EVENT_KEYS, *RECORD_KEYS)


def service_context(service: str) -> contextlib.AbstractContextManager[None]:
    """Lines logged inside, and by the tasks created inside, name `service` (one stage of a
    process that runs two, e.g. the allocator's router and core)."""
    return structlog.contextvars.bound_contextvars(service=service)


def get_logger(name: str) -> Any:
    # The stdlib logger `fulfil.<name>`: ours, at FULFIL_LOG_LEVEL; lines say `logger: <name>`.
    return structlog.get_logger(_PREFIX + name)
