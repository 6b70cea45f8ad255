"""The v1 contract as msgspec structs: what `schemas.decode` decodes into.

Generated from the pydantic models in schemas/contract.py by `make schemas`
(schemas/wiregen.py); do not edit. Each struct has the fields of the model of
the same name, with the rules msgspec checks while decoding; the comments
name the rules the decoder checks on the decoded value (patterns, whitespace,
the contract's validators). An envelope's `type` is the tag of its union.
"""

from datetime import date, datetime
from typing import Annotated, ClassVar, Literal

from msgspec import Meta, Struct


class _Struct(Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """Immutable like the models; never in a reference cycle, so the GC need not track it.
    A field the contract does not know is refused here and left to pydantic, which
    ignores it (msgspec would skip it unread, where pydantic checks it is sound JSON).
    (mypy wants `frozen` on every class; `kw_only` is not inherited, and lets fields
    keep the models' order.)"""


class _Tagged(_Struct, frozen=True, tag_field="type"):
    """An envelope: its `type` is the tag of the union it is decoded from."""


Id = Annotated[str, Meta(min_length=1, max_length=128)]  # no space at either end; pattern r"^[^\x00-\x1f\x7f-\x9f]*\Z"
Name = Annotated[str, Meta(max_length=200)]  # no space at either end; pattern r"^[^\x00-\x1f\x7f-\x9f]*\Z"
Text = Annotated[str, Meta(min_length=1, max_length=500)]  # no space at either end; pattern r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*\Z"
Sku = Annotated[str, Meta(min_length=1, max_length=64)]  # no space at either end; pattern r"^[^\s\x00-\x1f\x7f-\x9f]+\Z"
Quantity = Annotated[int, Meta(ge=1, le=1000000)]
LineCount = Annotated[int, Meta(ge=0, le=1000000)]
Units = Annotated[int, Meta(ge=0, le=9223372036854775807)]
Delta = Annotated[int, Meta(ge=-1000000, le=1000000)]
LineNo = Annotated[int, Meta(ge=1, le=100000)]
Currency = Annotated[str, Meta(max_length=10000)]  # pattern r"^[A-Z]{3}\Z"; then _known_currency
Money = Annotated[str, Meta(max_length=10000)]  # pattern r"^[0-9]{1,15}(\.[0-9]{1,4})?\Z"; then _money
Timestamp = Annotated[datetime, Meta(tz=True)]  # then _in_range
Day = date  # then _day_in_range
Locale = Annotated[str, Meta(max_length=10000)]  # pattern r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*\Z"
Email = Annotated[str, Meta(min_length=3, max_length=254)]  # no space at either end; then _email
FulfilmentPolicy = Literal["ship_partial", "ship_complete"]
BackorderMode = Literal["any", "covered_only"]
RejectReason = Literal["not_backorderable", "discontinued", "cancelled_before_placement", "backorder_limit", "not_covered"]


class Customer(_Struct, frozen=True, kw_only=True):
    customer_id: Id
    email: Email
    name: Name | None = None
    locale: Locale | None = None


class OrderLine(_Struct, frozen=True, kw_only=True):
    line_no: LineNo
    sku: Sku
    quantity: Quantity
    unit_price: Money | None = None
    currency: Currency | None = None


class OrderPlacedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[OrderLine], Meta(min_length=1, max_length=500)]  # each: then _price_has_currency
    fulfilment_policy: FulfilmentPolicy = "ship_partial"
    priority: Annotated[int, Meta(ge=-1000, le=1000)] = 0
    placed_at: Timestamp


class OrderPlaced(_Tagged, frozen=True, kw_only=True, tag="OrderPlaced"):
    type: ClassVar[Literal["OrderPlaced"]] = "OrderPlaced"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: OrderPlacedData  # then _unique_line_numbers


class OrderCancelledData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    reason: Text
    cancelled_at: Timestamp


class OrderCancelled(_Tagged, frozen=True, kw_only=True, tag="OrderCancelled"):
    type: ClassVar[Literal["OrderCancelled"]] = "OrderCancelled"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: OrderCancelledData


