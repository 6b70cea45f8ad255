"""Write one JSON Schema file per event type into schemas/jsonschema/.

`make schemas` runs this; tests/schemas/test_jsonschema_files.py fails when
the committed files differ from what the models generate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from schemas.registry import DLQ_SUFFIX, REGISTRY

OUT_DIR = Path(__file__).parent / "jsonschema"


def render_all() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name, spec in sorted(REGISTRY.items()):
        schema = spec.model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:fulfil:event:{name}:v1"
        schema["x-topic"] = spec.topic
        schema["x-kafka-key"] = spec.key_field
        files[f"{name}.v1.json"] = orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    return files


def render_asyncapi() -> bytes:
    """An AsyncAPI 3.0 document of every topic and the events on it, from the registry."""
    from schemas.registry import base_topics

    channels: dict = {}
    operations: dict = {}
    messages: dict = {}
    producers = {"orders.v1": "upstream order systems", "inventory.v1": "warehouses and purchasing",
                 "allocator.commands.v1": "the allocator router", "allocations.v1": "the allocator core"}
    for topic in base_topics():
        if topic.endswith(DLQ_SUFFIX):
            continue
        channel = topic.replace(".", "_")
        types = sorted(n for n, spec in REGISTRY.items() if spec.topic == topic)
        if topic == "allocator.commands.v1":
            types = sorted(n for n, spec in REGISTRY.items() if spec.topic in ("orders.v1", "inventory.v1"))
        channels[channel] = {
            "address": topic,
            "description": f"Published by {producers[topic]}; a topic prefix (FULFIL_TOPIC_PREFIX) may apply. "
                           f"Invalid messages go to {topic}{DLQ_SUFFIX}.",
            "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in types},
            "bindings": {"kafka": {"topic": topic, "bindingVersion": "0.5.0"}},
        }
        operations[f"publish_{channel}"] = {"action": "send", "channel": {"$ref": f"#/channels/{channel}"}}
        for name in types:
            spec = REGISTRY[name]
            messages[name] = {
                "name": name,
                "title": name,
                "summary": (spec.model.__doc__ or "").strip(),
                "contentType": "application/json",
                "payload": {"$ref": f"jsonschema/{name}.v1.json"},
                "bindings": {"kafka": {"key": {"type": "string", "description": f"data.{spec.key_field}"}}},
            }
    document = {
        "asyncapi": "3.0.0",
        "info": {"title": "fulfil events", "version": "1.0.0",
                 "description": "The v1 event contract of the backorder-aware fulfilment service."},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


ASYNCAPI = Path(__file__).parent / "asyncapi.json"


def main() -> int:
    OUT_DIR.mkdir(exist_ok=True)
    wanted = render_all()
    for stale in OUT_DIR.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    for name, body in wanted.items():
        (OUT_DIR / name).write_bytes(body)
    ASYNCAPI.write_bytes(render_asyncapi())
    print(f"wrote {len(wanted)} schemas to {OUT_DIR} and {ASYNCAPI.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
