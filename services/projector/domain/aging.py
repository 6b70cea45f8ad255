"""Backlog aging: how long backordered units have waited, in day buckets."""

from __future__ import annotations

from datetime import datetime, timedelta

# (column name, first day, last day) — inclusive, whole days of waiting.
BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("days_0_7", 0, 7),
    ("days_8_14", 8, 14),
    ("days_15_30", 15, 30),
    ("days_over_30", 31, None),
)
BUCKET_NAMES = tuple(name for name, _, _ in BUCKETS)
_DAY = timedelta(days=1)


def age_days(since: datetime, as_of: datetime) -> int:
    """Whole days waited at `as_of`; a backorder newer than `as_of` counts as 0."""
    return max(0, (as_of - since) // _DAY)


def bucket(days: int) -> str:
    for name, first, last in BUCKETS:
        if days >= first and (last is None or days <= last):
            return name
    return BUCKETS[0][0]  # negative ages are clamped by age_days
