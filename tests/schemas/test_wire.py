"""schemas/wire.py is what the contract generates, and the derivation refuses what it cannot translate."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
import pytest
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from schemas import contract, wire
from schemas.derive import Underivable, derive, python_pattern
from schemas.wiregen import WIRE_FILE, render


def test_the_committed_structs_are_what_the_contract_generates() -> None:
    assert WIRE_FILE.read_text() == render(), "run `make schemas` and commit schemas/wire.py"


@pytest.mark.parametrize(
    "model", contract.INPUT_EVENTS + contract.INTERNAL_COMMANDS + contract.OUTPUT_EVENTS
)
def test_every_envelope_has_its_struct_with_the_same_fields_in_order(model: type) -> None:
    struct = getattr(wire, model.__name__)
    assert issubclass(struct, msgspec.Struct)
    assert struct.__struct_config__.tag == model.__name__
    assert struct.type == model.__name__
    assert list(struct.__struct_fields__) == [f for f in model.model_fields if f != "type"]


# Rust's char::is_whitespace (Unicode White_Space): what pydantic's strip_whitespace removes.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000")
)


def test_python_sees_every_character_pydantic_strips_as_space() -> None:
    assert all(c.isspace() for c in WHITE_SPACE)


@pytest.mark.parametrize(
    ("rust", "python"),
    [
        (r"^[^\x00-\x1f\x7f-\x9f]*$", r"^[^\x00-\x1f\x7f-\x9f]*\Z"),
        (r"^[^\s\x00-\x1f]+$", r"^[^\s\x00-\x1f]+\Z"),
        (r"^\d{1,15}(\.\d{1,4})?$", r"^[0-9]{1,15}(\.[0-9]{1,4})?\Z"),
        (r"^[A-Z\d]{3}$", r"^[A-Z0-9]{3}\Z"),
        (r"^(?:ab|c)[$]$", r"^(?:ab|c)[$]\Z"),
    ],
)
def test_patterns_are_rewritten_where_the_engines_differ(rust: str, python: str) -> None:
    assert python_pattern(rust) == python


@pytest.mark.parametrize(
    "rust",
    [r"^\w+$", r"^[^\d]$", r"^\s$", r"(?i)abc", r"(?=a)b", r"[[:alpha:]]", r"[a&&b]", r"\p{L}"],
)
def test_patterns_whose_meaning_could_differ_are_refused(rust: str) -> None:
    with pytest.raises(Underivable):
        python_pattern(rust)


def test_a_translated_pattern_never_accepts_a_final_newline() -> None:
    assert re.search(python_pattern(r"^[a-z]{2}$"), "en\n") is None


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Before(_Base):
    value: Annotated[str, BeforeValidator(str.strip)]


class _Lowered(_Base):
    value: Annotated[str, StringConstraints(to_lower=True)]


class _Factory(_Base):
    value: list[int] = Field(default_factory=list)


class _Forbid(_Base):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: int


class _WithInfo(_Base):
    value: Annotated[int, AfterValidator(lambda v, info: v)]


@pytest.mark.parametrize("model", [_Before, _Lowered, _Factory, _Forbid, _WithInfo])
def test_rules_without_a_sound_translation_are_refused(model: type[BaseModel]) -> None:
    with pytest.raises(Underivable):
        derive([model], tag_field=None)
