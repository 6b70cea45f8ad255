"""Read the contract's pydantic models into a description msgspec can decode.

The source is each model's pydantic-core schema: the exact rules pydantic
enforces, after pydantic has resolved every `Annotated` layer. A rule msgspec
expresses natively (types, bounds, lengths, patterns, literals, optional
fields, defaults) becomes part of the wire type; a rule it cannot express (an
`AfterValidator`, a `model_validator`) is kept as a check to run on the
decoded value. A construct without a sound translation raises `Underivable`:
the fast decoder must never accept what pydantic refuses, so it does not guess.

Patterns are written for pydantic's Rust regex engine; they are rewritten
for Python's `re` where the two engines differ, so that the rewritten pattern
never accepts what the original refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

Check = Callable[[Any], Any]
Meta = tuple[tuple[str, Any], ...]  # msgspec.Meta keywords, in a fixed order


class Underivable(TypeError):
    """A pydantic rule with no sound msgspec translation."""


@dataclass(frozen=True, slots=True)
class Scalar:
    kind: str  # "str" | "int" | "bool" | "date" | "datetime"
    meta: Meta = ()
    # A string's pattern (for Python's `re`) and whether pydantic strips it: checked
    # after decoding, where a verdict can be cached (msgspec would run the regex for
    # every value, and a Python regex call costs more than the whole decoding).
    pattern: str | None = None
    strip: bool = False


@dataclass(frozen=True, slots=True)
class Choice:
    values: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Nullable:
    inner: Node


@dataclass(frozen=True, slots=True)
class Items:
    inner: Node
    meta: Meta = ()


@dataclass(frozen=True, slots=True)
class Ref:
    model: str


@dataclass(frozen=True, slots=True)
class Checked:
    """`inner`, then each check in order (pydantic's after-validators)."""

    inner: Node
    checks: tuple[Check, ...]


Node = Scalar | Choice | Nullable | Items | Ref | Checked


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True, slots=True)
class WireField:
    name: str
    node: Node
    default: Any = REQUIRED


@dataclass(slots=True)
class WireModel:
    name: str
    model: type[BaseModel]
    fields: list[WireField] = field(default_factory=list)
    # An envelope's `type`: the union's tag on the wire, not a field of the struct.
    tag: str | None = None
    # Model validators of a top-level model (nested ones are `Checked` nodes).
    checks: tuple[Check, ...] = ()


# ---------------------------------------------------------------- patterns

_PLAIN_ESCAPES = frozenset("\\.-/[](){}*+?|^$nrt")


def python_pattern(pattern: str) -> str:
    """A Python `re` pattern matching no string that the Rust-regex `pattern` rejects.

    `$` ends the text in Rust but also matches before a final newline in Python
    (-> `\\Z`); `\\d` is any Unicode digit in both, by tables of possibly different
    Unicode versions (-> `[0-9]`; refused in a negated class); `\\s` stays in a
    negated class only (Python's is the larger set). Whatever else could differ
    between the engines (flags, lookaround, nested classes) is refused."""
    out: list[str] = []
    i, in_class, negated = 0, False, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            token = _escape(pattern, i + 1, in_class, negated)
            out.append(token)
            i += 4 if pattern[i + 1] == "x" else 2
            continue
        if in_class:
            if char == "[" or pattern.startswith(("&&", "--", "~~"), i):
                raise Underivable(f"pattern {pattern!r}: class operations differ between engines")
            in_class = char != "]"
        elif char == "[":
            if pattern.startswith(("[]", "[^]"), i):
                raise Underivable(f"pattern {pattern!r}: a class starting with ']'")
            in_class, negated = True, pattern.startswith("[^", i)
        elif char == "$":
            char = r"\Z"
        elif pattern.startswith("(?", i) and not pattern.startswith("(?:", i):
            raise Underivable(f"pattern {pattern!r}: only (?:...) groups are translated")
        out.append(char)
        i += 1
    return "".join(out)


