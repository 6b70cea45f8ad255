"""The contract's rules that msgspec does not check, as one function per struct.

A verdict is True when every rule holds and no validator would change the
value, so the decoded struct is exactly what pydantic would give; False sends
the message to pydantic. Rules: a string's whitespace at the ends (pydantic
strips it) and its pattern, each field's validators, each model's validators.

Values repeat (warehouses, SKUs, dates, prices), so a value that passed is
kept and not checked again: patterns and validators are pure functions of the
value (see `schemas.fields.check`), and a kept value is found by equality
(moments, equal at different offsets, are not kept). Lookups are inlined in one loop per
struct; nothing else would make the rules cheaper than decoding itself.

Three switches leave rules out where something else already decides them:
- `printable`: the raw message is ASCII without escapes or DEL (`printable`);
  JSON strings cannot hold raw control characters, so every string is
  printable ASCII, and a pattern that only excludes characters outside it
  holds already.
- `spaceless`: and there is no space in it either, so no string needs
  stripping.
- `trusted`: a log the allocator writes itself (its commands, which the
  router validated; its outputs): only what makes pydantic's value differ
  from the decoded one runs (stripping, a validator that may change a value).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from msgspec.structs import astuple

from schemas.derive import Check, Checked, Items, Node, Nullable, Ref, Scalar, WireModel
from schemas.fields import is_check

Verdict = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Switches:
    trusted: bool = False
    printable: bool = False
    spaceless: bool = False  # implies printable


_KEPT = 16_384  # values kept per kind of value; then the set starts again
_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]
# A pattern that is one class of characters, repeated: "only these characters".
_ONE_CLASS = re.compile(r"\^(\[\^?(?:[^\]\\]|\\.)*\])([*+])\\Z")


def printable(raw: bytes) -> bool:
    """Whether every string in the JSON document `raw` is printable ASCII as written:
    no byte beyond ASCII, no escape, no DEL (both JSON readers refuse raw control
    characters in a string)."""
    return raw.isascii() and b"\\" not in raw and b"\x7f" not in raw


def _implied_by_printable(node: Scalar) -> bool:
    """Whether any printable-ASCII string of the node's length satisfies its pattern."""
    if node.pattern is None:
        return True
    match = _ONE_CLASS.fullmatch(node.pattern)
    if match is None:
        return False
    allowed = re.compile(match.group(1))
    if not all(allowed.fullmatch(c) for c in _PRINTABLE):
        return False
    return match.group(2) == "*" or dict(node.meta).get("min_length", 0) >= 1


class _Leaf:
    """One kind of value's rules, and the values that passed them."""

    def __init__(self, node: Scalar, checks: tuple[Check, ...], switches: Switches) -> None:
        self.strip = node.strip and not switches.spaceless
        self.search = None
        implied = switches.printable and _implied_by_printable(node)
        if node.pattern is not None and not switches.trusted and not implied:
            self.search = re.compile(node.pattern).search
        self.checks = tuple(c for c in checks if not (switches.trusted and is_check(c)))
        # None passes: msgspec lets it into optional fields only.
        self.kept: set[Any] = {None}
        # Kept values are found by equality; moments at different offsets are equal,
        # and a rule may tell them apart: those are checked every time.
        self.keep = node.kind != "datetime"

    @property
    def idle(self) -> bool:
        return not self.strip and self.search is None and not self.checks

    def __call__(self, value: Any) -> bool:
        # Python's isspace() covers Unicode White_Space: all that pydantic strips.
        if self.strip and value and (value[0].isspace() or value[-1].isspace()):
            return False
        if self.search is not None and self.search(value) is None:
            return False
        for check in self.checks:
            result = check(value)
            if result is not value and not (type(result) is type(value) and result == value):
                return False
        if self.keep:
            kept = self.kept
            if len(kept) >= _KEPT:
                kept.clear()
                kept.add(None)
            kept.add(value)
        return True


