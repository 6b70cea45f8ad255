"""Golden digests of seeded streams folded through the core: outputs byte for byte.

Output ids are derived from input ids and output positions, and a restarted
allocator recognises what it already wrote by those ids: a refactoring of the
domain must not move one byte of one output. These digests pin the outputs
(ids, order, JSON) and the final state of a mixed stream and of a
backorder-heavy one (half the receipts dropped: queues, ETAs, fills).

A digest changes only on purpose: when a rule changes (then every replayed
log changes too, and DESIGN says so), or when `tests/builders/streams.py` / `inputs.py`
generate other events. Recompute with `digests(...)` below and say why in
the commit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from schemas.registry import encode
from services.allocator.domain import decide, new_state
from services.allocator.domain import queue as queue_module
from services.allocator.domain.plain import state_to_plain
from tests.builders.streams import mixed_stream


def _mixed() -> list[Any]:
    return mixed_stream(4_000, seed=1)


def _backorder_heavy() -> list[Any]:
    stream = mixed_stream(6_000, seed=3, skus_per_warehouse=40)
    return [e for i, e in enumerate(stream) if not (e.type == "StockReceived" and i % 2 == 0)]


def digests(stream: list[Any]) -> tuple[str, str]:
    """(sha256 of every output's JSON, one a line; sha256 of the final state's plain form)."""
    state = new_state()
    outputs = hashlib.sha256()
    for command in stream:
        state, produced = decide(state, command)
        for output in produced:
            outputs.update(encode(output))
            outputs.update(b"\n")
    plain = state_to_plain(state)
    for name in _ID_SETS:  # sets: their order follows the process's string hash seed
        plain[name] = {scope: sorted(ids) for scope, ids in plain[name].items()}
    return outputs.hexdigest(), hashlib.sha256(
        json.dumps(plain, sort_keys=True).encode()
    ).hexdigest()


_ID_SETS = ("closed_orders", "tombstones", "seen_receipts", "seen_adjustments")


GOLDEN = {
    "mixed": (
        "7058b6704889f3ec7c4a4b3899eb8ee267ed22ac399dfa3ae905899d3cce5fca",
        "2219b6f1c0c2edfc9a1189650977a73d451a12d09fa816ca0cffb096c8c501f6",
    ),
    "backorder_heavy": (
        "9b0f4724413bdd001ae7588b55daeed8efbc15c76f76f0be7e7be3f093c951cc",
        "a4af3ce9f731d081b46e2936a9d692b8c719d7629b87089255a2630bda8bf600",
    ),
}
STREAMS = {"mixed": _mixed, "backorder_heavy": _backorder_heavy}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_outputs_and_state_match_the_golden_digests(name: str) -> None:
    assert digests(STREAMS[name]()) == GOLDEN[name]


def test_queue_block_size_changes_no_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny blocks split and merge all the time; the snapshot's shape differs, the outputs do not.
    monkeypatch.setattr(queue_module, "QUEUE_BLOCK", 2)
    outputs, _state = digests(_backorder_heavy())
    assert outputs == GOLDEN["backorder_heavy"][0]
