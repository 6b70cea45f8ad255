"""Contract decoding speed: pydantic alone, the fast decoder (schemas.decode), and raw
orjson.loads as the baseline; same messages, same run, best of interleaved rounds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from schemas.decode import decode_input, decode_output, read_command, read_output
from schemas.registry import encode, parse_input
from schemas.validate import validate_input, validate_output
from services.allocator.domain import fold
from tests.builders.samples import VALID
from tests.builders.streams import mixed_stream


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


def allocation_values(n: int) -> list[bytes]:
    """`n` allocation events as the allocator writes them (about 2 per input)."""
    _, outputs = fold(mixed_stream(n // 2 + 1, seed=7, prefix="c"))
    return [encode(e) for e in outputs][:n]


def _rates(fns: dict[str, Callable[[Any], Any]], messages: list[bytes]) -> dict[str, float]:
    best = dict.fromkeys(fns, 0.0)
    for _ in range(3):  # interleaved: a noisy neighbour slows every contender alike
        for name, fn in fns.items():
            start = time.perf_counter()
            for raw in messages:
                fn(raw)
            best[name] = max(best[name], len(messages) / (time.perf_counter() - start))
    return best


def bench_contract(n: int = 100_000) -> dict[str, float]:
    messages = representative_envelopes(n)
    allocations = allocation_values(n // 2)
    for fn in (parse_input, decode_input, read_command):
        for raw in messages[:2000]:  # warm-up: the decoder keeps the values it checked
            fn(raw)
    inputs = _rates(
        {
            "orjson_loads_per_s": orjson.loads,
            "pydantic_inputs_per_s": validate_input,
            "decoder_inputs_per_s": decode_input,
            "parse_input_per_s": parse_input,
            "core_read_command_per_s": read_command,
        },
        messages,
    )
    outputs = _rates(
        {
            "pydantic_allocations_per_s": validate_output,
            "decoder_allocations_per_s": decode_output,
            "projector_read_output_per_s": read_output,
        },
        allocations,
    )
    return {
        **inputs,
        **outputs,
        "ratio": inputs["parse_input_per_s"] / inputs["orjson_loads_per_s"],
        "decoder_vs_pydantic_inputs_ratio": inputs["decoder_inputs_per_s"]
        / inputs["pydantic_inputs_per_s"],
        "decoder_vs_pydantic_allocations_ratio": outputs["decoder_allocations_per_s"]
        / outputs["pydantic_allocations_per_s"],
    }
