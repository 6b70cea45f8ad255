"""Snapshots of a partition's fold in a local directory.

A local directory (FULFIL_STATE_DIR, a persistent volume in production)
keeps the allocator independent of PostgreSQL and makes a snapshot one
atomic rename. Snapshots are only an optimisation: losing one, or finding it
unreadable, costs a replay of the partition's command log, never correctness.

File format (data only: loading can never run code, unlike the pickles of
old; a planted or damaged file is discarded with a warning):

    header  = magic b"FULFILAS" | format version u16 | flags u16
              | payload length u64 | sha256(payload) 32 bytes   (big-endian)
    payload = JSON (orjson), zlib-compressed when flags & 1:
              {"fields": {every Snapshot field but `state`, tagged},
               "state": services.allocator.domain.plain.state_to_plain(state)}

`Snapshot` fields other than `state` are written generically (JSON scalars,
lists, dicts, tuples), so fields added to `Snapshot` round-trip without a
change here. Files are 0600 in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import hashlib
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from fulfil_platform.logs import get_logger
from services.allocator.domain.plain import state_from_plain, state_to_plain
from services.allocator.service_layer import partition as _partition
from services.allocator.service_layer.partition import Snapshot

log = get_logger(__name__)

MAGIC = b"FULFILAS"
FORMAT_VERSION = 1  # of the file layout; the state's shape has its own (plain.STATE_FORMAT)
_HEADER = struct.Struct(">8sHHQ32s")
FLAG_ZLIB = 1
# zlib level 1 pays: the state's JSON shrinks ~8x (50 k open orders: 12 MB ->
# 1.5 MB) for about the time the larger write and fsync would take.
COMPRESS = True
_TUPLE = "__tuple__"
_DICT = "__dict__"


class SnapshotWriteError(OSError):
    """A snapshot could not be written (full or read-only disk, permissions).

    Nothing partial is left behind and the previous snapshot, if any, is
    intact; the caller goes on without this snapshot (it is an optimisation).
    """


class SnapshotUnreadable(ValueError):
    """The file is not a snapshot this code can use; `str()` says why."""


# ---------------------------------------------------------------- generic fields


def _tag(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_tag(v) for v in value]}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TUPLE not in value and _DICT not in value:
            return {k: _tag(v) for k, v in value.items()}
        return {_DICT: [[_tag(k), _tag(v)] for k, v in value.items()]}
    raise TypeError(f"a Snapshot field holds a {type(value).__name__}: not plain data")


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and _TUPLE in value:
            return tuple(_untag(v) for v in value[_TUPLE])
        if len(value) == 1 and _DICT in value:
            return {_untag(k): _untag(v) for k, v in value[_DICT]}
        return {k: _untag(v) for k, v in value.items()}
    return value


def _fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Snapshot) if f.name != "state"]


# ---------------------------------------------------------------- encoding


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building a few hundred thousand containers would trigger full collections
    over the whole (large, long-lived) state again and again: half the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def encode_snapshot(snapshot: Snapshot, compress: bool | None = None) -> bytes:
    """The file's bytes (header + payload) for `snapshot`."""
    with _gc_paused():
        return _encode(snapshot, COMPRESS if compress is None else compress)


def _encode(snapshot: Snapshot, compress: bool) -> bytes:
    fields = {f.name: _tag(getattr(snapshot, f.name)) for f in _fields()}
    payload = orjson.dumps({"fields": fields, "state": state_to_plain(snapshot.state)})
    flags = 0
    if compress:
        payload = zlib.compress(payload, 1)
        flags |= FLAG_ZLIB
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, flags, len(payload), hashlib.sha256(payload).digest()
    )
    return header + payload


