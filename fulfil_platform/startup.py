"""Waiting for the broker at start: a service started before its broker waits, it does not exit.

Exiting would stall the service behind an orchestrator's back-off and make
the start order of a deployment matter; instead the service retries with
backoff (fulfil_platform.consumer.wait_out), logs each failed attempt naming
the server, and still stops at once, with exit 0, on SIGTERM.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient

from fulfil_platform.config import Settings
from fulfil_platform.consumer import wait_out


async def broker_answers(settings: Settings) -> bool:
    """True once the cluster answered a metadata request; raises when it cannot be reached."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    try:
        await admin.start()
    finally:
        await admin.close()
    return True


async def wait_for_kafka(settings: Settings, stop: asyncio.Event) -> bool:
    """Wait until the broker answers; False when `stop` was set first."""
    answered = await wait_out(
        lambda: broker_answers(settings),
        stop,
        what=f"connecting to Kafka at {settings.require_kafka()}",
    )
    return answered is True
