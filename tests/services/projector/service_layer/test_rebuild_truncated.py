"""`fulfil rebuild` never swaps in a model built from truncated history (issue 12, defect 11).

Tansu cannot move a log's start (no delete_records, no retention): the
broker's real `beginning_offsets` answer is read through the rebuild's
`log_starts` seam, and one partition's start is raised above 0 as retention
would have done. The decision itself is the pure `truncated_history`, tested
on plain offsets.
"""

from __future__ import annotations

import pytest

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from schemas.registry import ALLOCATIONS
from services.projector.service_layer.projector import INPUT_TOPICS
from services.projector.service_layer.rebuild import HistoryTruncated, rebuild, truncated_history
from tests.services.projector.helpers import (
    dump,
    failed,
    publish_scenario,
    running,
    scenario,
    stored_offsets,
    wait_caught_up,
)


def test_truncated_history_names_every_partition_whose_log_starts_above_zero() -> None:
    assert truncated_history({("t.orders.v1", 0): 0, ("t.orders.v1", 1): 0}) == []
    found = truncated_history(
        {("t.orders.v1", 1): 0, ("t.allocations.v1", 2): 1234, ("t.orders.v1", 0): 7}
    )
    assert found == [("t.allocations.v1", 2, 1234), ("t.orders.v1", 0, 7)]


def test_every_source_topic_of_a_rebuild_is_kept_forever(settings: Settings) -> None:
    for base in INPUT_TOPICS:
        assert kafka.topic_configs(settings, settings.topic(base)) == {"retention.ms": "-1"}, base


async def test_rebuild_refuses_truncated_history_unless_allowed(pg_settings) -> None:
    inputs, outputs = scenario(200, seed=11)
    await publish_scenario(pg_settings, inputs, outputs)
    async with running(pg_settings) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
    live = await dump(pg_settings.database_url)
    live_offsets = await stored_offsets(pg_settings.database_url)
    truncated = (pg_settings.topic(ALLOCATIONS), 1)
    seen: dict = {}

    async def retention_moved_the_start(consumer, tps):
        starts = await consumer.beginning_offsets(tps)  # the real broker's answer...
        seen.update({(tp.topic, tp.partition): offset for tp, offset in starts.items()})
        return {
            tp: (3 if (tp.topic, tp.partition) == truncated else offset)
            for tp, offset in starts.items()
        }

    with pytest.raises(HistoryTruncated) as info:
        await rebuild(pg_settings, log_starts=retention_moved_the_start)
    assert seen and set(seen.values()) == {0}  # ...which starts every log at 0 on Tansu
    message = str(info.value)
    assert (
        f"{truncated[0]} partition 1 starts at offset 3" in message
        and "--allow-truncated" in message
    )
    assert await dump(pg_settings.database_url) == live  # nothing swapped in
    assert await stored_offsets(pg_settings.database_url) == live_offsets

    report = await rebuild(pg_settings, log_starts=retention_moved_the_start, allow_truncated=True)
    assert report.truncated == [(truncated[0], 1, 3)]
    assert report.offsets[f"{truncated[0]}:1"] == live_offsets[truncated]  # read from 3 to the end
