from pathlib import Path

from schemas.export import OUT_DIR, render_all


def test_committed_json_schemas_are_current() -> None:
    wanted = render_all()
    committed = {p.name for p in Path(OUT_DIR).glob("*.json")}
    assert committed == set(wanted), "run `make schemas`: the set of schema files changed"
    stale = [name for name, body in wanted.items() if (OUT_DIR / name).read_bytes() != body]
    assert not stale, f"run `make schemas`: stale JSON Schema files {stale}"
