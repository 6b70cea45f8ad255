"""The v1 event contract: envelope and payload models for every event type.

Forward-compatibility rule (tolerant reader): unknown fields are ignored on
every model, so a producer may add optional fields within v1 without breaking
consumers; a missing or invalid required field is rejected. Removing or
changing the meaning of a field needs a new `version` and new topics.
Field types and their rules are in `schemas.fields`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from schemas.base import Model as Model
from schemas.fields import (
    MAX_LINES_PER_ORDER,
    MAX_PRIORITY,
    MAX_UNITS,
    NO_CONTROLS,
    Currency,
    Day,
    Delta,
    Email,
    FulfilmentPolicy,
    Id,
    LineCount,
    LineNo,
    Locale,
    Money,
    Name,
    Quantity,
    Sku,
    Text,
    Timestamp,
    Units,
    check,
)

# ---------------------------------------------------------------- shared parts


class Customer(Model):
    customer_id: Id
    email: Email
    name: Name | None = None
    locale: Locale | None = None


class OrderLine(Model):
    line_no: LineNo
    sku: Sku
    quantity: Quantity
    unit_price: Money | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    @check
    def _price_has_currency(self) -> OrderLine:
        if (self.unit_price is None) != (self.currency is None):
            raise ValueError("unit_price and currency must be given together")
        return self


class InboundLine(Model):
    sku: Sku
    quantity: Quantity


# ---------------------------------------------------------------- inputs


class OrderPlacedData(Model):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=MAX_LINES_PER_ORDER)]
    fulfilment_policy: FulfilmentPolicy = "ship_partial"
    priority: Annotated[int, Field(strict=True, ge=-MAX_PRIORITY, le=MAX_PRIORITY)] = 0
    placed_at: Timestamp

    @model_validator(mode="after")
    @check
    def _unique_line_numbers(self) -> OrderPlacedData:
        numbers = [line.line_no for line in self.lines]
        if len(set(numbers)) != len(numbers):
            raise ValueError("line_no must be unique within an order")
        return self


class OrderCancelledData(Model):
    order_id: Id
    warehouse_id: Id
    reason: Text
    cancelled_at: Timestamp


class StockReceivedData(Model):
    receipt_id: Id
    warehouse_id: Id
    sku: Sku
    quantity: Quantity
    inbound_id: Id | None = None
    received_at: Timestamp


class StockAdjustedData(Model):
    adjustment_id: Id
    warehouse_id: Id
    sku: Sku
    delta: Delta
    reason: Text

    @model_validator(mode="after")
    @check
    def _non_zero(self) -> StockAdjustedData:
        if self.delta == 0:
            raise ValueError("delta must not be zero")
        return self


class InboundScheduledData(Model):
    inbound_id: Id
    warehouse_id: Id
    lines: Annotated[list[InboundLine], Field(min_length=1, max_length=MAX_LINES_PER_ORDER)]
    eta: Day
    supplier: (
        Annotated[
            str,
            StringConstraints(
                strip_whitespace=True, min_length=1, max_length=500, pattern=NO_CONTROLS
            ),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    @check
    def _unique_skus(self) -> InboundScheduledData:
        skus = [line.sku for line in self.lines]
        if len(set(skus)) != len(skus):
            raise ValueError("each sku may appear once per inbound shipment")
        return self


class ShipmentDelayedData(Model):
    inbound_id: Id
    warehouse_id: Id
    new_eta: Day
    reason: Text


class InboundCancelledData(Model):
    """The not-yet-received rest of an inbound will not arrive (PO cancelled or closed short)."""

    inbound_id: Id
    warehouse_id: Id
    reason: Text
    cancelled_at: Timestamp


BackorderMode = Literal["any", "covered_only"]


class SkuPolicySetData(Model):
    """A SKU's policy, stated in full: fields left out take their defaults (backorderable,
    not discontinued, no backorder limit, `any`, released)."""

    warehouse_id: Id
    sku: Sku
    backorderable: bool = True
    discontinued: bool = False
    # Most units that may wait in the backorder queue; beyond it a line is rejected
    # (reason `backorder_limit`). None: no limit.
    backorder_limit: Annotated[int, Field(strict=True, ge=0, le=MAX_UNITS)] | None = None
    # `covered_only`: a backorder is accepted only for units a scheduled inbound covers
    # (reason `not_covered` for the rest), so every accepted backorder has a date.
    backorder_mode: BackorderMode = "any"
    # Before this date orders for the SKU are pre-orders: accepted, never shipped
    # before it (stock received early is held), ETA never before it.
    release_date: Day | None = None


class CancelLine(Model):
    line_no: LineNo
    quantity: Quantity


class OrderLinesCancelledData(Model):
    """Cancel up to `quantity` not-yet-released units of each line (backordered first)."""

    order_id: Id
    warehouse_id: Id
    lines: Annotated[list[CancelLine], Field(min_length=1, max_length=MAX_LINES_PER_ORDER)]
    reason: Text
    cancelled_at: Timestamp

    @model_validator(mode="after")
    def _unique_line_numbers(self) -> OrderLinesCancelledData:
        numbers = [line.line_no for line in self.lines]
        if len(set(numbers)) != len(numbers):
            raise ValueError("line_no must be unique within a cancellation")
        return self


class OrderPolicyChangedData(Model):
    order_id: Id
    warehouse_id: Id
    fulfilment_policy: FulfilmentPolicy


class BackorderConsentGivenData(Model):
    """The customer agrees to wait for the new date (all backordered lines when no `lines`)."""

    order_id: Id
    warehouse_id: Id
    lines: Annotated[list[LineNo], Field(min_length=1, max_length=MAX_LINES_PER_ORDER)] | None = (
        None
    )


class StockAlertRequestedData(Model):
    """A customer wants to hear once when the SKU can be ordered again."""

    alert_id: Id
    warehouse_id: Id
    sku: Sku
    customer: Customer


class StockAlertCancelledData(Model):
    alert_id: Id
    warehouse_id: Id


class ValidationIssue(Model):
    """One contract violation: where (a field path) and what, never the value itself."""

    path: Annotated[str, StringConstraints(max_length=500, pattern=NO_CONTROLS)]
    message: Text


class InvalidOrderReceivedData(Model):
    """The router read an order it had to refuse, and could still tell whose it was."""

    order_id: Id
    warehouse_id: Id
    event_id: Id
    errors: Annotated[list[ValidationIssue], Field(min_length=1, max_length=20)]


class ClockTickedData(Model):
    """The allocator core's only notion of time (internal: allocator.commands.v1 only)."""

    now: Timestamp


