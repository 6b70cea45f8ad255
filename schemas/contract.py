"""The v1 event contract: envelope and payload models for every event type.

Forward-compatibility rule (tolerant reader): unknown fields are ignored on
every model, so a producer may add optional fields within v1 without breaking
consumers; a missing or invalid required field is rejected. Removing or
changing the meaning of a field needs a new `version` and new topics.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

MAX_QUANTITY = 1_000_000
MAX_LINES_PER_ORDER = 500
MAX_PRIORITY = 1_000

# ISO 4217 active codes; a closed list beats a regex that accepts "XYZ".
ISO_4217 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL
    BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN
    ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR
    ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL
    MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
    PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP
    STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV
    WST XAF XCD XOF XPF YER ZAR ZMW ZWL""".split()
)


def _known_currency(code: str) -> str:
    if code not in ISO_4217:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


# The WHATWG (HTML5) address grammar plus the dot rules of RFC 5322: what a
# shop's checkout form accepts. ASCII addresses are checked here in a few
# microseconds; anything else goes to email-validator (IDNA, unicode).
_EMAIL_ASCII = re.compile(
    r"^(?!\.)(?!.*\.\.)[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}(?<!\.)"
    r"@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


def _email(value: str) -> str:
    if value.isascii():
        if _EMAIL_ASCII.match(value):
            return value
        raise ValueError("value is not a valid email address")
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from None


def _money(value: str) -> str:
    amount = Decimal(value)
    if amount < 0:
        raise ValueError("money must not be negative")
    return value


Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Sku = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^\S+$")
]
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
Count = Annotated[int, Field(strict=True, ge=0)]
Delta = Annotated[int, Field(strict=True, ge=-MAX_QUANTITY, le=MAX_QUANTITY)]
LineNo = Annotated[int, Field(strict=True, ge=1, le=100_000)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_known_currency)]
Money = Annotated[
    str,
    StringConstraints(pattern=r"^\d{1,15}(\.\d{1,4})?$"),
    AfterValidator(_money),
]
Locale = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=254),
    AfterValidator(_email),
    Field(json_schema_extra={"format": "email"}),
]
FulfilmentPolicy = Literal["ship_partial", "ship_complete"]


class Model(BaseModel):
    """Base of every contract model: tolerant reader, immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=10_000)

    @classmethod
    def trusted(cls, **fields: Any) -> Self:
        """`model_construct` for values the caller already guarantees valid, about 3x
        cheaper: the allocator builds two outputs per input from validated inputs and
        its own numbers, and pydantic's construct was a tenth of its time. Omitted
        fields take their (plain) defaults; fields keep the declared order, which
        the JSON follows, so outputs stay byte-identical to `model_construct`'s."""
        layout = _LAYOUTS.get(cls)
        if layout is None:
            layout = _LAYOUTS[cls] = _layout(cls)
        template, required = layout
        if not required.issubset(fields):
            raise TypeError(f"{cls.__name__}.trusted() misses {sorted(required.difference(fields))}")
        model = object.__new__(cls)
        set_ = object.__setattr__
        set_(model, "__pydantic_fields_set__", set(fields))
        # A merge keeps the template's key order: the declared one.
        set_(model, "__dict__", {**template, **fields})
        set_(model, "__pydantic_extra__", None)
        set_(model, "__pydantic_private__", None)
        return model


_LAYOUTS: dict[type[Model], tuple[dict[str, Any], frozenset[str]]] = {}


def _layout(cls: type[Model]) -> tuple[dict[str, Any], frozenset[str]]:
    template: dict[str, Any] = {}
    required = set()
    for name, field in cls.model_fields.items():
        if field.default_factory is not None:
            raise TypeError(f"{cls.__name__}.{name}: trusted() does not call default factories")
        template[name] = None if field.is_required() else field.default
        if field.is_required():
            required.add(name)
    return template, frozenset(required)


# ---------------------------------------------------------------- shared parts


class Customer(Model):
    customer_id: Id
    email: Email
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    locale: Locale | None = None


class OrderLine(Model):
    line_no: LineNo
    sku: Sku
    quantity: Quantity
    unit_price: Money | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
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
    placed_at: AwareDatetime

    @model_validator(mode="after")
    def _unique_line_numbers(self) -> OrderPlacedData:
        numbers = [line.line_no for line in self.lines]
        if len(set(numbers)) != len(numbers):
            raise ValueError("line_no must be unique within an order")
        return self


class OrderCancelledData(Model):
    order_id: Id
    warehouse_id: Id
    reason: Text
    cancelled_at: AwareDatetime


class StockReceivedData(Model):
    receipt_id: Id
    warehouse_id: Id
    sku: Sku
    quantity: Quantity
    inbound_id: Id | None = None
    received_at: AwareDatetime


class StockAdjustedData(Model):
    adjustment_id: Id
    warehouse_id: Id
    sku: Sku
    delta: Delta
    reason: Text

    @model_validator(mode="after")
    def _non_zero(self) -> StockAdjustedData:
        if self.delta == 0:
            raise ValueError("delta must not be zero")
        return self


