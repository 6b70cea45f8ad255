"""The CLI fits a terminal, and `fulfil status` / `fulfil topics list` tell where
everything is: run for real against a projected read model, a notifier outbox and
dead letters, on the embedded broker and PostgreSQL.

At COLUMNS=80 every table command shows each column its --help lists (without
--wide), no value cut and no header broken inside a word; --wide adds the rest.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
import typer
from aiokafka import TopicPartition
from typer.testing import CliRunner

from fulfil import embedded
from fulfil.cli import _register, app
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS
from services.allocator.entrypoints.core import CORE_GROUP
from services.allocator.entrypoints.router import ROUTER_GROUP
from tests.fulfil.helpers import fulfil
from tests.kafka_helpers import publish, read_topic, wait_for
from tests.services.notifier.conftest import notifier_settings_for
from tests.services.notifier.helpers import outbox, running_notifier
from tests.services.projector.entrypoints.test_cli import AS_OF, worked_example
from tests.services.projector.helpers import failed, publish_scenario, running, wait_caught_up

# (arguments, the JSON rows whose ids the table must show in full)
TABLE_COMMANDS: list[tuple[list[str], str]] = [
    (["backlog"], "sku"),
    (["order", "o-part"], "sku"),
    (["inbound", "--as-of", AS_OF], "inbound_id"),
    (["aging", "--as-of", AS_OF], "sku"),
    (["deposits"], "order_id"),
    (["reorder"], "sku"),
    (["notifications"], "order_id"),
    (["dlq", "list"], "ref"),
    (["status"], "service"),
    (["topics", "list"], "base"),
]


@pytest.fixture
async def live(settings: Settings, test_database: str, env_for_subprocess) -> dict[str, Any]:
    """The worked example projected; the notifier ran with a mail server that is not
    there (one attempt each: failed messages); a clock tick on every command partition;
    garbage on allocations.v1 the notifier dead-letters."""
    pg = settings.model_copy(update={"database_url": test_database})
    env = {**env_for_subprocess(pg), "COLUMNS": "80"}
    env.pop("FULFIL_DEBUG", None)
    assert fulfil("topics", "create", env=env).returncode == 0
    inputs, outputs = worked_example()
    await publish_scenario(pg, inputs, outputs)
    await publish(pg, [b'{"type": "Backordered", "broken"'], topic=ALLOCATIONS)
    ticked = fulfil("clock", "tick", "--now", "2026-11-20T08:00:00Z", "--json", env=env)
    assert ticked.returncode == 0, ticked.stderr
    assert orjson.loads(ticked.stdout) == {
        "now": "2026-11-20T08:00:00+00:00",
        "partitions": pg.fulfil_partitions,
    }
    async with running(pg) as projector:
        await wait_caught_up(pg, check=lambda: failed(projector))
    notifier = notifier_settings_for(
        pg,
        test_database,
        smtp_url=f"smtp://127.0.0.1:{embedded.free_port()}",  # nobody listens
        fulfil_notifier_max_attempts=1,
    )
    async with running_notifier(notifier):
        await wait_for(
            lambda: _all_failed(notifier), timeout=60, what="the messages to fail their attempt"
        )
    return {"settings": pg, "env": env}


async def _all_failed(notifier: Any) -> bool:
    rows = await outbox(notifier)
    return bool(rows) and all(r["status"] == "failed" for r in rows)


def _app() -> typer.Typer:
    _register()
    return app


async def _run(env: dict[str, str], *args: str) -> str:
    # asyncio.run inside the commands needs a thread without a running loop
    result = await asyncio.to_thread(CliRunner(env=env).invoke, _app(), list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.stdout


def _listed_columns(help_text: str) -> tuple[list[str], list[str]]:
    """The columns a command's --help names: (without --wide, added by --wide)."""
    text = " ".join(line.strip(" │") for line in help_text.splitlines())
    shown: list[str] = []
    added: list[str] = []
    for default, wide in re.findall(r"Columns: (.*?)\.(?: --wide adds: (.*?)\.)?(?= |$)", text):
        shown += default.split(", ")
        added += wide.split(", ") if wide else []
    return shown, added