# ---------------------------------------------------------------- outputs

RejectReason = Literal[
    "not_backorderable",
    "discontinued",
    "cancelled_before_placement",
    "backorder_limit",
    "not_covered",
]


class AllocationLine(Model):
    """One order line as an allocation event reports it.

    `shipped` is what this event releases to the warehouse; the other
    quantities are the line's totals after the event, so that
    allocated + backordered + rejected + cancelled == quantity always holds.
    `reserved` is the part of `backordered` held on the shelf for a
    ship_complete order.
    """

    line_no: LineNo
    sku: Sku
    quantity: Quantity
    shipped: LineCount = 0
    allocated: LineCount = 0
    backordered: LineCount = 0
    reserved: LineCount = 0
    rejected: LineCount = 0
    cancelled: LineCount = 0
    eta: Day | None = None
    previous_eta: Day | None = None
    reason: RejectReason | None = None
    unit_price: Money | None = None
    currency: Currency | None = None
    # With the delay-consent rule on (FULFIL_DELAY_CONSENT=ftc), for backordered lines:
    # the date the customer was promised, and where the consent to a later date stands
    # (`offered`: silence is consent; `required`: cancelled after `promised_eta` unless
    # the customer agrees; `given`). Both None with the rule off.
    promised_eta: Day | None = None
    consent: Literal["offered", "required", "given"] | None = None


class OrderOutputData(Model):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[AllocationLine], Field(min_length=1)]


class OrderAllocatedData(OrderOutputData):
    shipment_id: Id


class PartiallyShippedData(OrderOutputData):
    shipment_id: Id


class BackorderedData(OrderOutputData):
    # `reservation_lost`: a negative stock adjustment took units this (ship_complete)
    # order held; the lines report them as backordered again, with their ETA.
    # `pre_order`: the SKU is not released yet; nothing ships before its release date.
    reason: Literal["insufficient_stock", "ship_complete_hold", "reservation_lost", "pre_order"]


class BackorderAllocatedData(OrderOutputData):
    shipment_id: Id


