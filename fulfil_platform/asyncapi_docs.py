"""What each service declares about itself for the AsyncAPI document.

The generator (fulfil/asyncapi.py, a tool) builds one documentation broker
and hands it to each service's `describe(broker, settings)`; the services
declare what FastStream cannot see with these helpers: the payload type of a
topic (`events_on`), a dead letter's payload (`DeadLetter`) and a
documentation-only subscriber (`receives`). Nothing here runs in production.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import ConfigDict, Field, RootModel

from fulfil_platform.dead_letter_writer import (
    H_KIND,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_STAGE,
    H_TOPIC,
)
from schemas.registry import COMMAND_TYPES, COMMANDS, REGISTRY


class DeadLetter(RootModel[bytes]):
    model_config = ConfigDict(
        title="DeadLetter",
        json_schema_extra={
            "description": (
                "The original message bytes, unchanged: they failed the contract. Kafka headers "
                f"say why and where from: {H_REASON} (one line), {H_KIND}, {H_TOPIC}, "
                f"{H_PARTITION}, {H_OFFSET}, {H_STAGE}; the producer's own headers are kept "
                "for a redrive (`fulfil dlq redrive`)."
            )
        },
    )


def events_on(topic: str) -> Any:
    """The payload type of a base topic: the discriminated union of the registry's events on it.

    `allocator.commands.v1` carries every input, re-keyed by the router, and the
    allocator's internal commands (ClockTicked).
    """
    if topic == COMMANDS:
        models = [spec.model for name, spec in REGISTRY.items() if name in COMMAND_TYPES]
    else:
        models = [spec.model for spec in REGISTRY.values() if spec.topic == topic]
    if not models:
        raise ValueError(f"no event type travels on {topic}")
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


def receives(broker: Any, topic: str, *, title: str, description: str, payload: Any) -> None:
    """Declare a documentation-only subscriber: a raw aiokafka consumer of `topic`.

    The handler exists for its signature (FastStream documents the payload
    from it); the documentation broker is never started, so it never runs.
    """

    async def documented(event: Any) -> None:
        raise AssertionError("documentation only")

    documented.__annotations__ = {"event": payload, "return": None}
    broker.subscriber(topic, title=title, description=description)(documented)
