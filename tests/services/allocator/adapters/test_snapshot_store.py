"""The allocator's snapshot files (issue 12 defects 6, and the storage side of 5 and 13).

Snapshots are data only (loading never runs code), versioned and checksummed;
anything unreadable is discarded with a warning so the partition is rebuilt
from its log; writes are atomic, 0600, and fail with `SnapshotWriteError`
without leaving anything partial behind.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from schemas.registry import encode
from services.allocator.adapters import snapshot_store
from services.allocator.adapters.snapshot_store import (
    SnapshotStore,
    SnapshotWriteError,
    decode_snapshot,
    encode_snapshot,
)
from services.allocator.domain import check_invariants, decide, new_state
from services.allocator.service_layer.partition import Snapshot
from tests.builders.inputs import Events
from tests.builders.streams import mixed_stream
from tests.services.allocator.domain.test_properties import build, ops

ROOT = Path(__file__).resolve().parents[4]
HEADER = struct.Struct(">8sHHQ32s")


def fold_all(events: list[Any], state=None) -> tuple[Any, list[bytes]]:
    state = state if state is not None else new_state(50)
    encoded = []
    for event in events:
        state, outputs = decide(state, event)
        encoded.extend(encode(o) for o in outputs)
    return state, encoded


@pytest.fixture
def events() -> list[Any]:
    return mixed_stream(1_500, seed=4, warehouses=2, skus_per_warehouse=15)


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "state" / "allocator", "cmd")


@pytest.fixture
def saved(store: SnapshotStore, events: list[Any]) -> Path:
    state, _ = fold_all(events[:1_000])
    store.save(0, Snapshot(state, applied_offset=999, output_offset=1_234))
    return store.path(0)


def warnings_of(logs: list[dict]) -> list[dict]:
    return [entry for entry in logs if entry["log_level"] == "warning"]


# ---------------------------------------------------------------- round trips


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=ops, cut=st.integers(0, 60), compress=st.booleans())
def test_save_load_then_folding_on_gives_the_outputs_of_never_snapshotting(
    plan: list[tuple], cut: int, compress: bool
) -> None:
    events = build(plan)
    cut = min(cut, len(events))
    _, expected = fold_all(events)
    state, first = fold_all(events[:cut])
    with tempfile.TemporaryDirectory() as tmp:
        store = SnapshotStore(Path(tmp), "cmd")
        original = snapshot_store.COMPRESS
        snapshot_store.COMPRESS = compress
        try:
            store.save(3, Snapshot(state, applied_offset=cut - 1, output_offset=len(first)))
        finally:
            snapshot_store.COMPRESS = original
        loaded = store.load(3)
    assert loaded is not None
    assert (loaded.applied_offset, loaded.output_offset) == (cut - 1, len(first))
    check_invariants(loaded.state)
    _, rest = fold_all(events[cut:], loaded.state)
    assert first + rest == expected


def test_a_long_stream_snapshotted_often_folds_identically(store: SnapshotStore) -> None:
    events = mixed_stream(6_000, seed=21, warehouses=2, skus_per_warehouse=40)
    _, expected = fold_all(events)
    state, got = new_state(50), []
    for n, event in enumerate(events):
        if n % 1_111 == 0:
            store.save(1, Snapshot(state, applied_offset=n - 1))
            state = store.load(1).state
        state, outputs = decide(state, event)
        got.extend(encode(o) for o in outputs)
    assert got == expected


def test_every_other_snapshot_field_round_trips_generically(
    store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fields another part adds to `Snapshot` are written without a change to the store."""

    @dataclasses.dataclass(slots=True)
    class Extended(Snapshot):
        written_upto: tuple = (-1, -1)
        log: dict = dataclasses.field(default_factory=dict)
        partitions: list = dataclasses.field(default_factory=list)
        note: str | None = None

    monkeypatch.setattr(snapshot_store, "Snapshot", Extended)
    extras = {
        "written_upto": (41, 2),
        "log": {
            "cluster_id": "abc",
            "start": 0,
            "end": 99,
            "ratio": 0.5,
            "nested": {"t": (1, "x")},
        },
        "partitions": [(0, 1), [2, 3], None, True],
        "note": None,
    }
    store.save(0, Extended(new_state(), applied_offset=41, output_offset=7, **extras))
    loaded = store.load(0)
    assert isinstance(loaded, Extended)
    assert (loaded.applied_offset, loaded.output_offset) == (41, 7)
    assert {name: getattr(loaded, name) for name in extras} == extras


