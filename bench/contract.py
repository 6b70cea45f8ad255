"""Contract parse+validate speed relative to raw orjson.loads, same messages, same run."""

from __future__ import annotations

import time

import orjson

from schemas.registry import parse_input
from tests.builders.samples import VALID


def representative_envelopes(n: int) -> list[bytes]:
    templates = [
        VALID[t]
        for t in (
            "OrderPlaced",
            "OrderPlaced",
            "OrderPlaced",
            "StockReceived",
            "InboundScheduled",
            "OrderCancelled",
            "StockAdjusted",
            "ShipmentDelayed",
        )
    ]
    out = []
    for i in range(n):
        doc = dict(templates[i % len(templates)])
        doc["id"] = f"evt-{i}"
        out.append(orjson.dumps(doc))
    return out


def _rate(fn, messages: list[bytes]) -> float:
    start = time.perf_counter()
    for raw in messages:
        fn(raw)
    return len(messages) / (time.perf_counter() - start)


def bench_contract(n: int = 100_000) -> dict[str, float]:
    messages = representative_envelopes(n)
    _rate(parse_input, messages[:2000])  # warm-up
    raw = _rate(orjson.loads, messages)
    contract = _rate(parse_input, messages)
    return {"orjson_loads_per_s": raw, "contract_parse_per_s": contract, "ratio": contract / raw}
