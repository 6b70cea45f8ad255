"""`fulfil publish --ordered` against the real broker, with the allocator running in-process."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fulfil.publish_effects import Effect
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from schemas.registry import COMMANDS
from services.allocator.entrypoints.app import run_allocator
from tests.builders.samples import VALID
from tests.fulfil.helpers import fulfil
from tests.kafka_helpers import read_topic

ROUTER_LIMIT = 4_000  # the router's FULFIL_MAX_MESSAGE_BYTES here: a larger line is dead-lettered


@pytest.fixture
async def allocator(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """The allocator (router + core) in this process, with a small message limit."""
    await kafka.create_topics(settings)
    stop = asyncio.Event()
    limited = settings.model_copy(update={"fulfil_max_message_bytes": ROUTER_LIMIT})
    task = asyncio.create_task(run_allocator(limited, "all", stop))
    yield task
    stop.set()
    await asyncio.wait_for(task, 60)


def envelope(kind: str, event_id: str, **data: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID[kind])
    doc["id"] = event_id
    doc["data"].update(data)
    return doc


def write(path: Path, docs: list[dict[str, Any] | bytes]) -> Path:
    path.write_bytes(
        b"".join((d if isinstance(d, bytes) else orjson.dumps(d)) + b"\n" for d in docs)
    )
    return path


def story(tmp_path: Path) -> Path:
    order_line = {"line_no": 1, "sku": "SKU-1", "quantity": 5}
    receipt = envelope("StockReceived", "ev-receipt", warehouse_id="wh-1", sku="SKU-1", quantity=5)
    order = envelope("OrderPlaced", "ev-order", warehouse_id="wh-1", lines=[order_line])
    again = envelope("OrderPlaced", "ev-order-again", warehouse_id="wh-1", lines=[order_line])
    padded = envelope("StockAdjusted", "ev-padded", warehouse_id="wh-1")
    padded["padding"] = "x" * (ROUTER_LIMIT + 100)  # an unknown field: valid, but too big
    return write(
        tmp_path / "story.jsonl",
        [
            receipt,  # 1: inventory.v1
            order,  # 2: orders.v1, sent only once the receipt is folded: it ships at once
            order,  # 3: the same envelope again: processed, no output
            again,  # 4: another envelope, same order_id: a duplicate by business key
            b"{not json",  # 5: bad line, reported, never sent
            padded,  # 6: dead-lettered by the router (oversize)
            receipt,  # 7: after the dead letter, publishing went on
        ],
    )


async def test_each_line_waits_for_its_effect_and_the_allocator_folds_the_file_in_order(
    settings: Settings, allocator: asyncio.Task[None], env_for_subprocess, tmp_path: Path
) -> None:
    path = story(tmp_path)
    env = env_for_subprocess(settings)
    result = await asyncio.to_thread(
        fulfil, "publish", "--ordered", "--json", str(path), env=env, timeout=240
    )
    assert not allocator.done()
    assert result.returncode == 1, result.stderr  # a bad line and a dead letter
    report = orjson.loads(result.stdout)
    effects = {e["line"]: e for e in report["effects"]}
    assert sorted(effects) == [1, 2, 3, 4, 6, 7]
    assert effects[1]["outputs"] == ["StockPositionChanged"]
    # Folded after the receipt, whatever the topics: everything ships now.
    assert effects[2]["outputs"] == ["OrderAllocated", "StockPositionChanged"]
    for duplicate in (3, 4, 7):
        assert effects[duplicate]["outputs"] == [], effects[duplicate]
        assert effects[duplicate]["dead_letter"] is None and effects[duplicate]["complete"]
    assert effects[6]["outputs"] == []
    assert effects[6]["dead_letter"].startswith(settings.topic("inventory.v1.dlq") + ": oversize")
    assert [b["line"] for b in report["bad"]] == [5]
    assert all(e["complete"] for e in report["effects"])

    # The command log holds the lines in file order (the dead letter never got there).
    commands = await read_topic(settings, COMMANDS)
    routed = [orjson.loads(r.value)["id"] for records in commands.values() for r in records]
    assert routed == ["ev-receipt", "ev-order", "ev-order", "ev-order-again", "ev-receipt"]


async def test_the_printed_lines_say_what_each_record_led_to(
    settings: Settings, allocator: asyncio.Task[None], env_for_subprocess, tmp_path: Path
) -> None:
    receipt = envelope("StockReceived", "ev-r", warehouse_id="wh-1", sku="SKU-1", quantity=2)
    path = write(tmp_path / "two.jsonl", [receipt, receipt])
    result = await asyncio.to_thread(
        fulfil, "publish", "--ordered", str(path), env=env_for_subprocess(settings), timeout=240
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"  1 StockReceived {receipt['data']['receipt_id']} SKU-1: StockPositionChanged",
        f"  2 StockReceived {receipt['data']['receipt_id']} SKU-1: processed, no output",
        "published 2 events in order (2 to "
        + settings.topic("inventory.v1")
        + "); 0 dead-lettered; 0 bad lines",
    ]


async def test_without_the_allocator_the_first_line_is_named_and_nothing_follows(
    settings: Settings, env_for_subprocess, tmp_path: Path
) -> None:
    await kafka.create_topics(settings)
    receipt = envelope("StockReceived", "ev-lonely", warehouse_id="wh-1")
    path = write(tmp_path / "lonely.jsonl", [receipt, envelope("StockReceived", "ev-never")])
    result = await asyncio.to_thread(
        fulfil,
        "publish",
        "--ordered",
        "--timeout",
        "2",
        str(path),
        env=env_for_subprocess(settings),
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{path}:1: StockReceived ev-lonely had no effect within 2s" in lines[0]
    assert "the router has not put it on" in lines[0] and "fulfil allocator" in lines[0]
    inputs = await read_topic(settings, "inventory.v1")
    assert [orjson.loads(r.value)["id"] for rs in inputs.values() for r in rs] == ["ev-lonely"]


async def test_with_the_router_alone_it_says_the_core_has_not_processed_the_line(
    settings: Settings, env_for_subprocess, tmp_path: Path
) -> None:
    await kafka.create_topics(settings)
    stop = asyncio.Event()
    router = asyncio.create_task(run_allocator(settings, "router", stop))
    try:
        path = write(tmp_path / "one.jsonl", [envelope("StockReceived", "ev-stuck")])
        result = await asyncio.to_thread(
            fulfil,
            "publish",
            "--ordered",
            "--timeout",
            "15",
            str(path),
            env=env_for_subprocess(settings),
            timeout=120,
        )
    finally:
        stop.set()
        await asyncio.wait_for(router, 60)
    assert result.returncode == 1
    assert "which the allocator core has not processed" in result.stderr, result.stderr
    assert f"{path}:1: StockReceived ev-stuck" in result.stderr


def test_an_effect_summary_counts_repeated_outputs() -> None:
    effect = Effect(1, "e", "ShipmentDelayed", "po-1")
    effect.outputs = ["BackorderEtaChanged"] * 3 + ["StockPositionChanged"]
    assert effect.summary() == "3 BackorderEtaChanged, StockPositionChanged"
    effect.complete = False
    assert effect.summary().endswith("(more may follow: not committed yet)")
    assert Effect(2, "f", "SkuPolicySet", "SKU-1").summary() == "processed, no output"
    dead = Effect(3, "g", "StockAdjusted", "adj-1", dead_letter="inventory.v1.dlq: oversize: big")
    assert dead.summary() == "dead-lettered to inventory.v1.dlq: oversize: big"


def test_before_topics_create_it_says_so_and_sends_nothing(
    settings: Settings, env_for_subprocess, tmp_path: Path
) -> None:
    path = write(tmp_path / "early.jsonl", [envelope("StockReceived", "ev-early")])
    result = fulfil("publish", "--ordered", str(path), env=env_for_subprocess(settings))
    assert result.returncode == 1
    assert "does not exist: run `fulfil topics create` first" in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0