def _escape(pattern: str, at: int, in_class: bool, negated: bool) -> str:
    char = pattern[at : at + 1]
    if char == "x" and all(c in "0123456789abcdefABCDEF" for c in pattern[at + 1 : at + 3]):
        return pattern[at - 1 : at + 3]
    if char == "d" and not negated:
        return "0-9" if in_class else "[0-9]"
    if char == "s" and negated:
        return "\\s"
    if char in _PLAIN_ESCAPES and char:
        return "\\" + char
    raise Underivable(f"pattern {pattern!r}: escape \\{char} is not translated")


# ---------------------------------------------------------------- core schemas

_IGNORED = frozenset({"type", "ref", "metadata", "serialization", "strict"})


def _only(schema: Mapping[str, Any], *allowed: str) -> None:
    extra = set(schema) - _IGNORED - set(allowed)
    if extra:
        raise Underivable(f"{schema['type']} schema: {sorted(extra)} not translated")


def _function(schema: Mapping[str, Any]) -> Check:
    function = schema["function"]
    if function["type"] != "no-info":
        raise Underivable("a validator taking ValidationInfo is not translated")
    check: Check = function["function"]
    return check


class _Walker:
    def __init__(self, found: dict[str, WireModel]) -> None:
        self.found = found
        self.definitions: dict[str, Mapping[str, Any]] = {}

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while schema["type"] in ("definitions", "definition-ref"):
            if schema["type"] == "definitions":
                self.definitions.update((d["ref"], d) for d in schema["definitions"])
                schema = schema["schema"]
            else:
                schema = self.definitions[schema["schema_ref"]]
        return schema

    def top(self, model: type[BaseModel], tag_field: str | None) -> str:
        schema = self.resolve(model.__pydantic_core_schema__)
        checks: list[Check] = []
        while schema["type"] == "function-after":
            checks.insert(0, _function(schema))  # the innermost runs first
            schema = self.resolve(schema["schema"])
        name = self.model(schema, tag_field)
        self.found[name].checks = tuple(checks)
        return name

    def model(self, schema: Mapping[str, Any], tag_field: str | None = None) -> str:
        _only(schema, "cls", "schema", "custom_init", "root_model", "config", "post_init")
        cls: type[BaseModel] = schema["cls"]
        known = self.found.get(cls.__name__)
        if known is not None:
            if known.model is not cls:
                raise Underivable(f"two models named {cls.__name__}")
            return known.name
        if schema.get("custom_init") or schema.get("root_model") or schema.get("post_init"):
            raise Underivable(f"{cls.__name__}: custom __init__, root or post-init models")
        config = schema.get("config", {})
        if config.get("extra_fields_behavior", "ignore") != "ignore":
            raise Underivable(f"{cls.__name__}: only extra='ignore' is translated")
        body = schema["schema"]
        _only(body, "fields", "model_name", "computed_fields")
        wire = WireModel(cls.__name__, cls)
        for name, spec in body["fields"].items():
            _only(spec, "schema", "serialization_alias", "serialization_exclude", "frozen")
            wire.fields.append(self.field(name, spec["schema"], config))
        if tag_field is not None:
            wire.tag = _tag(wire, tag_field)
            wire.fields = [f for f in wire.fields if f.name != tag_field]
        self.found[wire.name] = wire  # after its dependencies: the dict is in declaration order
        return wire.name

    def field(self, name: str, schema: Mapping[str, Any], config: Mapping[str, Any]) -> WireField:
        if schema["type"] != "default":
            return WireField(name, self.node(schema, config))
        _only(schema, "schema", "default")
        default = schema["default"]
        if not isinstance(default, (str, int, float, type(None))):
            raise Underivable(f"{name}: a default that is not an immutable scalar")
        return WireField(name, self.node(schema["schema"], config), default)

    def node(self, schema: Mapping[str, Any], config: Mapping[str, Any]) -> Node:
        schema = self.resolve(schema)
        kind = schema["type"]
        if kind == "nullable":
            _only(schema, "schema")
            return Nullable(self.node(schema["schema"], config))
        if kind == "function-after":
            inner = self.node(schema["schema"], config)
            if isinstance(inner, Checked):
                return Checked(inner.inner, (*inner.checks, _function(schema)))
            return Checked(inner, (_function(schema),))
        if kind == "model":
            return Ref(self.model(schema))
        if kind == "list":
            _only(schema, "items_schema", "min_length", "max_length", "fail_fast")
            meta = _meta(schema, "min_length", "max_length")
            return Items(self.node(schema["items_schema"], config), meta)
        return _leaf(schema, config)


