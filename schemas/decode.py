"""The contract's fast decoder: JSON to `schemas.wire` structs, judged exactly as pydantic would.

Two tiers. msgspec decodes into the structs generated from the models
(types, bounds, lengths, literals, defaults, the union's tag); then the rules
msgspec does not check (patterns, whitespace, the contract's validators:
`schemas.verdicts`) run on the decoded value. That tier is never more lenient
than pydantic, and accepts a value only if pydantic would give the same one.
Whatever it refuses, or cannot decide, goes to pydantic (`schemas.validate`),
which either accepts it (a value it strips or normalises, a number written as
a string...) or raises `ContractError` with the reason it always gave. The
answer is always pydantic's; the common, valid message gets it at msgspec's
speed.

Where the two JSON readers differ, pydantic decides. A field the contract does
not know (the tolerant reader ignores it) fails the structs, which refuse
unknown fields: msgspec would skip its value unread, where pydantic refuses
invalid UTF-8 or nesting deeper than 200 in it. A fraction of a second beyond
microseconds (pydantic truncates it, msgspec rounds) is spotted in the raw
bytes before decoding.

`read_command` and `read_output` are the cheaper variants for the logs the
allocator writes itself (its command log, which the router validated, and its
outputs): they run only the rules that could make the value differ from
pydantic's (see `schemas.fields.check`), and still refuse, with pydantic's
reason, what does not decode.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import msgspec
from msgspec.structs import asdict
from pydantic import BaseModel

from schemas import contract, validate, wire
from schemas.derive import Checked, Items, Node, Nullable, Ref, WireModel, derive
from schemas.validate import ContractError as ContractError
from schemas.verdicts import Switches, Verdict, Verdicts, printable

_ENVELOPES = contract.INPUT_EVENTS + contract.INTERNAL_COMMANDS + contract.OUTPUT_EVENTS
_MODELS: dict[str, WireModel] = derive(_ENVELOPES)
_WIRE: dict[str, type[msgspec.Struct]] = {name: getattr(wire, name) for name in _MODELS}

# ---------------------------------------------------------------- what msgspec may not decide

# A fraction of a second beyond microseconds (pydantic truncates it, msgspec rounds),
# written out or with an escaped digit or dot that could spell one.
_LONG_FRACTION = re.compile(rb"\.[0-9]{7}")
_ESCAPED_DIGIT = re.compile(rb"\\u00(?:3[0-9]|2[eE])")


def _verdicts(trusted: bool) -> tuple[dict[type[msgspec.Struct], Verdict], ...]:
    """By what the raw bytes prove: nothing, printable strings, no space either."""
    models = list(_MODELS.values())
    return tuple(
        {
            _WIRE[name]: verdict
            for name, verdict in Verdicts(models, Switches(trusted, *proven)).models.items()
        }
        for proven in ((False, False), (True, False), (True, True))
    )


_ANY, _TRUSTED = _verdicts(trusted=False), _verdicts(trusted=True)

_Fallback = Callable[[bytes | str], BaseModel]


class _Decoder:
    def __init__(self, union: Any, fallback: _Fallback, trusted: bool = False) -> None:
        self.decode = msgspec.json.Decoder(union).decode
        self.fallback = fallback
        self.full, self.printable, self.spaceless = _TRUSTED if trusted else _ANY

    def __call__(self, raw: bytes | str) -> Any:
        if len(raw) > validate.MAX_MESSAGE_BYTES:
            raise validate.oversize(len(raw))
        if isinstance(raw, bytes):
            if printable(raw):
                verdicts = self.printable if b" " in raw else self.spaceless
                doubtful = _LONG_FRACTION.search(raw) is not None
            else:
                verdicts = self.full
                doubtful = (
                    _LONG_FRACTION.search(raw) is not None or _ESCAPED_DIGIT.search(raw) is not None
                )
            if not doubtful:
                try:
                    event = self.decode(raw)
                    verdict = verdicts.get(type(event))
                    if verdict is None or verdict(event):
                        return event
                # Whatever msgspec or a rule refuses (or raises on), pydantic judges.
                except Exception:  # noqa: S110
                    pass
        return to_wire(self.fallback(raw))


_EVENT = _Decoder(wire.Event, validate.validate_event)
_INPUT = _Decoder(wire.InputEvent, validate.validate_input)
_COMMAND = _Decoder(wire.Command, validate.validate_command)
_OUTPUT = _Decoder(wire.OutputEvent, validate.validate_output)
_TRUSTED_COMMAND = _Decoder(wire.Command, validate.validate_command, trusted=True)
_TRUSTED_OUTPUT = _Decoder(wire.OutputEvent, validate.validate_output, trusted=True)


def decode_event(raw: bytes | str) -> wire.Event:
    """Any v1 envelope; ContractError (pydantic's reason) if the contract refuses it."""
    return cast(wire.Event, _EVENT(raw))


def decode_input(raw: bytes | str) -> wire.InputEvent:
    return cast(wire.InputEvent, _INPUT(raw))


def decode_command(raw: bytes | str) -> wire.Command:
    return cast(wire.Command, _COMMAND(raw))


def decode_output(raw: bytes | str) -> wire.OutputEvent:
    return cast(wire.OutputEvent, _OUTPUT(raw))


def read_command(raw: bytes | str) -> wire.Command:
    """A command from the allocator's own log: decoded and typed, with the values
    pydantic would give, but the contract's pure rules (patterns, ranges, currency
    codes, cross-field rules) are not run again. A record that does not decode
    still raises ContractError with pydantic's reason."""
    return cast(wire.Command, _TRUSTED_COMMAND(raw))


def read_output(raw: bytes | str) -> wire.OutputEvent:
    """An allocation event, trusted as `read_command` trusts a command: allocations.v1
    is written by the allocator alone, from validated commands."""
    return cast(wire.OutputEvent, _TRUSTED_OUTPUT(raw))


# ---------------------------------------------------------------- structs <-> models

_WIRE_OF_MODEL: dict[type[BaseModel], type[msgspec.Struct]] = {
    m.model: _WIRE[name] for name, m in _MODELS.items()
}


def to_wire(value: Any) -> Any:
    """A validated model (and what it holds) as structs; nothing is checked again."""
    if isinstance(value, BaseModel):
        struct = _WIRE_OF_MODEL[type(value)]
        return struct(**{name: to_wire(getattr(value, name)) for name in struct.__struct_fields__})
    if isinstance(value, list):
        return [to_wire(item) for item in value]
    return value


Convert = Callable[[Any], Any]


class _Builder:
    """A struct as its pydantic model, built like `Model.trusted` (nothing validated):
    the struct was, and its values are the ones pydantic would hold."""

    def __init__(self, model: WireModel, builders: dict[str, Convert]) -> None:
        self.cls = model.model
        names = tuple(model.model.model_fields)
        # The model's JSON follows its __dict__'s order: the tag goes where `type` is
        # declared (a merge into this template keeps the template's order).
        self.template = dict.fromkeys(names) | {"type": model.tag} if model.tag else None
        # Every field counts as set (a struct does not say which were defaulted). One set
        # per model class, shared: a frozen model never changes its own.
        self.fields_set = set(names)
        self.nested: list[tuple[str, Convert]] = []
        for f in model.fields:
            convert = _converter(f.node, builders)
            if convert is not None:
                self.nested.append((f.name, convert))

    def __call__(self, struct: Any) -> Any:
        fields = asdict(struct)
        if self.template is not None:
            fields = {**self.template, **fields}
        for name, convert in self.nested:
            fields[name] = convert(fields[name])
        model = object.__new__(self.cls)
        set_ = object.__setattr__
        set_(model, "__dict__", fields)
        set_(model, "__pydantic_fields_set__", self.fields_set)
        set_(model, "__pydantic_extra__", None)
        set_(model, "__pydantic_private__", None)
        return model


def _converter(node: Node, builders: dict[str, Convert]) -> Convert | None:
    if isinstance(node, Checked):
        return _converter(node.inner, builders)
    if isinstance(node, Ref):
        return builders[node.model]
    if isinstance(node, Nullable):
        inner = _converter(node.inner, builders)
        if inner is None:
            return None
        return lambda value: None if value is None else inner(value)
    if isinstance(node, Items):
        item = _converter(node.inner, builders)
        if item is None:
            return list
        return lambda values: [item(v) for v in values]
    return None


def _builders() -> dict[type[msgspec.Struct], Convert]:
    by_name: dict[str, Convert] = {}
    for name, model in _MODELS.items():  # dependencies first
        by_name[name] = _Builder(model, by_name)
    return {_WIRE[name]: builder for name, builder in by_name.items()}


_BUILDERS = _builders()


_M = TypeVar("_M", bound=BaseModel)


def model_of(value: BaseModel | msgspec.Struct) -> BaseModel:
    """A struct as its model (like `to_model`, for any struct), a model as it is."""
    if isinstance(value, BaseModel):
        return value
    built: BaseModel = _BUILDERS[type(value)](value)
    return built


def as_model(value: _M | msgspec.Struct, model: type[_M]) -> _M:
    """`model_of`, checked to be a `model`."""
    built = model_of(value)
    if not isinstance(built, model):
        raise TypeError(f"a {type(value).__name__} is no {model.__name__}")
    return built


def to_model(struct: msgspec.Struct) -> contract.Envelope:
    """A decoded envelope as its pydantic model (equal to what pydantic would parse)."""
    return cast(contract.Envelope, _BUILDERS[type(struct)](struct))
