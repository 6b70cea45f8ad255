from pathlib import Path

from schemas.export import ASYNCAPI, OUT_DIR, render_all, render_asyncapi


def test_committed_json_schemas_are_current() -> None:
    wanted = render_all()
    committed = {p.name for p in Path(OUT_DIR).glob("*.json")}
    assert committed == set(wanted), "run `make schemas`: the set of schema files changed"
    stale = [name for name, body in wanted.items() if (OUT_DIR / name).read_bytes() != body]
    assert not stale, f"run `make schemas`: stale JSON Schema files {stale}"


def test_committed_asyncapi_document_is_current() -> None:
    assert ASYNCAPI.read_bytes() == render_asyncapi(), "run `make schemas`: schemas/asyncapi.json is stale"
