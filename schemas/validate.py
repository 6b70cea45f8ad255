"""The contract's reference parser: pydantic, and the one-line reason it gives.

`schemas.decode` decodes the common, valid message faster and hands
everything else here, so a message is accepted, and refused with a reason,
exactly as this module would on its own. The reason goes to the dead-letter
header; its wording is part of what operators and tests rely on.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar, Union

from pydantic import Field, TypeAdapter, ValidationError

from schemas.contract import (
    INPUT_EVENTS,
    INTERNAL_COMMANDS,
    OUTPUT_EVENTS,
    Command,
    Envelope,
    InputEvent,
    OutputEvent,
)
from schemas.fields import NO_CONTROLS, NO_CONTROLS_BUT_LINES, NO_CONTROLS_NO_SPACES

MAX_MESSAGE_BYTES = 1_000_000

_TYPES = frozenset(m.__name__ for m in INPUT_EVENTS + INTERNAL_COMMANDS + OUTPUT_EVENTS)


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


def issues(exc: ValidationError) -> tuple[tuple[str, str], ...]:
    """Each violation as (field path, message); a message that may quote the value (a
    custom check, anything about the customer) says only what kind of error it is."""
    found = []
    for err in exc.errors(include_url=False)[:MAX_ISSUES]:
        first, _, path = ".".join(str(p) for p in err["loc"]).partition(".")
        path = path if first in _TYPES and path else f"{first}.{path}".rstrip(".")
        if err["type"] == "string_pattern_mismatch":
            message = _PATTERN_WORDS.get(str(err.get("ctx", {}).get("pattern")), err["msg"])
        elif ".customer." in f".{path}." or err["type"] == "value_error":
            message = f"invalid value ({err['type']})"
        else:
            message = err["msg"]
        found.append((path[:500], message[:500]))
    return tuple(found)


def describe(exc: ValidationError) -> tuple[str, str]:
    """(reason, kind) of a pydantic validation error."""
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
        if first in _TYPES and rest:
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


def oversize(size: int) -> ContractError:
    return ContractError(
        f"message is {size} bytes, more than the limit of {MAX_MESSAGE_BYTES}", "oversize"
    )


def _parse(adapter: TypeAdapter[_T], raw: bytes | str) -> _T:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise oversize(len(raw))
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        reason, kind = describe(exc)
        raise ContractError(reason, kind, issues(exc)) from None


def validate_event(raw: bytes | str) -> Envelope:
    """Any v1 envelope from JSON, by pydantic alone."""
    return _parse(_ANY, raw)


def validate_input(raw: bytes | str) -> InputEvent:
    return _parse(_INPUT, raw)


def validate_command(raw: bytes | str) -> Command:
    return _parse(_COMMAND, raw)


def validate_output(raw: bytes | str) -> OutputEvent:
    return _parse(_OUTPUT, raw)
