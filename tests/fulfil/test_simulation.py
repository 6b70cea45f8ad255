"""`fulfil simulate`: a seeded, reproducible, realistic stream of store traffic."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import orjson
import pytest

from fulfil.log_audit import check
from fulfil.simulation import START, generate, simulate, simulate_records
from schemas.registry import REGISTRY, ContractError, parse_event, parse_input
from services.allocator.domain import decide, new_state


@pytest.fixture(scope="module")
def day() -> list:
    """The default simulated day (20 k messages, seed 1)."""
    return list(generate())


@pytest.fixture(scope="module")
def parsed(day) -> list:
    """The inputs (orders.v1 / inventory.v1): everything but the invalid messages and the ticks."""
    return [
        parse_input(r.value)
        for r in day
        if not r.type.startswith("invalid:") and r.type != "ClockTicked"
    ]


@pytest.fixture(scope="module")
def folded(day, parsed) -> tuple[list, list]:
    """The allocator's decisions on the day, one fold per warehouse (its command partition);
    a tick reaches every partition."""
    states: dict[str, object] = defaultdict(new_state)
    for wh in {e.data.warehouse_id for e in parsed}:
        states[wh] = new_state()
    outputs = []
    for record in day:
        if record.type.startswith("invalid:"):
            continue
        if record.type == "ClockTicked":
            tick = parse_event(record.value)
            for wh in sorted(states):
                # one tick per command partition, each with its own id
                states[wh], produced = decide(
                    states[wh], tick.model_copy(update={"id": f"{tick.id}/{wh}"})
                )
                outputs.extend(produced)
            continue
        event = parse_input(record.value)
        wh = event.data.warehouse_id
        states[wh], produced = decide(states[wh], event)
        outputs.extend(produced)
    return parsed, outputs


def test_same_arguments_give_byte_identical_output() -> None:
    first = simulate(events=3_000, seed=5, warehouses=2, skus=50)
    assert simulate(events=3_000, seed=5, warehouses=2, skus=50) == first
    assert simulate(events=3_000, seed=6, warehouses=2, skus=50) != first
    assert len(first) == 3_000
    assert [v for _, _, v in simulate_records(events=3_000, seed=5, warehouses=2, skus=50)] == first


def test_default_day_is_the_documented_size_and_shape(day) -> None:
    assert len(day) == 20_000
    assert [r.value for r in day] == simulate()
    assert all(b"\n" not in r.value for r in day)  # one message per JSONL line
    # Monotonic simulated time, and the trading part is about one day.
    times = [r.occurred_at for r in day]
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))
    assert timedelta(hours=18) <= times[-1] - START <= timedelta(hours=30)


def test_every_input_event_type_and_case_is_there(day, parsed) -> None:
    types = Counter(e.type for e in parsed)
    assert set(types) == {
        "OrderPlaced",
        "OrderCancelled",
        "OrderLinesCancelled",
        "OrderPolicyChanged",
        "BackorderConsentGiven",
        "StockAlertRequested",
        "StockAlertCancelled",
        "StockReceived",
        "StockAdjusted",
        "InboundScheduled",
        "ShipmentDelayed",
        "SkuPolicySet",
        "InboundCancelled",
    }
    ticks = [r for r in day if r.type == "ClockTicked"]
    assert len(ticks) >= 4 and {(r.topic, r.key) for r in ticks} == {("allocator.commands.v1", b"")}
    assert types["OrderPlaced"] > 0.7 * len(parsed)
    orders = [e.data for e in parsed if e.type == "OrderPlaced"]
    policies = Counter(o.fulfilment_policy for o in orders)
    assert 0.15 < policies["ship_complete"] / len(orders) < 0.25
    assert 0 < sum(o.priority > 0 for o in orders) < 0.1 * len(orders)
    assert sum(len(o.lines) > 1 for o in orders) > 0.2 * len(orders)
    priced = [line for o in orders for line in o.lines if line.unit_price is not None]
    assert len(priced) > 0.9 * sum(len(o.lines) for o in orders)
    assert len({line.currency for line in priced}) >= 3
    locales = Counter((o.customer.locale or "").split("-")[0] for o in orders)
    assert locales["en"] and locales["de"] and len(locales) >= 5
    assert all(
        o.customer.email.split("@")[1].endswith(("example.com", "example.org", "example.net"))
        for o in orders
    )
    assert len({o.warehouse_id for o in orders}) == 3
    assert len({line.sku for o in orders for line in o.lines}) <= 300

    # Purchasing: lead times of 3-30 days, receipts mostly against an inbound, some short.
    inbounds = {e.data.inbound_id: e for e in parsed if e.type == "InboundScheduled"}
    for event in inbounds.values():
        assert 3 <= (event.data.eta - event.occurred_at.date()).days <= 30
    # Purchase orders cancelled before anything arrived; some stuck past their ETA.
    cancelled = {e.data.inbound_id for e in parsed if e.type == "InboundCancelled"}
    assert cancelled and cancelled <= set(inbounds)
    assert (
        not {r.inbound_id for r in [e.data for e in parsed if e.type == "StockReceived"]}
        & cancelled
    )
    assert sum(e.data.eta < START.date() for e in inbounds.values()) >= 3
    receipts = [e.data for e in parsed if e.type == "StockReceived"]
    against = [r for r in receipts if r.inbound_id is not None]
    assert len(against) > 0.5 * len(receipts) and len(against) < len(receipts)
    scheduled = {(i, line.sku): line.quantity for i, e in inbounds.items() for line in e.data.lines}
    assert any(r.quantity < scheduled[(r.inbound_id, r.sku)] for r in against)

    # Supplier delays move the ETA later.
    eta = {i: e.data.eta for i, e in inbounds.items()}
    delays = [e.data for e in parsed if e.type == "ShipmentDelayed"]
    assert delays
    for delay in delays:
        assert delay.new_eta > eta[delay.inbound_id]
        eta[delay.inbound_id] = delay.new_eta

    deltas = [e.data.delta for e in parsed if e.type == "StockAdjusted"]
    assert min(deltas) < 0 < max(deltas)

    # Mid-stream, per warehouse: one SKU no longer backorderable, one discontinued, one
    # capped, one covered_only, one pre-order.
    set_policies = [e for e in parsed if e.type == "SkuPolicySet"]
    assert len(set_policies) == 15
    assert all(START < e.occurred_at for e in set_policies)
    assert Counter((e.data.backorderable, e.data.discontinued) for e in set_policies) == {
        (False, False): 3,
        (False, True): 3,
        (True, False): 9,
    }
    assert sum(e.data.backorder_limit is not None for e in set_policies) == 3
    assert sum(e.data.backorder_mode == "covered_only" for e in set_policies) == 3
    assert sum(e.data.release_date is not None for e in set_policies) == 3

    # Valid messages go to the topic of their type, keyed by warehouse.
    for record in day:
        if not record.type.startswith("invalid:") and record.type != "ClockTicked":
            assert record.topic == REGISTRY[record.type].topic
            assert record.key == orjson.loads(record.value)["data"]["warehouse_id"].encode()


def test_invalid_messages_are_rejected_by_the_contract(day) -> None:
    invalid = [r for r in day if r.type.startswith("invalid:")]
    assert 0.002 * len(day) < len(invalid) < 0.01 * len(day)
    kinds = Counter()
    for record in invalid:
        with pytest.raises(ContractError) as caught:
            parse_input(record.value)
        kinds[caught.value.kind] += 1
        assert record.type == f"invalid:{caught.value.kind}"
    assert set(kinds) == {"bad_json", "unknown_type", "schema_violation", "bad_quantity"}
    # Some of them name a real order (so `fulfil trace` shows them).
    placed = {
        orjson.loads(r.value)["data"]["order_id"].encode() for r in day if r.type == "OrderPlaced"
    }
    assert any(set(re.findall(rb"ord-1-\d{7}", r.value)) & placed for r in invalid)
    assert simulate(events=2_000, seed=3, invalid_rate=0.0) == [
        r.value for r in generate(2_000, 3, invalid_rate=0.0)
    ]
    assert all(not r.type.startswith("invalid:") for r in generate(2_000, 3, invalid_rate=0.0))


def test_a_healthy_store_most_orders_ship_at_once(folded) -> None:
    inputs, outputs = folded
    first: dict[str, str] = {}
    for out in outputs:
        if (
            out.type in ("OrderAllocated", "PartiallyShipped", "Backordered")
            and out.data.order_id not in first
        ):
            first[out.data.order_id] = out.type
    waited = sum(kind != "OrderAllocated" for kind in first.values()) / len(first)
    assert 0.005 < waited < 0.10, waited
    kinds = Counter(out.type for out in outputs)
    assert (
        kinds["BackorderAllocated"]
        and kinds["OrderRejected"]
        and kinds["OrderCancellationProcessed"]
    )
    # Some cancellations hit orders that had already shipped part of their lines.
    assert any(
        out.type == "OrderCancellationProcessed"
        and any(line.allocated for line in out.data.lines)
        and any(line.cancelled for line in out.data.lines)
        for out in outputs
    )
    report = check(inputs, outputs)
    assert report.ok, report.problems[:5]


def test_parameters_shape_the_store() -> None:
    records = list(generate(events=4_000, seed=2, warehouses=5, skus=40, invalid_rate=0.0))
    events = [parse_input(r.value) for r in records if r.type != "ClockTicked"]
    assert len({e.data.warehouse_id for e in events}) == 5
    assert len({e.data.sku for e in events if hasattr(e.data, "sku")}) <= 40
    one = list(generate(events=500, seed=2, warehouses=1, skus=5))
    assert len(one) == 500


def test_cli_writes_the_same_bytes_and_a_summary(tmp_path) -> None:
    out = tmp_path / "day.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fulfil",
            "simulate",
            "--events",
            "3000",
            "--seed",
            "4",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["events"] == 3_000 and summary["seed"] == 4
    assert sum(summary["by_type"].values()) + sum(summary["invalid"].values()) == 3_000
    assert out.read_bytes() == b"".join(v + b"\n" for v in simulate(events=3_000, seed=4))
    assert datetime.fromisoformat(summary["trading_starts_at"]).date() == date(2026, 11, 2)


def test_cli_rejects_out_and_publish_together(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fulfil",
            "simulate",
            "--out",
            str(tmp_path / "x.jsonl"),
            "--publish",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_day_has_supply_going_wrong_and_the_audit_holds(folded) -> None:
    """Issue 15 in the traffic: ticks make stuck purchase orders overdue (customers lose the
    date), pre-orders are confirmed as such, a capped SKU turns orders away; the log audit
    (released <= received + positive - negative adjustments taken) holds."""
    inputs, outputs = folded
    reasons = Counter(o.data.reason for o in outputs if o.type == "Backordered")
    causes = Counter(o.data.cause.reason for o in outputs if o.type == "BackorderEtaChanged")
    rejects = Counter(
        line.reason for o in outputs if o.type == "OrderRejected" for line in o.data.lines
    )
    assert reasons["pre_order"] and causes["inbound_overdue"] and rejects["backorder_limit"]
    overdue = [
        line
        for o in outputs
        if o.type == "BackorderEtaChanged" and o.data.cause.reason == "inbound_overdue"
        for line in o.data.lines
    ]
    assert overdue and all(line.eta is None for line in overdue)
    assert any(o.type == "StockPositionChanged" and o.data.promise_eta for o in outputs)
    report = check(inputs, outputs)
    assert report.ok, report.problems[:5]


async def test_cli_publish_writes_the_inputs_and_each_tick_on_every_command_partition(
    settings, env_for_subprocess
) -> None:
    """`fulfil publish` refuses a simulated file's ticks (internal commands); `fulfil simulate
    --publish` writes the same traffic itself: inputs, invalid ones included, to the input
    topics, each tick as `fulfil clock tick --now` writes it, on every command partition."""
    from schemas.registry import COMMANDS, INVENTORY, ORDERS, encode
    from services.allocator.service_layer.clock import tick
    from tests.fulfil.helpers import fulfil
    from tests.kafka_helpers import read_topic

    records = list(generate(events=2_000, seed=1))
    ticks = [r.occurred_at for r in records if r.type == "ClockTicked"]
    assert ticks, "the traffic of this test needs a tick"
    result = fulfil(
        "simulate", "--events", "2000", "--seed", "1", "--publish", "--json",
        env=env_for_subprocess(settings),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    partitions = settings.fulfil_partitions
    inputs = Counter(r.topic for r in records if r.type != "ClockTicked")
    assert orjson.loads(result.stdout)["published"] == {
        settings.topic(ORDERS): inputs[ORDERS],
        settings.topic(INVENTORY): inputs[INVENTORY],
        settings.topic(COMMANDS): len(ticks) * partitions,
    }
    commands = await read_topic(settings, COMMANDS)
    assert {p: [r.value for r in rs] for p, rs in commands.items()} == {
        p: [encode(tick(now, p)) for now in ticks] for p in range(partitions)
    }
    written = await read_topic(settings, ORDERS)
    assert sorted(r.value for rs in written.values() for r in rs) == sorted(
        r.value for r in records if r.topic == ORDERS
    )