def decode_snapshot(data: bytes) -> Snapshot:
    """The snapshot in `data`; raises `SnapshotUnreadable` (only) with the reason."""
    if len(data) < _HEADER.size:
        raise SnapshotUnreadable(f"truncated: {len(data)} bytes, shorter than the header")
    magic, version, flags, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotUnreadable(
            "not a fulfil snapshot (wrong magic; an old pickle or a foreign file)"
        )
    if version != FORMAT_VERSION:
        raise SnapshotUnreadable(f"format version {version}, this code reads {FORMAT_VERSION}")
    if flags & ~FLAG_ZLIB:
        raise SnapshotUnreadable(f"unknown flags {flags:#x}")
    payload = memoryview(data)[_HEADER.size :]
    if len(payload) != length:
        raise SnapshotUnreadable(
            f"truncated or padded: payload {len(payload)} bytes, header says {length}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise SnapshotUnreadable("checksum mismatch (a damaged file)")
    try:
        with _gc_paused():
            raw = zlib.decompress(payload) if flags & FLAG_ZLIB else payload
            document = orjson.loads(raw)
            fields = {}
            for field in _fields():
                if field.name in document["fields"]:
                    fields[field.name] = _untag(document["fields"][field.name])
            state = state_from_plain(document["state"])
            snapshot = Snapshot(state, **fields)
    except Exception as exc:  # noqa: BLE001 - whatever the content, the answer is "unreadable"
        # The type only: messages of validation errors may quote customer data.
        raise SnapshotUnreadable(f"invalid content ({type(exc).__name__})") from exc
    expected = getattr(_partition, "SNAPSHOT_FORMAT", None)
    found = getattr(snapshot, "format", expected)
    if found != expected:
        raise SnapshotUnreadable(f"snapshot format {found!r}, this code reads {expected!r}")
    return snapshot


# ---------------------------------------------------------------- the store


class SnapshotStore:
    def __init__(self, directory: Path, topic: str):
        self.directory = Path(directory)
        self.topic = topic

    def path(self, partition: int) -> Path:
        return self.directory / f"{self.topic}-{partition}.snapshot"

    def load(self, partition: int) -> Snapshot | None:
        """The partition's snapshot; None when there is none or it cannot be used.

        Never raises on a file's content: an unreadable snapshot is logged,
        moved aside as `*.corrupt` for operators, and the caller rebuilds
        the partition from its log.
        """
        path = self.path(partition)
        self._remove_stale_temps(path)
        try:
            data = _read_regular_file(path)
        except FileNotFoundError:
            return None
        except (OSError, SnapshotUnreadable) as exc:
            self._discard(partition, path, str(exc))
            return None
        try:
            return decode_snapshot(data)
        except SnapshotUnreadable as exc:
            self._discard(partition, path, str(exc))
            return None

    def save(self, partition: int, snapshot: Snapshot) -> None:
        """Write atomically (temp file, fsync, rename) with mode 0600.

        Raises `SnapshotWriteError` on any OSError (full disk, read-only or
        missing directory...), leaving no temp file and the previous
        snapshot in place.
        """
        data = encode_snapshot(snapshot)
        final = self.path(partition)
        try:
            self._make_directory()
            fd, temp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    os.fchmod(handle.fileno(), 0o600)  # mkstemp's mode already; be explicit
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            self._sync_directory()
        except OSError as exc:
            raise SnapshotWriteError(
                exc.errno, f"cannot write snapshot {final}: {exc.strerror or exc}"
            ) from exc

    # ---- helpers

    def _make_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = self.directory.stat().st_mode
        if mode & 0o077:
            with contextlib.suppress(OSError):  # not ours to fix if we cannot (a shared mount)
                os.chmod(self.directory, 0o700)

    def _sync_directory(self) -> None:
        # Makes the rename durable; some file systems cannot fsync a directory.
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise
        finally:
            os.close(fd)

    def _remove_stale_temps(self, path: Path) -> None:
        """Temp files a killed writer left (load runs before this process writes the partition)."""
        with contextlib.suppress(OSError):
            for stale in self.directory.glob(f".{path.name}.*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()

    def _discard(self, partition: int, path: Path, reason: str) -> None:
        aside: Path | None = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
        except OSError:
            aside = None
        log.warning(
            "snapshot unreadable, rebuilding the partition from the command log",
            partition=partition,
            path=str(path),
            reason=reason,
            moved_to=str(aside) if aside else None,
        )


def _read_regular_file(path: Path) -> bytes:
    """The file's bytes; refuses what is not a regular file (a FIFO would block, a device never ends)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SnapshotUnreadable("not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read()
    finally:
        os.close(fd)
