"""The projector in the AsyncAPI document (`make asyncapi`, fulfil/asyncapi.py).

The projector drives aiokafka itself (offsets live in PostgreSQL), so
FastStream cannot see it: `describe` declares what it reads, documentation
only, on a broker that is never started.
"""

from __future__ import annotations

from typing import Any

from fulfil_platform.config import Settings
from schemas.registry import ALLOCATIONS
from services.projector.service_layer.projector import INPUT_TOPICS

_WHY = {
    ALLOCATIONS: "Fold allocation decisions and stock positions into the read models "
    "(backlog, orders, deposits, reorder).",
}
_INPUTS = (
    "Count demand and inbound shipments for the same inputs the allocator accepted; "
    "the rest is skipped."
)


def describe(broker: Any, settings: Settings) -> None:
    from fulfil_platform.asyncapi_docs import events_on, receives

    for topic in INPUT_TOPICS:
        receives(
            broker,
            settings.topic(topic),
            title=f"projector:{topic}",
            description=f"{_WHY.get(topic, _INPUTS)} One PostgreSQL transaction per batch "
            "stores the rows and the next offsets.",
            payload=events_on(topic),
        )
