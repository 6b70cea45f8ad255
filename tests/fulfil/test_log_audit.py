"""The topic-level invariant check passes on real decisions and fails on a corrupted output."""

from __future__ import annotations

from fulfil.log_audit import check
from schemas.registry import encode, parse_output
from services.allocator.domain import decide, new_state
from tests.builders.streams import mixed_stream


def _fold(events):
    state, outputs = new_state(), []
    for event in events:
        state, produced = decide(state, event)
        outputs.extend(produced)
    return outputs


def test_real_decisions_pass() -> None:
    events = mixed_stream(3_000, seed=5)
    report = check(events, _fold(events))
    assert report.ok, report.problems[:5]
    assert report.lines_checked > 1_000 and report.skus_checked > 50


def _corrupt(outputs, type_, change):
    for i, out in enumerate(outputs):
        if out.type == type_:
            doc = out.model_dump(mode="json")
            change(doc)
            outputs[i] = parse_output(encode(type(out).model_validate(doc)))
            return outputs
    raise AssertionError(f"no {type_} in the stream")


def test_a_line_that_does_not_add_up_fails() -> None:
    events = mixed_stream(3_000, seed=5)

    def more_allocated(doc):
        doc["data"]["lines"][0]["allocated"] += 1

    report = check(events, _corrupt(_fold(events), "PartiallyShipped", more_allocated))
    assert not report.ok
    assert any("!= ordered" in p for p in report.problems)


def test_releasing_more_than_received_fails() -> None:
    events = [e for e in mixed_stream(3_000, seed=5)]

    def ship_more(doc):
        line = doc["data"]["lines"][0]
        line["shipped"] += 10_000

    report = check(events, _corrupt(_fold(events), "OrderAllocated", ship_more))
    assert any("more than the" in p for p in report.problems)


def test_an_output_written_twice_fails() -> None:
    events = mixed_stream(500, seed=5)
    outputs = _fold(events)
    report = check(events, outputs + outputs[3:4])
    assert any("written 2 times" in p for p in report.problems)


def test_shipping_units_adjusted_away_fails() -> None:
    """Released <= received + positive adjustments - negative adjustments taken from
    stock: three units received and counted as damaged can never ship."""
    from schemas.contract import BackorderAllocated
    from tests.builders.inputs import Events

    ev = Events(prefix="inv")
    events = [
        ev.stock_received("WH1", "A", 3),
        ev.order_placed("o1", "WH1", [("A", 3), ("B", 1)], policy="ship_complete"),
        ev.stock_adjusted("WH1", "A", -3),
    ]
    outputs = _fold(events)
    assert [o.type for o in outputs if o.type == "Backordered"] == ["Backordered", "Backordered"]
    assert check(events, outputs).ok

    def ship_the_damaged_units(doc):
        doc["type"] = "BackorderAllocated"
        doc["data"]["shipment_id"] = "forged"
        doc["data"].pop("reason")
        doc["data"]["lines"][0].update(shipped=3, allocated=3, backordered=0, reserved=0)

    lost = [o for o in outputs if o.type == "Backordered"][-1]
    assert lost.data.reason == "reservation_lost"
    forged = lost.model_dump(mode="json")
    ship_the_damaged_units(forged)
    report = check(events, [*outputs, BackorderAllocated.model_validate(forged)])
    assert any("adjusted away" in p for p in report.problems), report.problems