class EtaChangeCause(Model):
    event_type: Id
    event_id: Id
    inbound_id: Id | None = None
    reason: Text | None = None


class BackorderEtaChangedData(OrderOutputData):
    cause: EtaChangeCause


class OrderRejectedData(OrderOutputData):
    # An order that failed the contract (reason `invalid`) has no lines and no customer
    # block to report: only its ids and what was wrong (`errors`, field paths, no values).
    customer: Customer | None = None  # type: ignore[assignment]
    lines: list[AllocationLine]  # empty for an invalid order
    reason: Literal["invalid"] | None = None
    errors: list[ValidationIssue] | None = None


class NotCancelled(Model):
    """Units a cancellation asked for that could not be cancelled, and why."""

    line_no: LineNo
    quantity: Quantity
    # not_open: shipped, rejected or cancelled already; unknown_line: no such line_no.
    reason: Literal["not_open", "unknown_line"]


class OrderCancellationProcessedData(OrderOutputData):
    reason: Text
    not_cancelled: list[NotCancelled] | None = None


class BackorderConsentRecordedData(OrderOutputData):
    pass


class StockAlertTriggeredData(Model):
    alert_id: Id
    warehouse_id: Id
    sku: Sku
    customer: Customer
    available: Units
    promise_eta: Day | None = None


class StockPositionChangedData(Model):
    warehouse_id: Id
    sku: Sku
    available: Units
    backordered: Units
    reserved: Units
    incoming: Units
    # The earliest open inbound's ETA, whoever its units are promised to.
    next_eta: Day | None = None
    shortfall: Units = 0
    # The date a new order's unit beyond `available` would get, after everything
    # already queued (None: no scheduled inbound covers it, or its date is overdue).
    promise_eta: Day | None = None


# ---------------------------------------------------------------- envelopes


class Envelope(Model):
    id: Id
    type: str
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None


class OrderPlaced(Envelope):
    """An upstream order system accepted an order."""

    type: Literal["OrderPlaced"]
    data: OrderPlacedData


class OrderCancelled(Envelope):
    """Cancel every quantity not yet released to the warehouse."""

    type: Literal["OrderCancelled"]
    data: OrderCancelledData


class StockReceived(Envelope):
    """Units arrived at a warehouse."""

    type: Literal["StockReceived"]
    data: StockReceivedData


class StockAdjusted(Envelope):
    """A cycle count or damage changed on-hand units."""

    type: Literal["StockAdjusted"]
    data: StockAdjustedData


class InboundScheduled(Envelope):
    """A supplier shipment is expected on a date."""

    type: Literal["InboundScheduled"]
    data: InboundScheduledData


class ShipmentDelayed(Envelope):
    """An inbound supplier shipment is late."""

    type: Literal["ShipmentDelayed"]
    data: ShipmentDelayedData


class SkuPolicySet(Envelope):
    """Whether a SKU may be backordered (and how much), is discontinued or not released yet."""

    type: Literal["SkuPolicySet"]
    data: SkuPolicySetData


class InboundCancelled(Envelope):
    """The rest of an inbound shipment will not arrive."""

    type: Literal["InboundCancelled"]
    data: InboundCancelledData


class ClockTicked(Envelope):
    """Today, for the allocator core (internal: written on allocator.commands.v1 only)."""

    type: Literal["ClockTicked"]
    data: ClockTickedData


class OrderLinesCancelled(Envelope):
    """Cancel part of an order: up to a quantity of each named line."""

    type: Literal["OrderLinesCancelled"]
    data: OrderLinesCancelledData


class OrderPolicyChanged(Envelope):
    """The customer switched between ship_partial and ship_complete."""

    type: Literal["OrderPolicyChanged"]
    data: OrderPolicyChangedData


class BackorderConsentGiven(Envelope):
    """The customer agrees to a later date for backordered lines (delay-consent rule)."""

    type: Literal["BackorderConsentGiven"]
    data: BackorderConsentGivenData


class StockAlertRequested(Envelope):
    """Tell this customer once when the SKU can be ordered."""

    type: Literal["StockAlertRequested"]
    data: StockAlertRequestedData


class StockAlertCancelled(Envelope):
    type: Literal["StockAlertCancelled"]
    data: StockAlertCancelledData


class InvalidOrderReceived(Envelope):
    """An order the router refused, with its ids (internal: allocator.commands.v1 only)."""

    type: Literal["InvalidOrderReceived"]
    data: InvalidOrderReceivedData