def _header_tokens(output: str, words: set[str]) -> list[str]:
    """The words of every table's header: the lines above each rule, up to the title
    (the first line holding a word no column has)."""
    lines = output.splitlines()
    tokens: list[str] = []
    for i, line in enumerate(lines):
        if not line.strip() or set(line.strip()) != {"─"}:
            continue
        j = i - 1
        while j >= 0 and lines[j].split() and set(lines[j].split()) <= words:
            tokens += lines[j].split()
            j -= 1
    return tokens


def _json_ids(document: Any, key: str) -> list[str]:
    found: list[str] = []
    if isinstance(document, dict):
        for k, v in document.items():
            if k == key and isinstance(v, str):
                found.append(v)
            found += _json_ids(v, key)
    elif isinstance(document, list):
        for item in document:
            found += _json_ids(item, key)
    return found


async def test_every_table_fits_80_columns_and_wide_adds_the_rest(live) -> None:
    env = live["env"]
    for args, id_key in TABLE_COMMANDS:
        shown, added = _listed_columns(await _run(env, *args, "--help"))
        assert shown, f"`fulfil {' '.join(args)} --help` lists no columns"
        words = {w for label in shown + added for w in label.split()}
        narrow = await _run(env, *args)
        headers = _header_tokens(narrow, words)
        for label in shown:  # not dropped, not broken inside a word
            assert all(w in headers for w in label.split()), (args, label, narrow)
        assert not set(headers) - words, (args, "a header broken inside a word", narrow)
        too_long = [line for line in narrow.splitlines() if len(line.rstrip()) > 80]
        assert not too_long, (args, too_long)
        assert "…" not in narrow, (args, narrow)
        document = orjson.loads(await _run(env, *args, "--json"))
        ids = _json_ids(document, id_key)
        assert ids, (args, id_key)
        tokens = narrow.split()
        prefix = live["settings"].fulfil_topic_prefix
        for value in ids:  # in full (status and topics list show topics without the prefix)
            assert value in tokens or value.removeprefix(prefix) in tokens, (args, value, narrow)
        if added:
            assert "--wide shows" in narrow, args
            wide = await _run(env, *args, "--wide")
            headers = _header_tokens(wide, words)
            for label in shown + added:
                assert all(w in headers for w in label.split()), (args, label, wide)


async def test_times_carry_their_zone_and_aging_reads_in_days(live) -> None:
    env = live["env"]
    backlog = await _run(env, "backlog", "--wide")
    assert "2026-11-07 09:00 UTC" in backlog  # oldest backorder
    aging = await _run(env, "aging", "--as-of", AS_OF)
    assert "as of 2026-11-20 12:00 UTC" in aging
    bars = {line.split()[0] + line.split()[1]: line for line in aging.splitlines()[1:5]}
    assert set(bars) == {"0–7d", "8–14d", "15–30d", ">30"}
    # o-wait waits 13 days (10 units), o-part 3 days (3 units): the longest bar is 8–14 d.
    assert bars["8–14d"].count("█") > bars["0–7d"].count("█") > 0
    assert bars["8–14d"].split()[-3:] == ["10", "77", "%"]
    notifications = await _run(env, "notifications", "--wide")
    assert "UTC" in notifications and "SMTP" in notifications  # due time; the last error