class InboundScheduledData(Model):
    inbound_id: Id
    warehouse_id: Id
    lines: Annotated[list[InboundLine], Field(min_length=1, max_length=MAX_LINES_PER_ORDER)]
    eta: date
    supplier: Text | None = None

    @model_validator(mode="after")
    def _unique_skus(self) -> InboundScheduledData:
        skus = [line.sku for line in self.lines]
        if len(set(skus)) != len(skus):
            raise ValueError("each sku may appear once per inbound shipment")
        return self


class ShipmentDelayedData(Model):
    inbound_id: Id
    warehouse_id: Id
    new_eta: date
    reason: Text


class SkuPolicySetData(Model):
    warehouse_id: Id
    sku: Sku
    backorderable: bool = True
    discontinued: bool = False


# ---------------------------------------------------------------- outputs

RejectReason = Literal["not_backorderable", "discontinued", "cancelled_before_placement"]


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
    shipped: Count = 0
    allocated: Count = 0
    backordered: Count = 0
    reserved: Count = 0
    rejected: Count = 0
    cancelled: Count = 0
    eta: date | None = None
    previous_eta: date | None = None
    reason: RejectReason | None = None
    unit_price: Money | None = None
    currency: Currency | None = None


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
    reason: Literal["insufficient_stock", "ship_complete_hold"]


class BackorderAllocatedData(OrderOutputData):
    shipment_id: Id


class EtaChangeCause(Model):
    event_type: str
    event_id: Id
    inbound_id: Id | None = None
    reason: str | None = None


class BackorderEtaChangedData(OrderOutputData):
    cause: EtaChangeCause


class OrderRejectedData(OrderOutputData):
    pass


class OrderCancellationProcessedData(OrderOutputData):
    reason: Text


class StockPositionChangedData(Model):
    warehouse_id: Id
    sku: Sku
    available: Count
    backordered: Count
    reserved: Count
    incoming: Count
    next_eta: date | None = None
    shortfall: Count = 0


# ---------------------------------------------------------------- envelopes


class Envelope(Model):
    id: Id
    type: str
    version: Literal[1] = 1
    occurred_at: AwareDatetime
    source: Id
    correlation_id: Id | None = None
    causation_id: Id | None = None


def _envelope(name: str, data_model: type[Model], doc: str) -> type[Envelope]:
    return type(
        name,
        (Envelope,),
        {
            "__annotations__": {"type": Literal[name], "data": data_model},  # type: ignore[valid-type]
            "__doc__": doc,
            "__module__": __name__,
        },
    )


OrderPlaced = _envelope("OrderPlaced", OrderPlacedData, "An upstream order system accepted an order.")
OrderCancelled = _envelope(
    "OrderCancelled", OrderCancelledData, "Cancel every quantity not yet released to the warehouse."
)
StockReceived = _envelope("StockReceived", StockReceivedData, "Units arrived at a warehouse.")
StockAdjusted = _envelope(
    "StockAdjusted", StockAdjustedData, "A cycle count or damage changed on-hand units."
)
InboundScheduled = _envelope(
    "InboundScheduled", InboundScheduledData, "A supplier shipment is expected on a date."
)
ShipmentDelayed = _envelope(
    "ShipmentDelayed", ShipmentDelayedData, "An inbound supplier shipment is late."
)
SkuPolicySet = _envelope(
    "SkuPolicySet", SkuPolicySetData, "Whether a SKU may be backordered or is discontinued."
)
OrderAllocated = _envelope(
    "OrderAllocated", OrderAllocatedData, "Every line of an order is released now in one shipment."
)
PartiallyShipped = _envelope(
    "PartiallyShipped",
    PartiallyShippedData,
    "What is available ships now; the remainder is backordered with per-line ETA.",
)
Backordered = _envelope("Backordered", BackorderedData, "Nothing ships now; lines wait for stock.")
BackorderAllocated = _envelope(
    "BackorderAllocated", BackorderAllocatedData, "Stock arrived for previously backordered units."
)
BackorderEtaChanged = _envelope(
    "BackorderEtaChanged", BackorderEtaChangedData, "The expected ship date of lines moved."
)
OrderRejected = _envelope(
    "OrderRejected", OrderRejectedData, "Lines that are out of stock and will not ship."
)
OrderCancellationProcessed = _envelope(
    "OrderCancellationProcessed",
    OrderCancellationProcessedData,
    "What a cancellation released and what had already shipped.",
)
StockPositionChanged = _envelope(
    "StockPositionChanged", StockPositionChangedData, "A SKU's stock position after a change."
)

INPUT_EVENTS: tuple[type[Envelope], ...] = (
    OrderPlaced,
    OrderCancelled,
    StockReceived,
    StockAdjusted,
    InboundScheduled,
    ShipmentDelayed,
    SkuPolicySet,
)
OUTPUT_EVENTS: tuple[type[Envelope], ...] = (
    OrderAllocated,
    PartiallyShipped,
    Backordered,
    BackorderAllocated,
    BackorderEtaChanged,
    OrderRejected,
    OrderCancellationProcessed,
    StockPositionChanged,
)
