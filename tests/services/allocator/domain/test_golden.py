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
        "12904003583c492c57bcce8aa06900de02fb42a95363181ad8f8fb3c3746a5e6",
        "e6020f03819e7e9d982a29eb6a1ff3a907013cc3089eb257be7d1cbda23abf8f",
    ),
    "backorder_heavy": (
        "71d7c47ac15ef609fed9f6927d12ce70dc68f6cc377364510441853f8722b141",
        "21926c3f858437160048baf7703f45400ce6f348ef91c0d81a6b0304d8bbc1db",
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
