"""Snapshots of a partition's fold in a local directory.

A local directory (FULFIL_STATE_DIR, a persistent volume in production)
keeps the allocator independent of PostgreSQL and makes a snapshot one
atomic rename. Losing it is safe: the fold is rebuilt from the command log.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from services.allocator.service_layer.partition import SNAPSHOT_FORMAT, Snapshot


class SnapshotStore:
    def __init__(self, directory: Path, topic: str):
        self.directory = Path(directory)
        self.topic = topic

    def path(self, partition: int) -> Path:
        return self.directory / f"{self.topic}-{partition}.snapshot"

    def load(self, partition: int) -> Snapshot | None:
        path = self.path(partition)
        try:
            with path.open("rb") as handle:
                snapshot = pickle.load(handle)  # noqa: S301 - our own file, written below
        except FileNotFoundError:
            return None
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            # An unreadable snapshot (older code, torn disk) costs a full replay, not correctness.
            return None
        if not isinstance(snapshot, Snapshot) or snapshot.format != SNAPSHOT_FORMAT:
            return None
        return snapshot

    def save(self, partition: int, snapshot: Snapshot) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path(partition)
        temp = final.with_suffix(".tmp")
        with temp.open("wb") as handle:
            pickle.dump(snapshot, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