class OrderAllocated(Envelope):
    """Every line of an order is released now in one shipment."""

    type: Literal["OrderAllocated"]
    data: OrderAllocatedData


class PartiallyShipped(Envelope):
    """What is available ships now; the remainder is backordered with per-line ETA."""

    type: Literal["PartiallyShipped"]
    data: PartiallyShippedData


class Backordered(Envelope):
    """Nothing ships now; lines wait for stock."""

    type: Literal["Backordered"]
    data: BackorderedData


class BackorderAllocated(Envelope):
    """Stock arrived for previously backordered units."""

    type: Literal["BackorderAllocated"]
    data: BackorderAllocatedData


class BackorderEtaChanged(Envelope):
    """The expected ship date of lines moved."""

    type: Literal["BackorderEtaChanged"]
    data: BackorderEtaChangedData


class OrderRejected(Envelope):
    """Lines that are out of stock and will not ship."""

    type: Literal["OrderRejected"]
    data: OrderRejectedData


class OrderCancellationProcessed(Envelope):
    """What a cancellation released and what had already shipped."""

    type: Literal["OrderCancellationProcessed"]
    data: OrderCancellationProcessedData


class StockPositionChanged(Envelope):
    """A SKU's stock position after a change."""

    type: Literal["StockPositionChanged"]
    data: StockPositionChangedData


class BackorderConsentRecorded(Envelope):
    """The customer's consent to a later date was recorded for these lines."""

    type: Literal["BackorderConsentRecorded"]
    data: BackorderConsentRecordedData


class StockAlertTriggered(Envelope):
    """A SKU a customer asked about can be ordered: tell them, once."""

    type: Literal["StockAlertTriggered"]
    data: StockAlertTriggeredData


INPUT_EVENTS: tuple[type[Envelope], ...] = (
    OrderPlaced,
    OrderCancelled,
    StockReceived,
    StockAdjusted,
    InboundScheduled,
    ShipmentDelayed,
    SkuPolicySet,
    InboundCancelled,
    OrderLinesCancelled,
    OrderPolicyChanged,
    BackorderConsentGiven,
    StockAlertRequested,
    StockAlertCancelled,
)
# Commands that only the allocator itself writes onto allocator.commands.v1: the router
# never accepts them from orders.v1 / inventory.v1.
INTERNAL_COMMANDS: tuple[type[Envelope], ...] = (ClockTicked, InvalidOrderReceived)
OUTPUT_EVENTS: tuple[type[Envelope], ...] = (
    OrderAllocated,
    PartiallyShipped,
    Backordered,
    BackorderAllocated,
    BackorderEtaChanged,
    OrderRejected,
    OrderCancellationProcessed,
    StockPositionChanged,
    BackorderConsentRecorded,
    StockAlertTriggered,
)

# The same sets as discriminated unions on `type`: what `parse_input` / `parse_output`
# return, so a type checker sees each member's `data` (the wire format is unchanged).
InputEvent = Annotated[
    OrderPlaced
    | OrderCancelled
    | StockReceived
    | StockAdjusted
    | InboundScheduled
    | ShipmentDelayed
    | SkuPolicySet
    | InboundCancelled
    | OrderLinesCancelled
    | OrderPolicyChanged
    | BackorderConsentGiven
    | StockAlertRequested
    | StockAlertCancelled,
    Field(discriminator="type"),
]
# What the allocator core folds: every input plus its internal commands.
Command = Annotated[
    OrderPlaced
    | OrderCancelled
    | StockReceived
    | StockAdjusted
    | InboundScheduled
    | ShipmentDelayed
    | SkuPolicySet
    | InboundCancelled
    | OrderLinesCancelled
    | OrderPolicyChanged
    | BackorderConsentGiven
    | StockAlertRequested
    | StockAlertCancelled
    | ClockTicked
    | InvalidOrderReceived,
    Field(discriminator="type"),
]
OutputEvent = Annotated[
    OrderAllocated
    | PartiallyShipped
    | Backordered
    | BackorderAllocated
    | BackorderEtaChanged
    | OrderRejected
    | OrderCancellationProcessed
    | StockPositionChanged
    | BackorderConsentRecorded
    | StockAlertTriggered,
    Field(discriminator="type"),
]
