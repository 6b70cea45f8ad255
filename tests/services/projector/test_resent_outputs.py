"""A resent batch on allocations.v1 is harmless (issue 12, defect 8).

Without an idempotent producer, a produce whose response was lost is sent
again: the same outputs (same ids, same allocator position headers) land at
new offsets, and with several requests in flight a retry can even land
behind newer outputs. The projector applies each output once: it keeps the
last applied (command offset, output index) per allocations partition in the
transaction that stores its offsets, and skips records at or below it.
"""

from __future__ import annotations

import asyncio

from fulfil_platform import kafka
from schemas.allocation_headers import output_headers
from schemas.registry import ALLOCATIONS, INVENTORY, ORDERS, encode, spec_for
from tests.kafka_helpers import publish
from tests.services.projector import reference
from tests.services.projector.helpers import (
    assert_tables_equal,
    dump,
    failed,
    normalise_reference,
    running,
    scenario,
    wait_caught_up,
)


async def _publish_outputs(settings, positioned: list[tuple[int, object]]) -> None:
    """Outputs with the allocator's position headers (command offset i, output index 0)."""
    producer = kafka.producer(settings)
    await producer.start()
    try:
        sent = []
        for position, event in positioned:
            spec = spec_for(event)
            sent.append(
                await producer.send(
                    settings.topic(ALLOCATIONS),
                    encode(event),
                    key=spec.key(event),
                    headers=output_headers(0, position, 0, event),
                )
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_a_resent_batch_of_outputs_is_applied_once(pg_settings) -> None:
    inputs, outputs = scenario(300, seed=8)
    positioned = list(enumerate(outputs))
    cut = len(positioned) // 2
    first, second = positioned[:cut], positioned[cut:]
    await kafka.create_topics(
        pg_settings, [pg_settings.topic(t) for t in (ORDERS, INVENTORY, ALLOCATIONS)]
    )
    await publish(pg_settings, inputs)

    await _publish_outputs(pg_settings, first)
    await _publish_outputs(pg_settings, first)  # the lost response: the same batch again
    async with running(pg_settings, max_records=37) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        assert projector.duplicates == len(first)
    expected_first = normalise_reference(reference.fold(inputs, [e for _, e in first]))
    assert_tables_equal(await dump(pg_settings.database_url), expected_first)

    # A restarted projector still knows what it applied; a late retry of the first
    # batch lands behind newer outputs and must not roll their orders back.
    await _publish_outputs(pg_settings, second)
    await _publish_outputs(pg_settings, first)
    async with running(pg_settings, max_records=37) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        assert projector.duplicates == len(first)
    assert_tables_equal(
        await dump(pg_settings.database_url), normalise_reference(reference.fold(inputs, outputs))
    )