class StockReceivedData(_Struct, frozen=True, kw_only=True):
    receipt_id: Id
    warehouse_id: Id
    sku: Sku
    quantity: Quantity
    inbound_id: Id | None = None
    received_at: Timestamp


class StockReceived(_Tagged, frozen=True, kw_only=True, tag="StockReceived"):
    type: ClassVar[Literal["StockReceived"]] = "StockReceived"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: StockReceivedData


class StockAdjustedData(_Struct, frozen=True, kw_only=True):
    adjustment_id: Id
    warehouse_id: Id
    sku: Sku
    delta: Delta
    reason: Text


class StockAdjusted(_Tagged, frozen=True, kw_only=True, tag="StockAdjusted"):
    type: ClassVar[Literal["StockAdjusted"]] = "StockAdjusted"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: StockAdjustedData  # then _non_zero


class InboundLine(_Struct, frozen=True, kw_only=True):
    sku: Sku
    quantity: Quantity


class InboundScheduledData(_Struct, frozen=True, kw_only=True):
    inbound_id: Id
    warehouse_id: Id
    lines: Annotated[list[InboundLine], Meta(min_length=1, max_length=500)]
    eta: Day
    supplier: Annotated[str, Meta(min_length=1, max_length=500)] | None = None  # no space at either end; pattern r"^[^\x00-\x1f\x7f-\x9f]*\Z"


class InboundScheduled(_Tagged, frozen=True, kw_only=True, tag="InboundScheduled"):
    type: ClassVar[Literal["InboundScheduled"]] = "InboundScheduled"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: InboundScheduledData  # then _unique_skus


class ShipmentDelayedData(_Struct, frozen=True, kw_only=True):
    inbound_id: Id
    warehouse_id: Id
    new_eta: Day
    reason: Text


class ShipmentDelayed(_Tagged, frozen=True, kw_only=True, tag="ShipmentDelayed"):
    type: ClassVar[Literal["ShipmentDelayed"]] = "ShipmentDelayed"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: ShipmentDelayedData


class SkuPolicySetData(_Struct, frozen=True, kw_only=True):
    warehouse_id: Id
    sku: Sku
    backorderable: bool = True
    discontinued: bool = False
    backorder_limit: Units | None = None
    backorder_mode: BackorderMode = "any"
    release_date: Day | None = None


class SkuPolicySet(_Tagged, frozen=True, kw_only=True, tag="SkuPolicySet"):
    type: ClassVar[Literal["SkuPolicySet"]] = "SkuPolicySet"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: SkuPolicySetData


class InboundCancelledData(_Struct, frozen=True, kw_only=True):
    inbound_id: Id
    warehouse_id: Id
    reason: Text
    cancelled_at: Timestamp


class InboundCancelled(_Tagged, frozen=True, kw_only=True, tag="InboundCancelled"):
    type: ClassVar[Literal["InboundCancelled"]] = "InboundCancelled"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: InboundCancelledData


class CancelLine(_Struct, frozen=True, kw_only=True):
    line_no: LineNo
    quantity: Quantity


class OrderLinesCancelledData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    lines: Annotated[list[CancelLine], Meta(min_length=1, max_length=500)]
    reason: Text
    cancelled_at: Timestamp


class OrderLinesCancelled(_Tagged, frozen=True, kw_only=True, tag="OrderLinesCancelled"):
    type: ClassVar[Literal["OrderLinesCancelled"]] = "OrderLinesCancelled"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: OrderLinesCancelledData  # then _unique_line_numbers


class OrderPolicyChangedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    fulfilment_policy: FulfilmentPolicy


class OrderPolicyChanged(_Tagged, frozen=True, kw_only=True, tag="OrderPolicyChanged"):
    type: ClassVar[Literal["OrderPolicyChanged"]] = "OrderPolicyChanged"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: OrderPolicyChangedData


class BackorderConsentGivenData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    lines: Annotated[list[LineNo], Meta(min_length=1, max_length=500)] | None = None


