"""Defect #8 of issue 12 on the real core: a produce response lost after the broker
applied the batch, with no crash anywhere.

Without the idempotent producer (the embedded broker cannot do it) a client that
resends the unanswered batch writes its outputs twice. The core's producer does not
resend a request whose outcome is unknown: the flush fails, the core rebuilds the
partition from its snapshot and the output tail, and writes only what is missing.
What must hold on `allocations.v1`: no output lost, no id twice; a consumer that
applies each id once (or, by the README's recipe, each `(fulfil-command-offset,
fulfil-output-index)` position once per partition) sees exactly a clean fold of the
command log. The projector, fed the same inputs and these outputs, builds the same
read model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import orjson

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.metrics import Health
from schemas.allocation_headers import position_of
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS, parse_output
from services.allocator.entrypoints.app import run_allocator
from tests.builders.streams import mixed_stream
from tests.faults.proxy import PRODUCE
from tests.kafka_helpers import fold_command_log, publish, read_topic, wait_for
from tests.services.allocator.test_core_faults import (
    _assert_repeats_identical_and_applied_once_exact,
    _caught_up,
)
from tests.services.projector import reference
from tests.services.projector.helpers import (
    assert_tables_equal,
    dump,
    failed,
    normalise_reference,
    running,
    wait_caught_up,
)

LOST = 3  # produce responses lost, one after the other


async def _recipe(settings: Settings) -> dict[int, list[bytes]]:
    """The README's recipe for warehouse consumers: per partition, skip a record whose
    (command offset, output index) is not greater than the last applied one."""
    applied: dict[int, list[bytes]] = {}
    for partition, records in (await read_topic(settings, ALLOCATIONS)).items():
        last = None
        out = applied.setdefault(partition, [])
        for record in records:
            position = position_of(record.headers)
            assert position is not None, (
                f"output without position headers at {partition}:{record.offset}"
            )
            if last is not None and position <= last:
                continue
            last = position
            out.append(record.value)
    return applied


async def test_lost_produce_responses_lose_nothing_and_repeat_only_identical_outputs(
    proxied_settings: Settings, proxied_broker, test_database: str
) -> None:
    settings = proxied_settings.model_copy(
        update={"fulfil_snapshot_every": 300, "database_url": test_database}
    )
    await kafka.create_topics(settings)
    stream = mixed_stream(3_000, seed=8)
    await publish(settings, stream, topic=COMMANDS)
    # Nobody else produces from here on: the lost responses are the core's.
    proxied_broker.proxy.drop_responses(PRODUCE, LOST)
    stop = asyncio.Event()
    task = asyncio.create_task(run_allocator(settings, "core", stop, Health()))
    try:

        async def done() -> bool:
            if task.done():
                raise AssertionError(f"core stopped: {task.exception()!r}")
            return proxied_broker.proxy.pending_drops(PRODUCE) == 0 and await _caught_up(settings)

        await wait_for(done, timeout=120, interval=0.3, what="the core to fold every command")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
    assert task.done() and task.exception() is None, task.exception()
    assert proxied_broker.proxy.faults["drop_response"] == LOST

    outputs = await read_topic(settings, ALLOCATIONS)
    ids = Counter(orjson.loads(r.value)["id"] for records in outputs.values() for r in records)
    repeated = sum(n - 1 for n in ids.values())
    expected = fold_command_log(await read_topic(settings, COMMANDS))
    assert set(ids) == {orjson.loads(v)["id"] for vs in expected.values() for v in vs}, (
        "outputs lost"
    )
    assert repeated == 0, f"{repeated} outputs written twice after {LOST} lost responses"
    await _assert_repeats_identical_and_applied_once_exact(settings)
    # So is applying each position once, the README's recipe.
    recipe = await _recipe(settings)
    assert recipe == {p: expected.get(p, []) for p in recipe}
    print(f"lost responses {LOST}, repeated outputs {repeated}")

    # The projector over the same inputs and these outputs (repeats included) builds the
    # read model of the outputs applied once.
    await kafka.create_topics(settings, [settings.topic(t) for t in (ORDERS, INVENTORY)])
    await publish(settings, stream)
    async with running(settings, max_records=97) as projector:
        await wait_caught_up(settings, check=lambda: failed(projector))
        assert projector.duplicates == repeated
    deduplicated = [parse_output(v) for p in sorted(recipe) for v in recipe[p]]
    assert_tables_equal(
        await dump(settings.database_url), normalise_reference(reference.fold(stream, deduplicated))
    )
