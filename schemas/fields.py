"""The v1 contract's field types: what one value may be, and the rules for it.

The models (`schemas.contract`) are built from these. Every rule is one that
pydantic enforces; `schemas.decode` derives its fast decoder from the same
declarations, so a rule added here is enforced by both. Every validator is a
pure function of its value (the decoder keeps the verdicts of values it has
seen), and one that only checks is marked `@check`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

MAX_QUANTITY = 1_000_000
MAX_LINES_PER_ORDER = 500
MAX_PRIORITY = 1_000
# A sum of units per SKU (a stock position's available, backordered, incoming...) is
# stored as PostgreSQL `bigint`. Every input moves at most MAX_QUANTITY units per
# line, and a line costs at least ~40 bytes of log, so reaching 2**63 - 1 would take
# ~9.2e12 maximal lines, ~370 TB of one warehouse's log for one SKU: no partition
# gets there, so the bound holds without any cross-event check. 32 bits would not
# (2,148 backordered maximal lines overflow them).
MAX_UNITS = 2**63 - 1

# Moments and dates are kept between these (UTC). The start is the Unix epoch: nothing
# of this business happened before it, and µs-since-epoch keys stay non-negative. The
# end leaves a thousand years for any date arithmetic downstream (an ETA plus a delay,
# a reminder after N days) before Python's year-9999 limit; without it, year 1 at
# +14:00 or year 9999 at -14:00 overflow the moment they are converted to UTC.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)  # exclusive

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


_F = TypeVar("_F", bound=Callable[..., Any])


def check(validator: _F) -> _F:
    """Marks a validator as a pure rule: it returns its input unchanged or raises. Rules
    need not run twice: the allocator core skips them on its own command log, which
    the router validated. A validator that may change a value (`_email` normalises an
    address) is not marked, and runs wherever the value is decoded."""
    setattr(validator, "__contract_check__", True)  # noqa: B010 - an attribute mypy cannot see
    return validator


def is_check(validator: object) -> bool:
    return getattr(validator, "__contract_check__", False) is True


@check
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


@check
def _money(value: str) -> str:
    amount = Decimal(value)
    if amount < 0:
        raise ValueError("money must not be negative")
    return value


@check
def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # before year 1 or after year 9999 in UTC
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(_RANGE_MESSAGE)
    return value


@check
def _day_in_range(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError(_RANGE_MESSAGE)
    return value


_RANGE_MESSAGE = (
    f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC, the end excluded)"
)

# Control characters: C0, DEL and C1. PostgreSQL text cannot hold NUL at all; the
# others in an id or a name are never meant and break logs, terminals and mail
# headers. Checked by pattern (pydantic-core's regex, no Python per string), which
# the JSON Schema files carry too. `_describe` words the errors.
NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"
# Free text (reasons) may span lines: TAB, LF and CR are allowed there, nothing else.
NO_CONTROLS_BUT_LINES = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
NO_CONTROLS_NO_SPACES = r"^[^\s\x00-\x1f\x7f-\x9f]+$"

Id = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=NO_CONTROLS)
]
# One line of free text (names, suppliers).
Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200, pattern=NO_CONTROLS)]
# Free text that may span lines (reasons).
Text = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=500, pattern=NO_CONTROLS_BUT_LINES
    ),
]
Sku = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=NO_CONTROLS_NO_SPACES
    ),
]
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
# A line's totals after an event: each is at most the line's quantity.
LineCount = Annotated[int, Field(strict=True, ge=0, le=MAX_QUANTITY)]
# A SKU's position: sums over many events, bounded by `bigint` (see MAX_UNITS).
Units = Annotated[int, Field(strict=True, ge=0, le=MAX_UNITS)]
Delta = Annotated[int, Field(strict=True, ge=-MAX_QUANTITY, le=MAX_QUANTITY)]
LineNo = Annotated[int, Field(strict=True, ge=1, le=100_000)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_known_currency)]
# At most 15 integer digits and 4 decimals: exactly what `numeric(19, 4)` holds. One
# order's total per currency (500 lines x 1,000,000 units x < 10**15) has at most 24
# integer digits + 4 decimals = 28 significant digits: Python's default Decimal
# context adds it up exactly, and `numeric` without a precision stores it.
Money = Annotated[
    str,
    StringConstraints(pattern=r"^\d{1,15}(\.\d{1,4})?$"),
    AfterValidator(_money),
]
_RANGE_SCHEMA = {
    "formatMinimum": f"{EARLIEST:%Y-%m-%dT%H:%M:%SZ}",
    "formatExclusiveMaximum": f"{LATEST:%Y-%m-%dT%H:%M:%SZ}",
}
Timestamp = Annotated[
    AwareDatetime, AfterValidator(_in_range), Field(json_schema_extra=_RANGE_SCHEMA)
]
Day = Annotated[
    date,
    AfterValidator(_day_in_range),
    Field(
        json_schema_extra={
            "formatMinimum": f"{EARLIEST:%Y-%m-%d}",
            "formatExclusiveMaximum": f"{LATEST:%Y-%m-%d}",
        }
    ),
]
Locale = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=254),
    AfterValidator(_email),
    Field(json_schema_extra={"format": "email"}),
]
FulfilmentPolicy = Literal["ship_partial", "ship_complete"]