class BackorderConsentGiven(_Tagged, frozen=True, kw_only=True, tag="BackorderConsentGiven"):
    type: ClassVar[Literal["BackorderConsentGiven"]] = "BackorderConsentGiven"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: BackorderConsentGivenData


class StockAlertRequestedData(_Struct, frozen=True, kw_only=True):
    alert_id: Id
    warehouse_id: Id
    sku: Sku
    customer: Customer


class StockAlertRequested(_Tagged, frozen=True, kw_only=True, tag="StockAlertRequested"):
    type: ClassVar[Literal["StockAlertRequested"]] = "StockAlertRequested"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: StockAlertRequestedData


class StockAlertCancelledData(_Struct, frozen=True, kw_only=True):
    alert_id: Id
    warehouse_id: Id


class StockAlertCancelled(_Tagged, frozen=True, kw_only=True, tag="StockAlertCancelled"):
    type: ClassVar[Literal["StockAlertCancelled"]] = "StockAlertCancelled"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: StockAlertCancelledData


class ClockTickedData(_Struct, frozen=True, kw_only=True):
    now: Timestamp


class ClockTicked(_Tagged, frozen=True, kw_only=True, tag="ClockTicked"):
    type: ClassVar[Literal["ClockTicked"]] = "ClockTicked"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: ClockTickedData


class ValidationIssue(_Struct, frozen=True, kw_only=True):
    path: Annotated[str, Meta(max_length=500)]  # pattern r"^[^\x00-\x1f\x7f-\x9f]*\Z"
    message: Text


class InvalidOrderReceivedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    event_id: Id
    errors: Annotated[list[ValidationIssue], Meta(min_length=1, max_length=20)]


class InvalidOrderReceived(_Tagged, frozen=True, kw_only=True, tag="InvalidOrderReceived"):
    type: ClassVar[Literal["InvalidOrderReceived"]] = "InvalidOrderReceived"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: InvalidOrderReceivedData


class AllocationLine(_Struct, frozen=True, kw_only=True):
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
    promised_eta: Day | None = None
    consent: Literal["offered", "required", "given"] | None = None


class OrderAllocatedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[AllocationLine], Meta(min_length=1)]
    shipment_id: Id


class OrderAllocated(_Tagged, frozen=True, kw_only=True, tag="OrderAllocated"):
    type: ClassVar[Literal["OrderAllocated"]] = "OrderAllocated"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: OrderAllocatedData


class PartiallyShippedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[AllocationLine], Meta(min_length=1)]
    shipment_id: Id


class PartiallyShipped(_Tagged, frozen=True, kw_only=True, tag="PartiallyShipped"):
    type: ClassVar[Literal["PartiallyShipped"]] = "PartiallyShipped"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: PartiallyShippedData


class BackorderedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[AllocationLine], Meta(min_length=1)]
    reason: Literal["insufficient_stock", "ship_complete_hold", "reservation_lost", "pre_order"]


class Backordered(_Tagged, frozen=True, kw_only=True, tag="Backordered"):
    type: ClassVar[Literal["Backordered"]] = "Backordered"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: BackorderedData


class BackorderAllocatedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[AllocationLine], Meta(min_length=1)]
    shipment_id: Id


class BackorderAllocated(_Tagged, frozen=True, kw_only=True, tag="BackorderAllocated"):
    type: ClassVar[Literal["BackorderAllocated"]] = "BackorderAllocated"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: BackorderAllocatedData


class EtaChangeCause(_Struct, frozen=True, kw_only=True):
    event_type: Id
    event_id: Id
    inbound_id: Id | None = None
    reason: Text | None = None


class BackorderEtaChangedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[AllocationLine], Meta(min_length=1)]
    cause: EtaChangeCause


class BackorderEtaChanged(_Tagged, frozen=True, kw_only=True, tag="BackorderEtaChanged"):
    type: ClassVar[Literal["BackorderEtaChanged"]] = "BackorderEtaChanged"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: BackorderEtaChangedData


class OrderRejectedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    customer: Customer | None = None
    lines: list[AllocationLine]
    reason: Literal["invalid"] | None = None
    errors: list[ValidationIssue] | None = None


class OrderRejected(_Tagged, frozen=True, kw_only=True, tag="OrderRejected"):
    type: ClassVar[Literal["OrderRejected"]] = "OrderRejected"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: OrderRejectedData


class NotCancelled(_Struct, frozen=True, kw_only=True):
    line_no: LineNo
    quantity: Quantity
    reason: Literal["not_open", "unknown_line"]


class OrderCancellationProcessedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[AllocationLine], Meta(min_length=1)]
    reason: Text
    not_cancelled: list[NotCancelled] | None = None


class OrderCancellationProcessed(_Tagged, frozen=True, kw_only=True, tag="OrderCancellationProcessed"):
    type: ClassVar[Literal["OrderCancellationProcessed"]] = "OrderCancellationProcessed"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: OrderCancellationProcessedData


class StockPositionChangedData(_Struct, frozen=True, kw_only=True):
    warehouse_id: Id
    sku: Sku
    available: Units
    backordered: Units
    reserved: Units
    incoming: Units
    next_eta: Day | None = None
    shortfall: Units = 0
    promise_eta: Day | None = None


class StockPositionChanged(_Tagged, frozen=True, kw_only=True, tag="StockPositionChanged"):
    type: ClassVar[Literal["StockPositionChanged"]] = "StockPositionChanged"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: StockPositionChangedData


class BackorderConsentRecordedData(_Struct, frozen=True, kw_only=True):
    order_id: Id
    warehouse_id: Id
    customer: Customer
    lines: Annotated[list[AllocationLine], Meta(min_length=1)]


class BackorderConsentRecorded(_Tagged, frozen=True, kw_only=True, tag="BackorderConsentRecorded"):
    type: ClassVar[Literal["BackorderConsentRecorded"]] = "BackorderConsentRecorded"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: BackorderConsentRecordedData


class StockAlertTriggeredData(_Struct, frozen=True, kw_only=True):
    alert_id: Id
    warehouse_id: Id
    sku: Sku
    customer: Customer
    available: Units
    promise_eta: Day | None = None


class StockAlertTriggered(_Tagged, frozen=True, kw_only=True, tag="StockAlertTriggered"):
    type: ClassVar[Literal["StockAlertTriggered"]] = "StockAlertTriggered"
    id: Id
    version: Literal[1] = 1
    occurred_at: Timestamp
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None
    data: StockAlertTriggeredData


InputEvent = OrderPlaced | OrderCancelled | StockReceived | StockAdjusted | InboundScheduled | ShipmentDelayed | SkuPolicySet | InboundCancelled | OrderLinesCancelled | OrderPolicyChanged | BackorderConsentGiven | StockAlertRequested | StockAlertCancelled
Command = OrderPlaced | OrderCancelled | StockReceived | StockAdjusted | InboundScheduled | ShipmentDelayed | SkuPolicySet | InboundCancelled | OrderLinesCancelled | OrderPolicyChanged | BackorderConsentGiven | StockAlertRequested | StockAlertCancelled | ClockTicked | InvalidOrderReceived
OutputEvent = OrderAllocated | PartiallyShipped | Backordered | BackorderAllocated | BackorderEtaChanged | OrderRejected | OrderCancellationProcessed | StockPositionChanged | BackorderConsentRecorded | StockAlertTriggered
Event = OrderPlaced | OrderCancelled | StockReceived | StockAdjusted | InboundScheduled | ShipmentDelayed | SkuPolicySet | InboundCancelled | OrderLinesCancelled | OrderPolicyChanged | BackorderConsentGiven | StockAlertRequested | StockAlertCancelled | ClockTicked | InvalidOrderReceived | OrderAllocated | PartiallyShipped | Backordered | BackorderAllocated | BackorderEtaChanged | OrderRejected | OrderCancellationProcessed | StockPositionChanged | BackorderConsentRecorded | StockAlertTriggered