_Slot = tuple[int, set[Any], Verdict]  # a field's index, its kept values, its rules
_Child = tuple[int, Verdict]  # a struct or list field's index and verdict


def _struct_verdict(
    leaves: tuple[_Slot, ...], children: tuple[_Child, ...], checks: tuple[Check, ...]
) -> Verdict:
    def verdict(struct: Any) -> bool:
        values = astuple(struct)
        for index, kept, leaf in leaves:
            value = values[index]
            if value not in kept and not leaf(value):
                return False
        for index, child in children:
            if not child(values[index]):
                return False
        for check in checks:
            if check(struct) is not struct:  # a model validator returns its model
                return False
        return True

    return verdict


class Verdicts:
    """The verdict of every struct, for one setting of the switches."""

    def __init__(self, models: Iterable[WireModel], switches: Switches) -> None:
        self.switches = switches
        self.trusted = switches.trusted
        self.leaves: dict[tuple[Scalar, tuple[Check, ...]], _Leaf] = {}
        self.models: dict[str, Verdict] = {}
        # Each model's (leaves, children, validators), for a use that adds validators.
        self.parts: dict[str, tuple[tuple[_Slot, ...], tuple[_Child, ...], tuple[Check, ...]]] = {}
        for model in models:  # dependencies first
            verdict = self._model(model)
            if verdict is not None:
                self.models[model.name] = verdict

    def _leaf(self, node: Node) -> _Leaf | None:
        """The rules of a string, date, number... field; None for a struct or a list."""
        if isinstance(node, Nullable):
            node = node.inner
        checks: tuple[Check, ...] = ()
        if isinstance(node, Checked) and isinstance(node.inner, Scalar):
            checks = node.checks
            node = node.inner
        if not isinstance(node, Scalar):
            return None
        key = (node, checks)
        if key not in self.leaves:  # one kept set per kind of value, however many fields
            self.leaves[key] = _Leaf(node, checks, self.switches)
        return self.leaves[key]

    def _child(self, node: Node) -> Verdict | None:
        """A struct or list field's verdict; None when nothing in it needs one."""
        if isinstance(node, Ref):
            return self.models.get(node.model)
        if isinstance(node, Nullable):
            inner = self._child(node.inner)
            return None if inner is None else lambda value: value is None or inner(value)
        if isinstance(node, Items):
            leaf = self._leaf(node.inner)
            item: Verdict | None
            if leaf is not None:
                item = None if leaf.idle else leaf
            else:
                item = self._child(node.inner)
            return None if item is None else lambda values: all(map(item, values))
        if isinstance(node, Checked):
            return self._checked(node)
        return None  # a literal: msgspec decides it

    def _checked(self, node: Checked) -> Verdict | None:
        """A nested model's validators, run after its fields (in the same loop)."""
        checks = tuple(c for c in node.checks if not (self.trusted and is_check(c)))
        if isinstance(node.inner, Ref) and node.inner.model in self.parts:
            leaves, children, own = self.parts[node.inner.model]
            return _struct_verdict(leaves, children, own + checks)
        inner = self._child(node.inner)
        if not checks:
            return inner

        def verdict(value: Any) -> bool:
            if inner is not None and not inner(value):
                return False
            for check in checks:
                if check(value) is not value:
                    return False
            return True

        return verdict

    def _model(self, model: WireModel) -> Verdict | None:
        leaves: list[_Slot] = []
        children: list[_Child] = []
        for index, f in enumerate(model.fields):
            leaf = self._leaf(f.node)
            if leaf is not None and not leaf.idle:
                leaves.append((index, leaf.kept, leaf))
            elif leaf is None and (child := self._child(f.node)) is not None:
                children.append((index, child))
        checks = tuple(c for c in model.checks if not (self.trusted and is_check(c)))
        self.parts[model.name] = (tuple(leaves), tuple(children), checks)
        if not leaves and not children and not checks:
            return None
        return _struct_verdict(tuple(leaves), tuple(children), checks)
