"""Which topic each event type travels on, its Kafka key, and the fast codec."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union, cast

from pydantic import Field, TypeAdapter, ValidationError

from schemas.contract import (
    INPUT_EVENTS,
    INTERNAL_COMMANDS,
    NO_CONTROLS,
    NO_CONTROLS_BUT_LINES,
    NO_CONTROLS_NO_SPACES,
    OUTPUT_EVENTS,
    Command,
    Envelope,
    InputEvent,
    OutputEvent,
)

ORDERS = "orders.v1"
INVENTORY = "inventory.v1"
COMMANDS = "allocator.commands.v1"
ALLOCATIONS = "allocations.v1"
DLQ_SUFFIX = ".dlq"

MAX_MESSAGE_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: str
    model: builtins.type[Envelope]
    topic: str
    # None: no key; the writer picks the partition (ClockTicked goes to every one).
    key_field: str | None = "warehouse_id"

    def key(self, event: Envelope) -> bytes | None:
        if self.key_field is None:
            return None
        data: Any = cast(Any, event).data  # every registered event has a payload; the base does not
        value: str = getattr(data, self.key_field)
        return value.encode()


# What the shop says about its orders and customers travels on orders.v1.
_ORDER_TYPES = {
    "OrderPlaced",
    "OrderCancelled",
    "OrderLinesCancelled",
    "OrderPolicyChanged",
    "BackorderConsentGiven",
    "StockAlertRequested",
    "StockAlertCancelled",
}

REGISTRY: dict[str, EventSpec] = {}
for _model in INPUT_EVENTS:
    _name = _model.__name__
    REGISTRY[_name] = EventSpec(_name, _model, ORDERS if _name in _ORDER_TYPES else INVENTORY)
for _model in INTERNAL_COMMANDS:
    REGISTRY[_model.__name__] = EventSpec(_model.__name__, _model, COMMANDS, key_field=None)
for _model in OUTPUT_EVENTS:
    REGISTRY[_model.__name__] = EventSpec(_model.__name__, _model, ALLOCATIONS)

# Upstream inputs (orders.v1, inventory.v1): what the router accepts.
INPUT_TYPES = frozenset(m.__name__ for m in INPUT_EVENTS)
INTERNAL_TYPES = frozenset(m.__name__ for m in INTERNAL_COMMANDS)
# Everything on allocator.commands.v1: the inputs, re-keyed, and the internal commands.
COMMAND_TYPES = INPUT_TYPES | INTERNAL_TYPES
OUTPUT_TYPES = frozenset(m.__name__ for m in OUTPUT_EVENTS)
# Allocation events about one order (everything on allocations.v1 but stock positions).
ORDER_OUTPUT_TYPES = OUTPUT_TYPES - {"StockPositionChanged", "StockAlertTriggered"}


def base_topics() -> list[str]:
    """The shared topics, without prefix: the four logs and the dead-letter topics of the
    stages that check them (the router: orders, inventory; the core: commands). A consumer
    that quarantines what it cannot apply (projector, notifier) writes to its own
    `<group>.dlq` and creates it at start."""
    main = [ORDERS, INVENTORY, COMMANDS, ALLOCATIONS]
    return main + [t + DLQ_SUFFIX for t in (ORDERS, INVENTORY, COMMANDS)]


def _union(models: tuple[type[Envelope], ...]) -> TypeAdapter[Envelope]:
    union: Any = Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(union)


_ANY = _union(INPUT_EVENTS + INTERNAL_COMMANDS + OUTPUT_EVENTS)
_INPUT: TypeAdapter[InputEvent] = TypeAdapter(InputEvent)
_COMMAND: TypeAdapter[Command] = TypeAdapter(Command)
_OUTPUT: TypeAdapter[OutputEvent] = TypeAdapter(OutputEvent)

_T = TypeVar("_T")


# The contract's character patterns, worded for the reason header.
_PATTERN_WORDS = {
    NO_CONTROLS: "must not contain control characters",
    NO_CONTROLS_BUT_LINES: "must not contain control characters other than tab and line breaks",
    NO_CONTROLS_NO_SPACES: "must not contain whitespace or control characters",
}


class ContractError(ValueError):
    """A message that does not satisfy the contract; `reason` is one line. `issues`:
    each violation as (field path, message), values never quoted: what a refusal may
    tell the sender (`InvalidOrderReceived`)."""

    def __init__(self, reason: str, kind: str, issues: tuple[tuple[str, str], ...] = ()):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.issues = issues


MAX_ISSUES = 20


def _issues(exc: ValidationError) -> tuple[tuple[str, str], ...]:
    found = []
    for err in exc.errors(include_url=False)[:MAX_ISSUES]:
        first, _, path = ".".join(str(p) for p in err["loc"]).partition(".")
        path = path if first in REGISTRY and path else f"{first}.{path}".rstrip(".")
        if err["type"] == "string_pattern_mismatch":
            message = _PATTERN_WORDS.get(str(err.get("ctx", {}).get("pattern")), err["msg"])
        elif ".customer." in f".{path}." or err["type"] == "value_error":
            # A custom check may quote the value (an address, a currency): say only what.
            message = f"invalid value ({err['type']})"
        else:
            message = err["msg"]
        found.append((path[:500], message[:500]))
    return tuple(found)


def _describe(exc: ValidationError) -> tuple[str, str]:
    parts = []
    kind = "schema_violation"
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "json_invalid":
            kind = "bad_json"
            parts.append(f"invalid JSON: {err['msg']}")
            continue
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            kind = "unknown_type"
            parts.append(f"type: {err['msg']}")
            continue
        if (
            kind == "schema_violation"
            and loc.endswith(("quantity", "delta"))
            and err["type"]
            in (
                "greater_than_equal",
                "less_than_equal",
            )
        ):
            kind = "bad_quantity"
        # Drop the union tag from the location: "OrderPlaced.data.lines.0.sku" -> "data.lines.0.sku".
        first, _, rest = loc.partition(".")
        if first in REGISTRY and rest:
            loc = rest
        message = err["msg"]
        if err["type"] == "string_pattern_mismatch":
            message = _PATTERN_WORDS.get(str(err.get("ctx", {}).get("pattern")), message)
        elif err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        parts.append(f"{loc}: {message}")
    more = exc.error_count() - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts), kind


def _parse(adapter: TypeAdapter[_T], raw: bytes | str) -> _T:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ContractError(
            f"message is {len(raw)} bytes, more than the limit of {MAX_MESSAGE_BYTES}", "oversize"
        )
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        reason, kind = _describe(exc)
        raise ContractError(reason, kind, _issues(exc)) from None


def parse_event(raw: bytes | str) -> Envelope:
    """Validate any v1 envelope from JSON in one pass."""
    return _parse(_ANY, raw)


def parse_input(raw: bytes | str) -> InputEvent:
    return _parse(_INPUT, raw)


def parse_command(raw: bytes | str) -> Command:
    """An allocator command: an input or an internal command (ClockTicked)."""
    return _parse(_COMMAND, raw)


def parse_output(raw: bytes | str) -> OutputEvent:
    return _parse(_OUTPUT, raw)


def encode(event: Envelope) -> bytes:
    return event.model_dump_json(exclude_none=False).encode()


def spec_for(event: Envelope) -> EventSpec:
    return REGISTRY[event.type]
