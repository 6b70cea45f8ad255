"""Write schemas/wire.py: a msgspec struct per contract model, derived from the models.

`make schemas` runs it (through schemas/export.py); tests/schemas/test_wire.py
fails when the committed file differs from what the contract generates. The
structs are generated as source, not built at run time, so that the services
reading them are type-checked like any other code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import create_model

from schemas import contract, fields
from schemas.base import Model
from schemas.contract import INPUT_EVENTS, INTERNAL_COMMANDS, OUTPUT_EVENTS
from schemas.derive import (
    REQUIRED,
    Checked,
    Choice,
    Items,
    Node,
    Nullable,
    Ref,
    Scalar,
    Underivable,
    WireModel,
    derive,
)

WIRE_FILE = Path(__file__).parent / "wire.py"

_HEADER = '''"""The v1 contract as msgspec structs: what `schemas.decode` decodes into.

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
'''


def _literal(value: Any) -> str:
    if isinstance(value, str) and '"' not in value and not value.endswith("\\"):
        return f'r"{value}"' if "\\" in value else f'"{value}"'
    return repr(value)


class _Renderer:
    def __init__(self, aliases: dict[Node, str]) -> None:
        self.aliases = aliases  # a field type -> the contract's name for it

    def meta(self, meta: tuple[tuple[str, Any], ...]) -> str:
        return f"Meta({', '.join(f'{key}={_literal(value)}' for key, value in meta)})"

    def node(self, node: Node) -> str:
        alias = self.aliases.get(node)
        return alias if alias is not None else self.plain(node)

    def plain(self, node: Node) -> str:
        if isinstance(node, Scalar):
            return f"Annotated[{node.kind}, {self.meta(node.meta)}]" if node.meta else node.kind
        if isinstance(node, Choice):
            return f"Literal[{', '.join(_literal(v) for v in node.values)}]"
        if isinstance(node, Nullable):
            return f"{self.node(node.inner)} | None"
        if isinstance(node, Items):
            items = f"list[{self.node(node.inner)}]"
            return f"Annotated[{items}, {self.meta(node.meta)}]" if node.meta else items
        if isinstance(node, Ref):
            return node.model
        if isinstance(node, Checked):
            return self.node(node.inner)
        raise TypeError(node)

    def notes(self, node: Node) -> str:
        """What the decoder checks beyond the struct, as a comment (for a type not named)."""
        if node in self.aliases:
            return ""
        if isinstance(node, Nullable):
            return self.notes(node.inner)
        if isinstance(node, Items):
            inner = self.notes(node.inner)
            return f"each: {inner}" if inner else ""
        notes = []
        if isinstance(node, Checked):
            inner = self.notes(node.inner)
            notes = [inner] if inner else []
            notes.append("then " + ", ".join(check.__name__ for check in node.checks))
        elif isinstance(node, Scalar):
            if node.strip:
                notes.append("no space at either end")
            if node.pattern is not None:
                notes.append(f"pattern {_literal(node.pattern)}")
        return "; ".join(notes)

    def line(self, text: str, node: Node) -> str:
        notes = self.notes(node)
        return f"{text}  # {notes}" if notes else text

    def model(self, wire: WireModel) -> str:
        if wire.tag is None:
            lines = [f"class {wire.name}(_Struct, frozen=True, kw_only=True):"]
        else:
            lines = [f'class {wire.name}(_Tagged, frozen=True, kw_only=True, tag="{wire.tag}"):']
            lines.append(f'    type: ClassVar[Literal["{wire.tag}"]] = "{wire.tag}"')
        for f in wire.fields:
            default = "" if f.default is REQUIRED else f" = {_literal(f.default)}"
            lines.append(self.line(f"    {f.name}: {self.node(f.node)}{default}", f.node))
        if wire.checks:
            lines.append(f"    # then {', '.join(check.__name__ for check in wire.checks)}")
        return "\n".join(lines)


def _aliases() -> dict[Node, str]:
    """The contract's named field types (`Id`, `Sku`, ...), by their description."""
    aliases: dict[Node, str] = {}
    for module in (fields, contract):
        for name, value in vars(module).items():
            if name.startswith("_") or get_origin(value) not in (Annotated, Literal):
                continue
            probe = create_model("Probe", __base__=Model, value=(value, ...))
            try:
                (node,) = (f.node for f in derive([probe], tag_field=None)["Probe"].fields)
            except Underivable:
                continue  # the unions of envelopes: not a field type
            if not isinstance(node, Scalar) or node.meta or node.pattern:
                aliases.setdefault(node, name)
    return aliases


def _union(name: str, members: list[str]) -> str:
    return f"{name} = " + " | ".join(members)


def render() -> str:
    envelopes = INPUT_EVENTS + INTERNAL_COMMANDS + OUTPUT_EVENTS
    aliases = _aliases()
    renderer = _Renderer(aliases)
    classes = [renderer.model(wire) for wire in derive(envelopes).values()]
    inputs = [m.__name__ for m in INPUT_EVENTS]
    internal = [m.__name__ for m in INTERNAL_COMMANDS]
    outputs = [m.__name__ for m in OUTPUT_EVENTS]
    plain = _Renderer({})
    types = "\n".join(plain.line(f"{name} = {plain.plain(n)}", n) for n, name in aliases.items())
    unions = "\n".join(
        [
            _union("InputEvent", inputs),
            _union("Command", inputs + internal),
            _union("OutputEvent", outputs),
            _union("Event", inputs + internal + outputs),
        ]
    )
    parts = [_HEADER, types, *classes, unions]
    return "\n\n\n".join(p.strip("\n") for p in parts) + "\n"


def main() -> int:
    WIRE_FILE.write_text(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
