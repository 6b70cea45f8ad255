"""`fulfil dlq`: the operator tool over dead letters: list, show, and redrive back to the source topic.

The services write them (fulfil_platform/dead_letter_writer.py names the headers).

A redrive re-publishes the original bytes (same event id, so the allocator's
deduplication makes a repeat harmless) and records itself on
`<dlq topic>.redriven`, so redriving the same dead letter twice is a no-op.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.dead_letter_writer import (
    H_KIND,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_TOPIC,
    QUARANTINE_TOPICS,
    REDRIVEN_SUFFIX,
)
from schemas.registry import DLQ_SUFFIX, base_topics

H_REDRIVEN_FROM = "fulfil-redriven-from"


@dataclass
class DeadLetter:
    dlq_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def ref(self) -> str:
        return f"{self.dlq_topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        return kafka.header(self.headers, name)

    @property
    def event_type(self) -> str | None:
        try:
            doc = orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return None
        return (
            doc.get("type") if isinstance(doc, dict) and isinstance(doc.get("type"), str) else None
        )

    @property
    def event_id(self) -> str | None:
        try:
            doc = orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return None
        return doc.get("id") if isinstance(doc, dict) and isinstance(doc.get("id"), str) else None

    def summary(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "source_topic": self.header(H_TOPIC),
            "source_partition": int(self.header(H_PARTITION) or -1),
            "source_offset": int(self.header(H_OFFSET) or -1),
            "kind": self.header(H_KIND),
            "reason": self.header(H_REASON),
            "type": self.event_type,
            "event_id": self.event_id,
            "bytes": len(self.value),
        }


def dlq_topics(settings: Settings) -> list[str]:
    """The router's and core's `<topic>.dlq`, then the consumers' `<group>.dlq` quarantines.
    A quarantined record's source header names the topic it came from, so a redrive
    sends it back there like any other dead letter."""
    routed = [t for t in base_topics() if t.endswith(DLQ_SUFFIX)]
    return [settings.topic(t) for t in routed + list(QUARANTINE_TOPICS)]


async def _read(settings: Settings, topic: str) -> list[Any]:
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return []
        found = await kafka.read_ranges(
            consumer, {TopicPartition(topic, p): 0 for p in sorted(partitions)}
        )
        return [r for tp in sorted(found, key=lambda t: t.partition) for r in found[tp]]
    finally:
        await consumer.stop()


async def dead_letters(settings: Settings) -> list[DeadLetter]:
    letters = []
    for topic in dlq_topics(settings):
        for r in await _read(settings, topic):
            letters.append(
                DeadLetter(topic, r.partition, r.offset, r.key, r.value, list(r.headers or ()))
            )
    return letters


async def redriven_refs(settings: Settings) -> set[str]:
    refs = set()
    for topic in dlq_topics(settings):
        for r in await _read(settings, topic + REDRIVEN_SUFFIX):
            refs.add(orjson.loads(r.value)["ref"])
    return refs


def counts(letters: list[DeadLetter]) -> list[dict[str, Any]]:
    by = Counter((dl.header(H_TOPIC), dl.header(H_KIND)) for dl in letters)
    return [{"source_topic": t, "kind": k, "count": n} for (t, k), n in sorted(by.items(), key=str)]


def select(
    letters: list[DeadLetter],
    *,
    ref: str | None = None,
    kind: str | None = None,
    event_type: str | None = None,
) -> list[DeadLetter]:
    chosen = letters
    if ref:
        chosen = [dl for dl in chosen if dl.ref == ref]
    if kind:
        chosen = [dl for dl in chosen if dl.header(H_KIND) == kind]
    if event_type:
        chosen = [dl for dl in chosen if dl.event_type == event_type]
    return chosen


async def redrive(
    settings: Settings, letters: list[DeadLetter], *, operator: str
) -> tuple[list[str], list[str]]:
    """Re-publish each dead letter to its source topic once; returns (redriven, skipped) refs."""
    done = await redriven_refs(settings)
    redriven, skipped = [], []
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for dl in letters:
            source = dl.header(H_TOPIC)
            if dl.ref in done or not source:
                skipped.append(dl.ref)
                continue
            original = [(k, v) for k, v in dl.headers if not k.startswith("fulfil-dlq-")]
            await (
                await producer.send(
                    source,
                    dl.value,
                    key=dl.key,
                    headers=original + [(H_REDRIVEN_FROM, dl.ref.encode())],
                )
            )
            record = {
                "ref": dl.ref,
                "source_topic": source,
                "event_id": dl.event_id,
                "operator": operator,
            }
            await (
                await producer.send(
                    dl.dlq_topic + REDRIVEN_SUFFIX, orjson.dumps(record), key=dl.ref.encode()
                )
            )
            done.add(dl.ref)
            redriven.append(dl.ref)
    finally:
        await producer.stop()
    return redriven, skipped
