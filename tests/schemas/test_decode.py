"""The fast decoder (schemas.decode) against its oracle: pydantic itself.

For random envelopes of every type, valid ones and broken ones, the decoder
accepts exactly what pydantic accepts, gives the value pydantic gives (equal
models, the same bytes once encoded), and refuses with pydantic's reason and
kind. The oracle is pydantic's own TypeAdapters over the contract's models,
built here; it shares nothing with the decoder but the reason's wording
(`schemas.validate.describe`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Annotated, Any, Union

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from schemas import decode, wire
from schemas.contract import INPUT_EVENTS, INTERNAL_COMMANDS, OUTPUT_EVENTS, Envelope
from schemas.registry import ContractError, encode
from schemas.validate import MAX_MESSAGE_BYTES, describe
from tests.builders.samples import VALID
from tests.schemas.strategies import envelopes

ALL = INPUT_EVENTS + INTERNAL_COMMANDS + OUTPUT_EVENTS
TYPES = sorted(m.__name__ for m in ALL)


def _adapter(models: tuple[type[Envelope], ...]) -> TypeAdapter[Any]:
    return TypeAdapter(Annotated[Union[models], Field(discriminator="type")])  # noqa: UP007


# (the decoder under test, pydantic over the same union)
DECODERS: dict[str, tuple[Callable[[bytes], Any], TypeAdapter[Any]]] = {
    "event": (decode.decode_event, _adapter(ALL)),
    "input": (decode.decode_input, _adapter(INPUT_EVENTS)),
    "command": (decode.decode_command, _adapter(INPUT_EVENTS + INTERNAL_COMMANDS)),
    "output": (decode.decode_output, _adapter(OUTPUT_EVENTS)),
}
COMMANDS = DECODERS["command"][1]


def oracle(adapter: TypeAdapter[Any], raw: bytes) -> Any:
    """pydantic's verdict: the model, or (reason, kind)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return (
            f"message is {len(raw)} bytes, more than the limit of {MAX_MESSAGE_BYTES}",
            "oversize",
        )
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        return describe(exc)


def _same_value(got: Any, expected: Envelope) -> None:
    assert type(got) is getattr(wire, expected.type)
    model = decode.to_model(got)
    assert model == expected
    assert encode(model) == encode(expected)
    # Offsets included: equal datetimes may differ in their offset.
    assert msgspec.json.encode(got) == msgspec.json.encode(decode.to_wire(expected))


def assert_agrees(name: str, raw: bytes) -> None:
    decoder, adapter = DECODERS[name]
    expected = oracle(adapter, raw)
    try:
        got = decoder(raw)
    except ContractError as exc:
        assert (exc.reason, exc.kind) == expected
        return
    assert not isinstance(expected, tuple), f"accepted what pydantic refuses: {expected}"
    _same_value(got, expected)


def assert_trusted_agrees(raw: bytes) -> None:
    """read_command: pydantic's value wherever pydantic accepts, pydantic's reason
    wherever it refuses; it may accept what only the contract's pure rules refuse."""
    expected = oracle(COMMANDS, raw)
    try:
        got = decode.read_command(raw)
    except ContractError as exc:
        assert (exc.reason, exc.kind) == expected
        return
    if not isinstance(expected, tuple):
        _same_value(got, expected)


def check_all(raw: bytes) -> None:
    for name in DECODERS:
        assert_agrees(name, raw)
    assert_trusted_agrees(raw)


# ---------------------------------------------------------------- values that break things

# Unicode White_Space (what pydantic strips), and characters near it that it does not.
SPACES = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_SPACES = "\x1c\x1f\u180e\u200b\ufeff"
CONTROLS = "\x00\x01\x08\x1b\x7f\x80\x9b\x9f"
DIGITS = "0123456789\u0663\u06f3\u0967\U0001d7d1"  # ASCII, Arabic-Indic, Devanagari, math bold
ODD = '-_.:+@TtZz,éß注😀"\\/'
chars = st.sampled_from(SPACES + NOT_SPACES + CONTROLS + DIGITS + ODD) | st.characters()
texts = st.text(chars, max_size=12)
edgy = st.builds(
    lambda a, b, c: a + b + c,
    st.sampled_from(["", " ", "\u3000", "\t"]),
    texts,
    st.sampled_from(["", " ", "\n", "\xa0"]),
)
lengths = st.builds(
    lambda n, c: c * n,
    st.sampled_from(
        [
            0,
            1,
            2,
            3,
            63,
            64,
            65,
            127,
            128,
            129,
            199,
            200,
            201,
            253,
            254,
            255,
            499,
            500,
            501,
            10_000,
            10_001,
        ]
    ),
    st.sampled_from(["x", "é", "😀"]),
)


