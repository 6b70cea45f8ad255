"""The core's fold of one command partition reads its log cheaply, and changes nothing by it.

`PartitionFold.apply` reads each command with `read_command` (the router
validated it) and folds the struct, where it used to validate it again with
pydantic and fold the model. The outputs must be the very bytes, and the state
the very state, a fold of pydantic's commands gives; a record that does not
even decode must still be reported (the core dead-letters it to
allocator.commands.v1.dlq with this reason).
"""

from __future__ import annotations

import json

import orjson
import pytest

from schemas.registry import encode
from schemas.validate import validate_command
from services.allocator.domain import fold
from services.allocator.domain.plain import state_to_plain
from services.allocator.service_layer.partition import PartitionFold
from tests.builders.samples import VALID, VALID_ORDER
from tests.builders.streams import mixed_stream


def _outputs(raws: list[bytes]) -> list[bytes]:
    partition = PartitionFold(0)
    out: list[bytes] = []
    for offset, raw in enumerate(raws):
        emissions, error = partition.apply(offset, raw)
        assert error is None
        out.extend(e.value for e in emissions)
    return out


def test_the_fold_writes_what_a_fold_of_pydantics_commands_writes() -> None:
    raws = [encode(event) for event in mixed_stream(2_000, seed=31)]
    # Statements (inbounds, SKU policies) leave marks in the state, one with a moment in it.
    cancelled = {
        "id": "evt-ic",
        "type": "InboundCancelled",
        "occurred_at": "2026-11-03T10:00:00.5+02:00",
        "source": "erp",
        "data": {
            "inbound_id": "in-1",
            "warehouse_id": "wh-1",
            "reason": "closed short",
            "cancelled_at": "2026-11-03T09:00:00.123Z",
        },
    }
    raws += [orjson.dumps({**VALID[name], "id": f"evt-{name}"}) for name in sorted(VALID)]
    raws.append(orjson.dumps(cancelled))
    state, expected = fold(validate_command(raw) for raw in raws)
    partition = PartitionFold(0)
    out: list[bytes] = []
    for offset, raw in enumerate(raws):
        emissions, error = partition.apply(offset, raw)
        assert error is None
        out.extend(e.value for e in emissions)
    assert out == [encode(event) for event in expected]
    # And the very same state: a snapshot taken by either is read by the other.
    assert state_to_plain(partition.snapshot.state) == state_to_plain(state)


def test_values_pydantic_normalises_are_normalised_as_the_router_saw_them() -> None:
    doc = json.loads(json.dumps(VALID_ORDER))
    doc["data"]["order_id"] = "  o-1\u3000"
    doc["data"]["customer"]["email"] = "Ann@Bücher.Example"
    doc["data"]["placed_at"] = "2026-11-01T09:59:00.1234567+01:00"
    raw = json.dumps(doc).encode()  # non-ASCII escaped, spaces between tokens
    _, expected = fold([validate_command(raw)])
    assert _outputs([raw]) == [encode(event) for event in expected]


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"{not json", "bad_json"),
        (b"", "bad_json"),
        (b'{"id":"e","type":"OrderShipped","version":1}', "unknown_type"),
        (orjson.dumps({**VALID_ORDER, "data": None}), "schema_violation"),
        (
            orjson.dumps({**VALID_ORDER, "data": {**VALID_ORDER["data"], "lines": []}}),
            "schema_violation",
        ),
        (b"x" * 1_000_001, "oversize"),
    ],
)
def test_an_undecodable_command_is_reported_not_folded(raw: bytes, kind: str) -> None:
    partition = PartitionFold(0)
    emissions, error = partition.apply(0, raw)
    assert emissions == [] and error is not None and error.kind == kind
    with pytest.raises(Exception) as info:
        validate_command(raw)
    assert error.reason == str(info.value)  # pydantic's reason, as before
    assert partition.applied_offset == 0  # passed over: the partition goes on
    emissions, error = partition.apply(1, orjson.dumps(VALID_ORDER))
    assert error is None and emissions