def _tag(wire: WireModel, tag_field: str) -> str:
    for f in wire.fields:
        if f.name == tag_field and isinstance(f.node, Choice) and f.default is REQUIRED:
            (value,) = f.node.values
            if isinstance(value, str):
                return value
    raise Underivable(f"{wire.name}: no single-valued {tag_field!r} literal to tag it by")


def _meta(schema: Mapping[str, Any], *keys: str) -> Meta:
    return tuple((k, schema[k]) for k in keys if schema.get(k) is not None)


def _leaf(schema: Mapping[str, Any], config: Mapping[str, Any]) -> Node:
    kind = schema["type"]
    if kind == "str":
        return _string(schema, config)
    if kind == "int":
        _only(schema, "ge", "le", "gt", "lt", "multiple_of")
        return Scalar("int", _meta(schema, "ge", "le", "gt", "lt", "multiple_of"))
    if kind == "bool":
        _only(schema)
        return Scalar("bool")
    if kind == "literal":
        _only(schema, "expected")
        values = tuple(schema["expected"])
        if not all(type(v) in (str, int) for v in values):
            raise Underivable(f"literal {values!r}: only str and int literals are translated")
        return Choice(values)
    if kind == "date":
        _only(schema)
        return Scalar("date")
    if kind == "datetime":
        # Fractions beyond microseconds: pydantic truncates them, msgspec rounds; the
        # decoder leaves any message that holds one to pydantic.
        _only(schema, "tz_constraint", "microseconds_precision")
        if schema.get("microseconds_precision", "truncate") != "truncate":
            raise Underivable("datetime: only microseconds_precision='truncate'")
        tz = {"aware": True, "naive": False, None: None}[schema.get("tz_constraint")]
        return Scalar("datetime", (("tz", tz),) if tz is not None else ())
    raise Underivable(f"pydantic schema {kind!r} is not translated")


def _string(schema: Mapping[str, Any], config: Mapping[str, Any]) -> Scalar:
    _only(schema, "min_length", "max_length", "pattern", "strip_whitespace")
    for flag in ("to_lower", "to_upper"):
        if config.get(f"str_{flag}"):
            raise Underivable(f"str_{flag} is not translated")
    lengths = [v for v in (schema.get("max_length"), config.get("str_max_length")) if v is not None]
    least = [v for v in (schema.get("min_length"), config.get("str_min_length")) if v is not None]
    # Both bounds, where pydantic would take one: never more lenient.
    meta = (("min_length", max(least, default=None)), ("max_length", min(lengths, default=None)))
    pattern = schema.get("pattern")
    return Scalar(
        "str",
        tuple((k, v) for k, v in meta if v is not None),
        python_pattern(pattern) if pattern is not None else None,
        bool(schema.get("strip_whitespace") or config.get("str_strip_whitespace")),
    )


def derive(
    models: Iterable[type[BaseModel]], tag_field: str | None = "type"
) -> dict[str, WireModel]:
    """Every model reachable from `models` (each tagged by `tag_field`), dependencies first."""
    found: dict[str, WireModel] = {}
    walker = _Walker(found)
    for model in models:
        walker.top(model, tag_field)
    return found
