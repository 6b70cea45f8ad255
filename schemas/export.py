"""Write one JSON Schema file per event type into schemas/jsonschema/, and schemas/wire.py.

`make schemas` runs this, then the AsyncAPI generator (fulfil/asyncapi.py, a
tool: it builds the services' apps, which the contract must not import);
tests/schemas/test_jsonschema_files.py and tests/schemas/test_wire.py fail
when the committed files differ from what the models generate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from schemas import wiregen
from schemas.registry import REGISTRY

OUT_DIR = Path(__file__).parent / "jsonschema"


def render_all() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name, spec in sorted(REGISTRY.items()):
        schema = spec.model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:fulfil:event:{name}:v1"
        schema["x-topic"] = spec.topic
        schema["x-kafka-key"] = spec.key_field
        files[f"{name}.v1.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return files


def main() -> int:
    OUT_DIR.mkdir(exist_ok=True)
    wanted = render_all()
    for stale in OUT_DIR.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    for name, body in wanted.items():
        (OUT_DIR / name).write_bytes(body)
    print(f"wrote {len(wanted)} schemas to {OUT_DIR}", file=sys.stderr)
    wiregen.main()
    print(f"wrote {wiregen.WIRE_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
