"""What one command did, collected while it is applied and rendered when it is done."""

from __future__ import annotations

from datetime import date

from schemas import contract, wire

from .state import AllocatorState, Line, Order, SkuState

# A command as the core reads it from its log (a `schemas.wire` struct, `read_command`)
# or as a pydantic model (tests, tools): the same fields under the same names.
AnyCommand = contract.Command | wire.Command


class Record:
    """Something that happened to one order during one command, rendered at the end.

    `kind` is the output type. `lines` is None until the lines to report are
    known (see `outputs.select`); `shipped` holds the units each line ships
    with this output, `previous` the ETAs a BackorderEtaChanged replaces.
    """

    __slots__ = ("kind", "order", "shipped", "lines", "reason", "previous", "not_cancelled")

    def __init__(self, kind: str, order: Order, reason: str | None = None) -> None:
        self.kind = kind
        self.order = order
        self.shipped: dict[Line, int] = {}
        self.lines: list[Line] | None = None
        self.reason = reason
        self.previous: dict[Line, date | None] | None = None
        self.not_cancelled: list[contract.NotCancelled] | None = None  # a part cancel's leftovers


class Context:
    """The state, the command and everything it touched (dicts used as ordered sets)."""

    __slots__ = (
        "state",
        "env",
        "records",
        "shipments",
        "touched",
        "eta_skus",
        "eta_orders",
        "complete_check",
        "maybe_closed",
        "cause_inbound",
        "cause_reason",
        "pre_orders",
        "alert_skus",
        "alerts_fired",
        "invalid_orders",
    )

    def __init__(self, state: AllocatorState, env: AnyCommand) -> None:
        self.state = state
        self.env = env
        self.records: list[Record] = []
        self.shipments: dict[Order, Record] = {}  # BackorderAllocated record per order
        self.touched: dict[SkuState, None] = {}  # SKUs whose position may have changed
        # SKUs whose ETAs need a walk: value = the one line appended at the queue
        # tail (cheap update) or None (full walk).
        self.eta_skus: dict[SkuState, Line | None] = {}
        self.eta_orders: dict[Order, None] = {}  # orders whose reported ETA may move
        self.complete_check: dict[Order, None] = {}  # ship_complete orders that got units
        self.maybe_closed: dict[Order, None] = {}
        self.cause_inbound: str | None = None
        self.cause_reason: str | None = None
        self.pre_orders: dict[Order, None] = {}  # orders placed with a line of an unreleased SKU
        self.alert_skus: dict[SkuState, None] = {}  # SKUs whose policy changed (alerts.py)
        # (alert_id, sku, customer) told now, in the order they fired.
        self.alerts_fired: list[tuple[str, SkuState, contract.Customer]] = []
        self.invalid_orders: list[
            contract.InvalidOrderReceivedData | wire.InvalidOrderReceivedData
        ] = []  # refused, to be told

    def record(self, kind: str, order: Order, reason: str | None = None) -> Record:
        rec = Record(kind, order, reason)
        self.records.append(rec)
        return rec

    def shipment(self, order: Order) -> Record:
        """The order's BackorderAllocated of this command (created at its first fill)."""
        rec = self.shipments.get(order)
        if rec is None:
            rec = self.shipments[order] = self.record("BackorderAllocated", order)
        return rec

    def queue_changed(self, sku: SkuState, appended: Line | None = None) -> None:
        """`sku`'s queue or supply changed; `appended`: the only change is this tail line."""
        if sku in self.eta_skus:
            self.eta_skus[sku] = None
        else:
            self.eta_skus[sku] = appended
