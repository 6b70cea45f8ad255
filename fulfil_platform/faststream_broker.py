"""A FastStream KafkaBroker configured from Settings (SASL/TLS passed through)."""

from __future__ import annotations

import logging
import ssl

from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from fulfil_platform.config import Settings
from fulfil_platform.logs import adopt_library_loggers


def security(settings: Settings) -> BaseSecurity | None:
    options = settings.kafka_client_options()
    context: ssl.SSLContext | None = options.get("ssl_context")
    use_ssl = context is not None
    mechanism = options.get("sasl_mechanism")
    if mechanism:
        cls = {
            "PLAIN": SASLPlaintext,
            "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512,
        }[mechanism]
        return cls(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            use_ssl=use_ssl,
            ssl_context=context,
        )
    if use_ssl:
        return BaseSecurity(ssl_context=context, use_ssl=True)
    return None


def broker(settings: Settings) -> KafkaBroker:
    # FastStream's own loggers write coloured text to stdout/stderr; ours are one JSON
    # object a line (fulfil_platform.logs): its lines go through the root handler instead.
    adopt_library_loggers()
    return KafkaBroker(
        settings.require_kafka(),
        security=security(settings),
        acks="all",
        # The same setting as fulfil_platform.kafka.producer: this producer publishes dead letters.
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=5,
        max_request_size=settings.fulfil_max_message_bytes + 64 * 1024,
        # Per-message INFO logs from the framework would dominate the hot path.
        log_level=logging.DEBUG,
        logger=logging.getLogger("faststream.access.kafka"),
        graceful_timeout=30.0,
    )