def _two(n: int) -> str:
    return f"{n:02d}"


moments = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, off: f"{y}-{mo}-{d}{sep}{h}:{mi}{s}{frac}{off}",
    st.sampled_from(["0000", "0001", "1969", "1970", "2024", "2026", "8999", "9000", "9999"]),
    st.sampled_from(["00", "01", "02", "12", "13"]),
    st.sampled_from(["00", "01", "28", "29", "30", "31", "32"]),
    st.sampled_from(["T", "t", " ", "_", ""]),
    st.sampled_from(["00", "09", "23", "24"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["", ":00", ":59", ":60"]),
    st.sampled_from(["", "."]).flatmap(
        lambda dot: (
            st.just("")
            if not dot
            else st.text("0123456789", min_size=0, max_size=10).map(lambda f: "." + f)
        )
    )
    | st.just(",5"),
    st.sampled_from(
        [
            "",
            "Z",
            "z",
            "+00:00",
            "-00:00",
            "+01:00",
            "+0100",
            "+01",
            "+14:00",
            "-12:00",
            "+23:59",
            "+24:00",
            "+00:60",
        ]
    ),
)
days = st.builds(
    lambda y, mo, d, tail: f"{y}-{mo}-{d}{tail}",
    st.sampled_from(["0000", "0001", "1969", "1970", "2024", "2026", "8999", "9000", "9999"]),
    st.sampled_from(["00", "01", "02", "12", "13", "1"]),
    st.sampled_from(["00", "01", "28", "29", "30", "31", "32", "1"]),
    st.sampled_from(["", "T00:00:00", "T00:00:00Z", "T00:00:01Z", " ", "Z"]),
)
emails = st.sampled_from(
    [
        "ann@shop.example",
        "a@b",
        "a..b@shop.example",
        ".a@shop.example",
        "a.@shop.example",
        "a@-shop.example",
        "a@shop-.example",
        "A@SHOP.EXAMPLE",
        "ä@shop.example",
        "ann@bücher.example",
        "ann@xn--bcher-kva.example",
        "Ann@Bücher.Example",
        "x" * 64 + "@shop.example",
        "x" * 65 + "@shop.example",
        "a@" + "d" * 63 + ".example",
        "a@" + "d" * 64 + ".example",
        "user@[127.0.0.1]",
        '"quoted"@shop.example',
        "a b@shop.example",
        "a@shop.example.",
        "ann@shop.example\u200b",
    ]
) | st.emails().map(str)
currencies = st.sampled_from(["EUR", "USD", "JPY", "XYZ", "eur", "EU", "EURO", "€", "ZWL", "XXX"])
money = st.sampled_from(
    [
        "0",
        "0.0",
        "00",
        "01",
        "1.",
        ".5",
        "1.2345",
        "1.23456",
        "\u0661\u0662",
        "12.\u0665",
        "1e3",
        "-1",
        "+1",
        "1_000",
    ]
    + ["999999999999999", "999999999999999.9999", "1000000000000000", " 1", "1 ", "NaN", "Infinity"]
)
numbers = (
    st.sampled_from(
        [0, 1, -1, 2, 499, 500, 501, 999, 1000, 1001, -1000, -1001, 100_000, 100_001, 999_999]
        + [
            1_000_000,
            1_000_001,
            -1_000_000,
            -1_000_001,
            2**31,
            2**63 - 1,
            2**63,
            2**64,
            -(2**63) - 1,
            10**30,
        ]
    )
    | st.integers()
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, -0.0, 1e3, 2.5]),
    texts,
    edgy,
    lengths,
    moments,
    days,
    emails,
    currencies,
    money,
    st.sampled_from(
        ["ship_partial", "ship_complete", "any", "covered_only", "discontinued", "pre_order", "x"]
    ),
    st.sampled_from(TYPES + ["Order", "", "orderplaced"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=4,
)


def _alike(value: Any) -> st.SearchStrategy[Any]:
    """Values of the same kind as `value`: most of them near the edge of valid."""
    if isinstance(value, bool) or value is None:
        return scalars
    if isinstance(value, int):
        return numbers
    if not isinstance(value, str):
        return values
    if len(value) > 10 and value[4:5] == "-" and value[10:11] == "T":
        return moments
    if len(value) == 10 and value[4:5] == "-":
        return days
    if "@" in value:
        return emails
    if value.isupper() and len(value) == 3:
        return currencies
    if value.replace(".", "").isdigit():
        return money
    return texts | edgy | lengths


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*path, index))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def broken(draw: st.DrawFn, event_type: str) -> Any:
    """A valid envelope of `event_type`, then a few edits: values replaced (with wrong
    types, out-of-range numbers, odd strings, moments...), fields removed or added,
    lines repeated."""
    doc = copy.deepcopy(draw(envelopes(event_type)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        edit = draw(st.sampled_from(["alike", "alike", "replace", "delete", "add", "repeat"]))
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        if edit == "alike":
            parent[path[-1]] = draw(_alike(parent[path[-1]]))
        elif edit == "replace":
            parent[path[-1]] = draw(values)
        elif edit == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif edit == "add" and isinstance(parent, dict):
            parent[draw(texts)] = draw(values)
        elif edit == "repeat" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return doc


def _serialise(draw: st.DrawFn, doc: Any) -> bytes:
    style = draw(st.sampled_from(["orjson", "spaced", "ascii", "compact"]))
    if style == "orjson":
        try:
            return orjson.dumps(doc)
        except TypeError:  # an integer beyond 64 bits
            style = "compact"
    if style == "spaced":
        return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if style == "ascii":  # every non-ASCII character escaped
        return json.dumps(doc).encode()
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


@st.composite
def raw_broken(draw: st.DrawFn, event_type: str) -> bytes:
    raw = _serialise(draw, draw(broken(event_type)))
    if draw(st.integers(0, 4)) == 0:  # and now the bytes themselves
        at = draw(st.integers(0, len(raw)))
        cut = draw(st.integers(0, 3))
        insert = draw(
            st.sampled_from(
                [
                    b"",
                    b"\xff",
                    b"\xc3",
                    b"\x00",
                    b"\x7f",
                    b"\\",
                    b'"',
                    b"}",
                    b"\xef\xbb\xbf",
                    b"\\u0030",
                    b" ",
                ]
            )
        )
        raw = raw[:at] + insert + raw[at + cut :]
    return raw


@st.composite
def raw_valid(draw: st.DrawFn, event_type: str) -> bytes:
    return _serialise(draw, draw(envelopes(event_type)))


SETTINGS = settings(max_examples=100, suppress_health_check=list(HealthCheck), deadline=None)


@pytest.mark.parametrize("event_type", TYPES)
@SETTINGS
@given(data=st.data())
def test_valid_envelopes_decode_to_what_pydantic_gives(
    event_type: str, data: st.DataObject
) -> None:
    check_all(data.draw(raw_valid(event_type)))


@pytest.mark.parametrize("event_type", TYPES)
@settings(SETTINGS, max_examples=300)
@given(data=st.data())
def test_broken_envelopes_are_judged_as_pydantic_judges_them(
    event_type: str, data: st.DataObject
) -> None:
    check_all(data.draw(raw_broken(event_type)))


# ---------------------------------------------------------------- what the readers disagree on


def _valid(event_type: str = "OrderPlaced") -> dict[str, Any]:
    return copy.deepcopy(VALID.get(event_type) or envelopes(event_type).example())


@pytest.mark.parametrize("depth", [1, 150, 197, 198, 199, 200, 201, 202, 500, 1200])
def test_nesting_in_an_ignored_field_is_refused_where_pydantic_refuses_it(depth: int) -> None:
    raw = orjson.dumps(_valid())[:-1] + b',"extra":' + b"[" * depth + b"]" * depth + b"}"
    check_all(raw)


@pytest.mark.parametrize(
    "moment",
    [
        "2026-11-01T09:59:00.1234567Z",
        "2026-11-01T09:59:00.9999995Z",
        "2026-11-01T09:59:59.999999999+01:00",
        "2026-11-01T09:59:00.123456Z",
        "2026-11-01T09:59:00.5Z",
    ],
)
def test_fractions_beyond_microseconds_are_truncated_as_pydantic_does(moment: str) -> None:
    doc = _valid()
    doc["data"]["placed_at"] = moment
    check_all(orjson.dumps(doc))
    check_all(orjson.dumps(doc).replace(b".", b"\\u002e", 1))
    check_all(orjson.dumps(doc).replace(b"59:00", b"59:0\\u0030"))


@pytest.mark.parametrize(
    "insert", [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]
)
def test_invalid_utf8_in_an_ignored_field_is_refused(insert: bytes) -> None:
    raw = orjson.dumps(_valid())[:-1] + b',"extra":"' + insert + b'"}'
    check_all(raw)


@pytest.mark.parametrize("space", list(SPACES + NOT_SPACES))
@pytest.mark.parametrize("where", ["start", "end", "inside"])
def test_what_pydantic_strips_is_stripped(space: str, where: str) -> None:
    doc = _valid()
    for path in (
        ("id",),
        ("data", "order_id"),
        ("data", "lines", 0, "sku"),
        ("data", "customer", "email"),
    ):
        edited = copy.deepcopy(doc)
        value = _parent(edited, path)[path[-1]]
        new = {
            "start": space + value,
            "end": value + space,
            "inside": value[:1] + space + value[1:],
        }[where]
        _parent(edited, path)[path[-1]] = new
        check_all(json.dumps(edited, ensure_ascii=False).encode())
        check_all(json.dumps(edited).encode())


@pytest.mark.parametrize("control", [chr(c) for c in range(0x20)] + ["\x7f", "\x80", "\x9f"])
def test_control_characters_anywhere_are_judged_as_pydantic_does(control: str) -> None:
    doc = _valid()
    doc["data"]["customer"]["name"] = f"Ann{control}Lee"
    doc["data"]["lines"][0]["sku"] = f"S{control}"
    check_all(json.dumps(doc).encode())
    check_all(json.dumps(doc, ensure_ascii=False).encode())
    raw = (
        json.dumps(_valid(), ensure_ascii=False)
        .encode()
        .replace(b'"Ann"', b'"A' + control.encode() + b'n"')
    )
    check_all(raw)


def test_an_oversize_message_is_refused_as_oversize() -> None:
    doc = _valid()
    doc["padding"] = "x" * MAX_MESSAGE_BYTES
    check_all(orjson.dumps(doc))
    check_all(orjson.dumps(doc).decode())  # type: ignore[arg-type]  # text is accepted too


@example(b"")
@example(b"null")
@example(b"[]")
@example(b'{"type":"OrderPlaced"}')
@example(b'{"type":"OrderPlaced","type":"OrderCancelled"}')
@example(b"\xef\xbb\xbf{}")
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
@settings(SETTINGS, max_examples=200)
def test_garbage_is_refused_with_pydantics_reason(raw: bytes) -> None:
    check_all(raw)


def test_duplicate_keys_take_the_last_value_as_pydantic_does() -> None:
    raw = orjson.dumps(_valid())
    check_all(raw[:-1] + b',"id":"evt-2"}')
    check_all(raw[:-1] + b',"id":7}')
    check_all(raw.replace(b'"id":"evt-1"', b'"id":7,"id":"evt-1"'))
    check_all(raw[:-1] + b',"type":"OrderCancelled"}')


# ---------------------------------------------------------------- the common case stays fast


@pytest.mark.parametrize("event_type", TYPES)
@settings(SETTINGS, max_examples=30)
@given(data=st.data())
def test_a_valid_envelope_never_needs_pydantic(
    event_type: str, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As pydantic writes it: no space to strip, no address to normalise, no escapes.
    raw = encode(DECODERS["event"][1].validate_json(data.draw(raw_valid(event_type))))
    with monkeypatch.context() as patch:
        for name in ("_EVENT", "_COMMAND", "_TRUSTED_COMMAND"):
            patch.setattr(getattr(decode, name), "fallback", _no_pydantic)
        decode.decode_event(raw)
        if event_type in {m.__name__ for m in INPUT_EVENTS + INTERNAL_COMMANDS}:
            decode.decode_command(raw)
            decode.read_command(raw)


def _no_pydantic(raw: bytes | str) -> Any:
    raise AssertionError("the fast decoder handed a valid envelope to pydantic")


# ---------------------------------------------------------------- the trusted command log


def test_the_core_skips_pure_rules() -> None:
    doc = _valid()
    doc["data"]["lines"][0]["currency"] = "XYZ"  # only a pure rule refuses it
    raw = orjson.dumps(doc)
    with pytest.raises(ContractError):
        decode.decode_command(raw)
    command = decode.read_command(raw)
    assert isinstance(command, wire.OrderPlaced)
    assert command.data.lines[0].currency == "XYZ"


def test_the_core_keeps_what_changes_values() -> None:
    doc = _valid()
    doc["data"]["order_id"] = " o-1 "  # pydantic strips it
    doc["data"]["customer"]["email"] = "Ann@Bücher.Example"  # pydantic normalises it
    raw = json.dumps(doc, ensure_ascii=False).encode()
    command = decode.read_command(raw)
    expected = COMMANDS.validate_json(raw)
    assert (command.data.order_id, command.data.customer.email) == (
        "o-1",
        expected.data.customer.email,
    )
    assert expected.data.customer.email != "Ann@Bücher.Example"


@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"type":"OrderShipped"}', b'{"type":"ClockTicked"}', b""]
)
def test_an_undecodable_command_still_gets_pydantics_reason(raw: bytes) -> None:
    assert_trusted_agrees(raw)
    with pytest.raises(ContractError):
        decode.read_command(raw)
