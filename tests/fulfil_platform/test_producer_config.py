"""The idempotent producer is a setting, on by default (issue 12, defect #8).

On Apache Kafka the idempotent producer makes the broker drop a batch resent after a
lost response; the embedded broker (Tansu) has no InitProducerId, so `fulfil dev env`
turns it off. Every producer the services build follows the setting. Clients are
constructed, not started: no broker is involved.
"""

from __future__ import annotations

import pytest

from fulfil import embedded
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.faststream_broker import broker as faststream_broker
from tests.fulfil_platform.helpers import settings_from_env


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    return settings_from_env(
        monkeypatch, **{"KAFKA_BOOTSTRAP_SERVERS": "kafka-0.example:9092", **env}
    )


def test_idempotence_is_on_by_default(monkeypatch) -> None:
    assert _settings(monkeypatch).kafka_enable_idempotence is True
    assert (
        _settings(monkeypatch, KAFKA_ENABLE_IDEMPOTENCE="false").kafka_enable_idempotence is False
    )


def test_the_embedded_runtime_turns_it_off() -> None:
    # What `fulfil dev env` exports (Runtime.env) and the demo's services inherit.
    assert embedded.LOCAL_KAFKA_TUNING["KAFKA_ENABLE_IDEMPOTENCE"] == "false"


@pytest.mark.parametrize("value, idempotent", [(None, True), ("true", True), ("false", False)])
async def test_built_producers_follow_the_setting(
    monkeypatch, value: str | None, idempotent: bool
) -> None:
    settings = _settings(monkeypatch, **({"KAFKA_ENABLE_IDEMPOTENCE": value} if value else {}))

    producer = kafka.producer(settings)
    try:
        # aiokafka keeps a transaction manager (producer id + sequence numbers) exactly
        # when the producer is idempotent.
        assert (producer._txn_manager is not None) is idempotent
    finally:
        await producer.stop()

    # The FastStream broker publishes the notifier's dead letters: the same setting.
    options = faststream_broker(settings)._connection_kwargs
    assert options["enable_idempotence"] is idempotent
    assert options["acks"] == "all"