# ---------------------------------------------------------------- hostile and damaged files


class _Planted:
    """A pickle that creates a directory when loaded: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_planted_pickle_runs_no_code_and_is_discarded(
    store: SnapshotStore, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    store.directory.mkdir(parents=True)
    store.path(0).write_bytes(pickle.dumps(_Planted(marker)))
    with capture_logs() as logs:
        assert store.load(0) is None
    assert not marker.exists()
    [warning] = warnings_of(logs)
    assert "magic" in warning["reason"] and warning["partition"] == 0
    assert not store.path(0).exists()
    assert store.path(0).with_name(store.path(0).name + ".corrupt").exists()


@pytest.mark.parametrize("keep", [0, 10, HEADER.size, HEADER.size + 100, -1])
def test_a_truncated_snapshot_is_discarded(store: SnapshotStore, saved: Path, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    with capture_logs() as logs:
        assert store.load(0) is None
    assert "truncated" in warnings_of(logs)[0]["reason"]


@pytest.mark.parametrize("where", ["magic", "payload", "digest"])
def test_a_flipped_byte_is_discarded(store: SnapshotStore, saved: Path, where: str) -> None:
    data = bytearray(saved.read_bytes())
    index = {"magic": 0, "payload": len(data) // 2, "digest": HEADER.size - 1}[where]
    data[index] ^= 0x01
    saved.write_bytes(bytes(data))
    with capture_logs() as logs:
        assert store.load(0) is None
    assert warnings_of(logs)


def test_another_format_version_is_discarded(store: SnapshotStore, saved: Path) -> None:
    data = saved.read_bytes()
    magic, _version, flags, length, digest = HEADER.unpack_from(data)
    saved.write_bytes(HEADER.pack(magic, 99, flags, length, digest) + data[HEADER.size :])
    with capture_logs() as logs:
        assert store.load(0) is None
    assert "version 99" in warnings_of(logs)[0]["reason"]


def _with_checksum(payload: bytes, flags: int = 0) -> bytes:
    import hashlib

    return (
        HEADER.pack(b"FULFILAS", 1, flags, len(payload), hashlib.sha256(payload).digest()) + payload
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"fields": {}, "state": {}}',
        b'{"fields": {"applied_offset": 3}, "state": {"format": 1, "dedup_window": "x"}}',
        orjson.dumps({"fields": {}, "state": {"format": 2}}),
        b'{"fields": {"format": 999}, "state": null}',
    ],
)
def test_well_checksummed_nonsense_is_discarded_without_raising(
    store: SnapshotStore, payload: bytes
) -> None:
    store.directory.mkdir(parents=True)
    store.path(0).write_bytes(_with_checksum(payload))
    with capture_logs() as logs:
        assert store.load(0) is None
    assert warnings_of(logs)


def test_a_damaged_state_inside_a_valid_file_is_discarded(store: SnapshotStore) -> None:
    """One customer field of the wrong type, checksum right: the load fails cleanly."""
    ev = Events()
    state, _ = fold_all([ev.order_placed("o1", "WH1", [("A", 2)])])  # waits: an open order
    good = Snapshot(state)
    assert decode_snapshot(encode_snapshot(good)).state.stats() == state.stats()
    plain = orjson.loads(encode_snapshot(good, compress=False)[HEADER.size :])
    store.directory.mkdir(parents=True)
    plain["state"]["orders"][0][2]["email"] = 12  # a customer e-mail that is a number
    store.path(0).write_bytes(_with_checksum(orjson.dumps(plain)))
    with capture_logs() as logs:
        assert store.load(0) is None
    assert "invalid content" in warnings_of(logs)[0]["reason"]


def test_a_snapshot_of_an_older_snapshot_format_is_discarded(
    store: SnapshotStore, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.allocator.service_layer import partition

    monkeypatch.setattr(partition, "SNAPSHOT_FORMAT", partition.SNAPSHOT_FORMAT + 1)
    assert store.load(0) is None


def test_a_fifo_or_directory_in_place_of_the_file_does_not_block_or_raise(
    store: SnapshotStore,
) -> None:
    store.directory.mkdir(parents=True)
    os.mkfifo(store.path(0))
    store.path(1).mkdir()
    assert store.load(0) is None
    assert store.load(1) is None
    assert store.load(2) is None  # missing: None, and no warning needed


def test_a_missing_snapshot_is_none_without_a_warning(store: SnapshotStore) -> None:
    with capture_logs() as logs:
        assert store.load(5) is None
    assert not warnings_of(logs)


# ---------------------------------------------------------------- writing


def test_files_are_0600_in_a_0700_directory_whatever_the_umask(
    store: SnapshotStore, events: list[Any]
) -> None:
    previous = os.umask(0)
    try:
        store.save(0, Snapshot(new_state()))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(store.path(0).stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert sorted(p.name for p in store.directory.iterdir()) == ["cmd-0.snapshot"]


def test_an_unwritable_directory_raises_snapshot_write_error(tmp_path: Path) -> None:
    # Root-proof: chmod does not stop root, but no one can create a directory
    # below a regular file (ENOTDIR).
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = SnapshotStore(blocker / "allocator", "cmd")
    with pytest.raises(SnapshotWriteError) as caught:
        store.save(0, Snapshot(new_state()))
    assert isinstance(caught.value, OSError) and caught.value.errno == 20  # ENOTDIR
    assert blocker.read_text() == ""


def test_a_failed_rename_leaves_no_temp_file(store: SnapshotStore, saved: Path) -> None:
    saved.unlink()
    saved.mkdir()  # os.replace(file, directory) fails after the data was written
    (saved / "keep").write_text("")
    with pytest.raises(SnapshotWriteError):
        store.save(0, Snapshot(new_state()))
    assert sorted(p.name for p in store.directory.iterdir()) == ["cmd-0.snapshot"]


def test_a_full_disk_raises_and_keeps_the_previous_snapshot(
    store: SnapshotStore, saved: Path
) -> None:
    """A full disk, root-proof: RLIMIT_FSIZE makes the write fail with EFBIG part-way
    (in a child process, so the limit cannot touch the test runner)."""
    before = saved.read_bytes()
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from services.allocator.adapters.snapshot_store import SnapshotStore, SnapshotWriteError
        from services.allocator.service_layer.partition import Snapshot
        from tests.services.allocator.adapters.test_snapshot_store import fold_all
        from tests.builders.streams import mixed_stream

        state, _ = fold_all(mixed_stream(3_000, seed=9, warehouses=2, skus_per_warehouse=15))
        store = SnapshotStore(Path({str(store.directory)!r}), "cmd")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            store.save(0, Snapshot(state, applied_offset=2_999))
        except SnapshotWriteError as exc:
            print("write error", exc.errno)
        else:
            print("written")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.strip() == "write error 27", result.stderr  # EFBIG
    assert sorted(p.name for p in store.directory.iterdir()) == ["cmd-0.snapshot"]
    assert saved.read_bytes() == before
    assert store.load(0).applied_offset == 999


def test_a_temp_file_left_by_a_killed_writer_is_cleared_at_load(
    store: SnapshotStore, saved: Path
) -> None:
    stale = store.directory / f".{saved.name}.x1y2.tmp"
    stale.write_bytes(b"half a snapshot")
    assert store.load(0) is not None
    assert not stale.exists()
