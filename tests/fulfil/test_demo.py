"""`fulfil demo` end to end, and its invariant check failing on a corrupted topic."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from fulfil.demo import invariant_check
from fulfil.kafka import create_topics
from schemas.registry import ALLOCATIONS, encode
from services.allocator.domain import decide, new_state
from tests.kafka_helpers import publish
from tests.services.allocator.domain.streams import mixed_stream


def test_demo_runs_end_to_end_and_stops_everything(tmp_path) -> None:
    env = {**os.environ, "FULFIL_STATE_DIR": str(tmp_path), "COLUMNS": "120"}
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "FULFIL_TOPIC_PREFIX"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "fulfil", "demo", "--events", "1500", "--seed", "3"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for section in ("backlog", "late inbound shipments", "customer deposits", "customer emails", "invariants", "throughput"):
        assert section in out
    assert "OK:" in out and "Subject:" in out
    assert list((tmp_path / "demo" / "mail").glob("*.eml"))
    # Nothing it started is left: the broker and PostgreSQL of its state directory are gone.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == []


async def test_invariant_check_reads_the_topics_and_catches_a_corrupted_output(settings) -> None:
    await create_topics(settings)
    events = mixed_stream(2_500, seed=4)
    state, outputs = new_state(), []
    for event in events:
        state, produced = decide(state, event)
        outputs.extend(produced)
    await publish(settings, events)
    await publish(settings, outputs)
    assert (await invariant_check(settings)).ok

    order_output = next(o for o in outputs if o.type != "StockPositionChanged")
    doc = orjson.loads(encode(order_output))
    doc["id"] = "corrupted-copy"
    doc["data"]["lines"][0]["allocated"] += 1
    await publish(settings, [orjson.dumps(doc)], topic=ALLOCATIONS)
    report = await invariant_check(settings)
    assert not report.ok
    assert any("corrupted-copy" in p and "!= ordered" in p for p in report.problems)
