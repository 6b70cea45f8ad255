"""Identities: the ids the allocator derives, and the marks that recognise a repeated statement.

Every id is a function of the input's id (and a position or an order id), so
a replayed log yields the ids already published and the service recognises
its own outputs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from hashlib import blake2b, sha1

from schemas import wire
from schemas.contract import InboundCancelled, InboundScheduled, ShipmentDelayed, SkuPolicySet
from schemas.decode import model_of

# Fixed namespace of every id the allocator derives (uuid5). Never change it:
# output ids of a replayed log must equal the ones already published.
NAMESPACE = uuid.UUID("5f0c6a52-3c1e-5b7a-9d4e-2a4f7b1c8e10")
SOURCE = "fulfil-allocator"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAMESPACE_BYTES = NAMESPACE.bytes

# An inbound or SKU-policy statement: what `first_statement` remembers.
Statement = (
    InboundScheduled
    | ShipmentDelayed
    | SkuPolicySet
    | InboundCancelled
    | wire.InboundScheduled
    | wire.ShipmentDelayed
    | wire.SkuPolicySet
    | wire.InboundCancelled
)


def uuid5_str(name: str) -> str:
    """`str(uuid.uuid5(NAMESPACE, name))`, several times faster (no UUID object)."""
    x = sha1(_NAMESPACE_BYTES + name.encode()).hexdigest()
    variant = "89ab"[int(x[16], 16) & 3]
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant}{x[17:20]}-{x[20:32]}"


def output_id(input_id: str, index: int) -> str:
    """The id of the `index`-th output (0-based) caused by input `input_id`."""
    return uuid5_str(f"{input_id}/{index}")


def shipment_id(input_id: str, order_id: str) -> str:
    """The id of the shipment input `input_id` releases for order `order_id`."""
    return uuid5_str(f"{input_id}/shipment/{order_id}")


def placed_micros(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact, sortable)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def statement_mark(env: Statement) -> str:
    """The identity of an inbound or SKU-policy statement: type, occurred_at and payload.

    See `rules.py` for why `occurred_at` belongs to it. A 128-bit digest keeps
    what is stored for ever small; marks are only compared among the few
    statements about one inbound or SKU.
    """
    # The model's JSON form, whichever form the command came in: marks are kept in
    # snapshots, so they must not depend on it.
    payload = model_of(env.data).model_dump(mode="json")
    content = repr((env.type, placed_micros(env.occurred_at), payload))
    return blake2b(content.encode(), digest_size=16).hexdigest()


def first_statement(
    marks: dict[tuple[str, str], list[str]], key: tuple[str, str], env: Statement
) -> bool:
    """Remember `env` as a statement about `key`; False if it was seen before."""
    mark = statement_mark(env)
    seen = marks.get(key)
    if seen is None:
        marks[key] = [mark]
        return True
    if mark in seen:
        return False
    seen.append(mark)
    return True