async def test_status_reports_lag_dead_letters_outbox_and_progress(live) -> None:
    settings, env = live["settings"], live["env"]
    t = settings.topic
    # The router has handled one record of WH1's orders.v1 partition, the core every tick
    # but partition 0's: committed offsets, as the services commit them.
    inputs_end = {
        (t(topic), p): len(records)
        for topic in (ORDERS, INVENTORY)
        for p, records in (await read_topic(settings, topic)).items()
    }
    orders_p = max((k for k in inputs_end if k[0] == t(ORDERS)), key=inputs_end.__getitem__)
    commands_p0 = TopicPartition(t(COMMANDS), 0)
    await _commit(settings, t(ROUTER_GROUP), {TopicPartition(*orders_p): 1})
    await _commit(
        settings,
        t(CORE_GROUP),
        {TopicPartition(t(COMMANDS), p): 1 for p in range(1, settings.fulfil_partitions)},
    )

    done = fulfil("status", "--json", env=env)  # the console script, as an operator runs it
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)
    by = {c["service"]: c for c in doc["consumers"]}
    assert list(by) == ["allocator-router", "allocator-core", "projector", "notifier"]
    router = {(p["topic"], p["partition"]): p for p in by["allocator-router"]["partitions"]}
    assert set(router) == set(inputs_end)
    for key, end in inputs_end.items():
        position = 1 if key == orders_p else None
        assert router[key] == {
            "topic": key[0],
            "partition": key[1],
            "position": position,
            "end": end,
            "lag": end - (position or 0),
        }
    assert by["allocator-router"]["lag"] == sum(inputs_end.values()) - 1
    core = {p["partition"]: p for p in by["allocator-core"]["partitions"]}
    assert core[0] == {
        "topic": commands_p0.topic,
        "partition": 0,
        "position": None,
        "end": 1,
        "lag": 1,
    }
    assert [core[p]["lag"] for p in range(1, settings.fulfil_partitions)] == [0] * (
        settings.fulfil_partitions - 1
    )
    assert by["allocator-core"]["lag"] == 1 and by["allocator-core"]["positions_in"] == "kafka"
    for service in ("projector", "notifier"):  # caught up, positions from PostgreSQL
        assert by[service]["lag"] == 0 and by[service]["positions_in"] == "postgresql"
        assert by[service]["last_progress_at"] is not None and by[service]["note"] is None
    assert {p["topic"] for p in by["projector"]["partitions"]} == {
        t(ALLOCATIONS),
        t(ORDERS),
        t(INVENTORY),
    }
    assert by["allocator-core"]["last_progress_at"] is not None  # the outputs' newest record
    assert by["allocator-router"]["last_progress_at"] is not None  # the ticks

    letters = {d["topic"]: d for d in doc["dead_letters"]}
    for topic, entry in letters.items():
        base = topic.removeprefix(settings.fulfil_topic_prefix)
        on_topic = sum(len(r) for r in (await read_topic(settings, base)).values())
        assert entry["dead_letters"] == on_topic and entry["redriven"] == 0, topic
    assert letters[t("fulfil-notifier.dlq")]["dead_letters"] == 1  # the broken record

    rows = await outbox(notifier_settings_for(settings, settings.database_url or ""))
    assert rows and doc["outbox"]["failed"] == len(rows) and doc["outbox"]["pending"] == 0
    assert doc["outbox"]["channels"] == {"email": {"failed": len(rows)}}

    text = await _run(env, "status")
    assert "allocator-router" in text and f"{orders_p[1]}:" in text  # that partition is behind
    assert f"(prefix {settings.fulfil_topic_prefix!r})" in text

    listed = orjson.loads(fulfil("topics", "list", "--json", env=env).stdout)
    by_topic = {item["topic"]: item for item in listed}
    assert set(by_topic) == set(kafka.all_topics(settings))
    allocations = by_topic[t(ALLOCATIONS)]
    on_topic = await read_topic(settings, ALLOCATIONS)
    assert allocations["partitions"] == settings.fulfil_partitions and allocations["exists"]
    assert allocations["end_offsets"] == [len(on_topic[p]) for p in sorted(on_topic)]
    assert allocations["records"] == sum(len(r) for r in on_topic.values())
    assert allocations["start_offsets"] == [0] * settings.fulfil_partitions


async def test_status_before_any_service_ran_says_so(settings, test_database, env_for_subprocess):
    pg = settings.model_copy(update={"database_url": test_database})
    env = env_for_subprocess(pg)
    await kafka.create_topics(pg)
    doc = orjson.loads(fulfil("status", "--json", env=env).stdout)
    assert {c["service"]: c["lag"] for c in doc["consumers"]} == dict.fromkeys(
        ("allocator-router", "allocator-core", "projector", "notifier"), 0
    )
    assert "not migrated" in doc["consumers"][2]["note"] and doc["outbox"] is None
    text = fulfil("status", env={**env, "COLUMNS": "80"})
    assert text.returncode == 0 and "projector: not migrated" in text.stdout
    missing = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    refused = fulfil("status", env=missing)
    assert refused.returncode == 2 and "DATABASE_URL" in refused.stderr


async def _commit(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = kafka.consumer(settings, group_id=group)
    consumer.assign(list(offsets))
    await consumer.start()
    try:
        await consumer.commit(offsets)
    finally:
        await consumer.stop()
