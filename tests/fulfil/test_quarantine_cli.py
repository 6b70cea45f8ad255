"""The operator tools know the consumers' quarantine topics (issue 12, defect #3).

The projector and the notifier put a record they cannot apply on `<group>.dlq`
(`fulfil-projector.dlq`, `fulfil-notifier.dlq`, behind the topic prefix).
`fulfil topics create` creates them with their redrive ledgers, `fulfil dlq
list|show` shows what is on them, and `fulfil dlq redrive` sends a record back to
the topic the quarantine header names, once. All through the real CLI against
the real broker; the projector's letter comes from a real projector run.
"""

from __future__ import annotations

import orjson

from fulfil.dlq_tool import H_REDRIVEN_FROM
from fulfil_platform import dead_letter_writer, kafka
from schemas.registry import ALLOCATIONS
from services.notifier.entrypoints.app import quarantine_topic
from services.projector.service_layer.projector import GROUP_ID, dead_letter_topic
from tests.fulfil.helpers import fulfil
from tests.kafka_helpers import publish, read_topic
from tests.services.projector.helpers import (
    failed,
    publish_scenario,
    running,
    scenario,
    wait_caught_up,
)

PROJECTOR_DLQ = "fulfil-projector.dlq"
NOTIFIER_DLQ = "fulfil-notifier.dlq"


def test_the_quarantine_topics_are_the_services_own(settings) -> None:
    assert dead_letter_topic(settings.topic(GROUP_ID)) == settings.topic(PROJECTOR_DLQ)
    assert quarantine_topic(settings) == settings.topic(NOTIFIER_DLQ)


def test_topics_create_makes_the_quarantine_topics_and_their_ledgers(
    settings, env_for_subprocess
) -> None:
    result = fulfil("topics", "create", "--json", env=env_for_subprocess(settings))
    assert result.returncode == 0, result.stderr
    created = set(orjson.loads(result.stdout)["created"])
    for base in (PROJECTOR_DLQ, NOTIFIER_DLQ):
        assert settings.topic(base) in created
        assert settings.topic(base + dead_letter_writer.REDRIVEN_SUFFIX) in created


async def _quarantined_by_the_projector(settings) -> bytes:
    """One allocation event the read model cannot hold (a NUL in the customer's name),
    quarantined by a real projector run; returns its bytes."""
    inputs, outputs = scenario(120, seed=21)
    await publish_scenario(settings, inputs, outputs)
    doc = orjson.loads(
        orjson.dumps(next(o for o in outputs if o.type == "Backordered").model_dump(mode="json"))
    )
    doc["id"] = doc["data"]["order_id"] = "poison-nul-name"
    doc["data"]["customer"]["name"] = "Ada\x00Lovelace"
    poison = orjson.dumps(doc)
    await publish(settings, [poison], topic=ALLOCATIONS)
    async with running(settings) as projector:
        await wait_caught_up(settings, check=lambda: failed(projector))
        assert projector.quarantined == 1
    return poison


async def _quarantined_by_the_notifier(settings) -> bytes:
    """A letter as the notifier writes one (the same header function), on its topic."""
    value = b'{"type": "OrderAllocated", "id": "notifier-poison"'
    headers = dead_letter_writer.dead_letter_headers(
        reason="bad_json: unexpected end of data", kind="unparseable", topic=settings.topic(ALLOCATIONS),
        partition=1, offset=7, stage="notifier", original=[("fulfil-event-type", b"OrderAllocated")],
    )  # fmt: skip
    producer = kafka.producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(NOTIFIER_DLQ), value, key=b"wh-1", headers=headers
        )
    finally:
        await producer.stop()
    return value


async def test_dlq_list_show_and_redrive_cover_the_quarantine_topics(
    settings, env_for_subprocess, test_database
) -> None:
    settings = settings.model_copy(update={"database_url": test_database})
    env = env_for_subprocess(settings)
    assert fulfil("topics", "create", env=env).returncode == 0
    projector_poison = await _quarantined_by_the_projector(settings)
    notifier_poison = await _quarantined_by_the_notifier(settings)

    listed = fulfil("dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    listing = orjson.loads(listed.stdout)
    by_topic = {item["ref"].rsplit(":", 2)[0]: item for item in listing["dead_letters"]}
    assert set(by_topic) == {settings.topic(PROJECTOR_DLQ), settings.topic(NOTIFIER_DLQ)}
    projector_letter, notifier_letter = (
        by_topic[settings.topic(PROJECTOR_DLQ)],
        by_topic[settings.topic(NOTIFIER_DLQ)],
    )
    assert projector_letter["source_topic"] == settings.topic(ALLOCATIONS)
    assert (
        projector_letter["kind"] == "unstorable"
        and projector_letter["event_id"] == "poison-nul-name"
    )
    assert (
        notifier_letter["source_topic"] == settings.topic(ALLOCATIONS)
        and notifier_letter["kind"] == "unparseable"
    )
    assert not projector_letter["redriven"] and not notifier_letter["redriven"]
    assert sorted(listing["counts"], key=str) == sorted(
        [{"source_topic": settings.topic(ALLOCATIONS), "kind": "unstorable", "count": 1},
         {"source_topic": settings.topic(ALLOCATIONS), "kind": "unparseable", "count": 1}], key=str,
    )  # fmt: skip
    text = fulfil("dlq", "list", env=env)
    assert text.returncode == 0 and "unstorable" in text.stdout and "unparseable" in text.stdout

    shown = fulfil("dlq", "show", projector_letter["ref"], "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    document = orjson.loads(shown.stdout)
    assert document["original"].encode() == projector_poison
    assert document["headers"][dead_letter_writer.H_STAGE] == "projector"

    for letter, value in ((projector_letter, projector_poison), (notifier_letter, notifier_poison)):
        first = fulfil("dlq", "redrive", letter["ref"], "--json", env=env)
        assert first.returncode == 0, first.stderr
        assert orjson.loads(first.stdout) == {
            "redriven": [letter["ref"]],
            "skipped_already_redriven": [],
        }
        again = fulfil("dlq", "redrive", letter["ref"], "--json", env=env)
        assert orjson.loads(again.stdout) == {
            "redriven": [],
            "skipped_already_redriven": [letter["ref"]],
        }
        # Back on the topic it came from, the same bytes, once, saying where it was.
        back = [
            r for records in (await read_topic(settings, ALLOCATIONS)).values() for r in records
            if dict(r.headers or ()).get(H_REDRIVEN_FROM) == letter["ref"].encode()
        ]  # fmt: skip
        assert [r.value for r in back] == [value]
        assert not any(k.startswith("fulfil-dlq-") for k, _ in back[0].headers)
    relisted = orjson.loads(fulfil("dlq", "list", "--json", env=env).stdout)
    assert all(item["redriven"] for item in relisted["dead_letters"])
