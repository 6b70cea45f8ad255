"""A test driver around `decide`: checks invariants and the contract after every command."""

from __future__ import annotations

from typing import Any

from schemas.registry import encode, parse_output
from services.allocator.domain import check_invariants, decide, new_state
from services.allocator.domain.eta import position_report
from tests.builders.inputs import Events


class Allocator:
    """`alloc(event)` folds one event and returns its outputs (validated)."""

    def __init__(
        self, dedup_window: int = 100_000, prefix: str = "ev", consent_rule: bool = False
    ) -> None:
        self.state = new_state(dedup_window, consent_rule=consent_rule)
        self.ev = Events(prefix=prefix)
        self.log: list[Any] = []
        self.outputs: list[Any] = []

    def __call__(self, event: Any) -> list[Any]:
        self.state, outputs = decide(self.state, event)
        self.log.append(event)
        check_invariants(self.state)
        today = self.state.today
        for output in outputs:
            assert parse_output(encode(output)) == output  # valid against the contract
            assert output.causation_id == event.id
            for ln in getattr(output.data, "lines", ()):
                assert today is None or ln.eta is None or ln.eta >= today, "an ETA in the past"
        self.outputs.extend(outputs)
        return outputs

    # shortcuts: build with this allocator's `Events` and fold at once
    def place(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.order_placed(*args, **kwargs))

    def cancel(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.order_cancelled(*args, **kwargs))

    def receive(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.stock_received(*args, **kwargs))

    def adjust(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.stock_adjusted(*args, **kwargs))

    def schedule(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.inbound_scheduled(*args, **kwargs))

    def delay(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.shipment_delayed(*args, **kwargs))

    def policy(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.sku_policy_set(*args, **kwargs))

    def cancel_inbound(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.inbound_cancelled(*args, **kwargs))

    def tick(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.clock_ticked(*args, **kwargs))

    def cancel_lines(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.order_lines_cancelled(*args, **kwargs))

    def switch(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.order_policy_changed(*args, **kwargs))

    def consent(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.backorder_consent_given(*args, **kwargs))

    def alert(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.stock_alert_requested(*args, **kwargs))

    def unalert(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self(self.ev.stock_alert_cancelled(*args, **kwargs))

    def position(self, wh: str, sku: str) -> dict[str, Any]:
        return position_report(self.state, wh, sku)


def types(outputs: list[Any]) -> list[str]:
    return [o.type for o in outputs]


def of_type(outputs: list[Any], kind: str) -> list[Any]:
    return [o for o in outputs if o.type == kind]


def one(outputs: list[Any], kind: str, order_id: str | None = None) -> Any:
    found = [
        o
        for o in outputs
        if o.type == kind and (order_id is None or getattr(o.data, "order_id", None) == order_id)
    ]
    assert len(found) == 1, f"expected one {kind} for {order_id}, got {types(outputs)}"
    return found[0]


def line(output: Any, line_no: int = 1) -> Any:
    found = [ln for ln in output.data.lines if ln.line_no == line_no]
    assert len(found) == 1, f"line {line_no} not in {output.type}"
    return found[0]


def order_ids(outputs: list[Any], kind: str | None = None) -> list[str]:
    return [
        o.data.order_id
        for o in outputs
        if hasattr(o.data, "order_id") and (kind is None or o.type == kind)
    ]
