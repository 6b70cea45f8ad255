"""SASL/TLS settings reach every Kafka client; PostgreSQL TLS rides on DATABASE_URL; secrets stay out of logs."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from faststream.security import SASLPlaintext, SASLScram512

from fulfil_platform import kafka
from fulfil_platform.config import ConfigError
from fulfil_platform.faststream_broker import security
from tests.fulfil_platform.helpers import settings_from_env
from tests.kafka_helpers import wait_for

SASL_PASSWORD = "kafka-pw-7fQ2xL9"
DB_PASSWORD = "db-pw-Zr81kq"
WEBHOOK_SECRET = "hook-secret-Wm4pT0"
SMTP_PASSWORD = "smtp-pw-Yb3nC5"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA and a client certificate made with the openssl CLI."""
    where = tmp_path_factory.mktemp("tls")
    ca, key = where / "ca.pem", where / "client.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=fulfil-test-ca",
            "-keyout",
            str(key),
            "-out",
            str(ca),
        ],
        check=True,
        capture_output=True,
    )
    return {"ca": ca, "cert": ca, "key": key}


async def test_scram_sha_512_over_tls_reaches_every_kafka_client(monkeypatch, tls_files) -> None:
    settings = settings_from_env(
        monkeypatch,
        KAFKA_BOOTSTRAP_SERVERS="kafka-0.example:9093,kafka-1.example:9093",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="fulfil",
        KAFKA_SASL_PASSWORD=SASL_PASSWORD,
        KAFKA_SSL_CAFILE=str(tls_files["ca"]),
        KAFKA_SSL_CERTFILE=str(tls_files["cert"]),
        KAFKA_SSL_KEYFILE=str(tls_files["key"]),
    )
    options = settings.kafka_client_options()
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "kafka-0.example:9093,kafka-1.example:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "fulfil",
        "sasl_plain_password": SASL_PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(
        dict(x[0] for x in ca["subject"]).get("commonName") == "fulfil-test-ca"
        for ca in context.get_ca_certs()
    )

    # The clients the services build (constructed, not started: no broker speaks SASL here).
    for client in (kafka.producer(settings), kafka.consumer(settings, "t", group_id="g")):
        inner = client.client if hasattr(client, "client") else client._client
        await client.stop()
        assert inner._security_protocol == "SASL_SSL"
        assert inner._sasl_mechanism == "SCRAM-SHA-512"
        assert inner._sasl_plain_username == "fulfil"
        assert inner._sasl_plain_password == SASL_PASSWORD
        assert isinstance(inner._ssl_context, ssl.SSLContext)
    faststream_security = security(settings)
    assert isinstance(faststream_security, SASLScram512)
    assert faststream_security.use_ssl and faststream_security.ssl_context is not None

    # The admin client used to create topics gets the same options.
    seen: dict = {}

    class Admin:
        def __init__(self, **kwargs):
            seen.update(kwargs)
            raise RuntimeError("stop here")

    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", Admin)
    with pytest.raises(RuntimeError, match="stop here"):
        await kafka.create_topics(settings)
    assert seen["security_protocol"] == "SASL_SSL" and seen["sasl_plain_password"] == SASL_PASSWORD


def test_sasl_plain_without_tls(monkeypatch) -> None:
    settings = settings_from_env(
        monkeypatch,
        KAFKA_BOOTSTRAP_SERVERS="kafka:9092",
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="PLAIN",
        KAFKA_SASL_USERNAME="fulfil",
        KAFKA_SASL_PASSWORD=SASL_PASSWORD,
    )
    options = settings.kafka_client_options()
    assert "ssl_context" not in options
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("PLAIN", "fulfil")
    assert isinstance(security(settings), SASLPlaintext)
    assert not security(settings).use_ssl


def test_tls_without_sasl(monkeypatch, tls_files) -> None:
    settings = settings_from_env(
        monkeypatch,
        KAFKA_BOOTSTRAP_SERVERS="kafka:9093",
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CAFILE=str(tls_files["ca"]),
    )
    options = settings.kafka_client_options()
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_sasl_needs_a_mechanism_and_a_username(monkeypatch) -> None:
    settings = settings_from_env(
        monkeypatch, KAFKA_BOOTSTRAP_SERVERS="kafka:9092", KAFKA_SECURITY_PROTOCOL="SASL_SSL"
    )
    with pytest.raises(
        ConfigError, match="KAFKA_SASL_MECHANISM and KAFKA_SASL_USERNAME are required"
    ):
        settings.kafka_client_options()


def test_settings_as_logged_mask_secrets_and_url_passwords(monkeypatch) -> None:
    settings = settings_from_env(
        monkeypatch,
        KAFKA_BOOTSTRAP_SERVERS="kafka:9092",
        KAFKA_SASL_PASSWORD=SASL_PASSWORD,
        DATABASE_URL=f"postgresql://fulfil:{DB_PASSWORD}@db:5432/fulfil?sslmode=verify-full&sslrootcert=/ca.pem",
        WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    shown = settings.loggable()
    text = repr(shown)
    for secret in (SASL_PASSWORD, DB_PASSWORD, WEBHOOK_SECRET):
        assert secret not in text
    assert (
        shown["database_url"]
        == "postgresql://fulfil:***@db:5432/fulfil?sslmode=verify-full&sslrootcert=/ca.pem"
    )


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fulfil", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_security_settings_are_one_line_and_exit_2(settings, env_for_subprocess) -> None:
    env = env_for_subprocess(settings)
    result = _cli({**env, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "allocator")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "KAFKA_SASL_MECHANISM" in result.stderr
    result = _cli({**env, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "allocator", "--stage", "core")
    assert result.returncode == 2, result.stderr
    assert "KAFKA_SASL_USERNAME" in result.stderr and "Traceback" not in result.stderr


def test_postgres_tls_parameters_in_database_url_reach_the_driver(
    settings, env_for_subprocess
) -> None:
    """sslmode in DATABASE_URL is honoured: the test server has no TLS, so `require` must fail, `disable` pass."""
    env = env_for_subprocess(settings)
    joiner = "&" if "?" in settings.database_url else "?"
    refused = _cli(
        {**env, "DATABASE_URL": settings.database_url + joiner + "sslmode=require"}, "db", "migrate"
    )
    assert refused.returncode != 0
    assert "ssl" in (refused.stdout + refused.stderr).lower()
    accepted = _cli(
        {**env, "DATABASE_URL": settings.database_url + joiner + "sslmode=disable"}, "db", "migrate"
    )
    assert accepted.returncode == 0, accepted.stderr


async def test_a_running_service_never_logs_its_secrets(settings, env_for_subprocess) -> None:
    env = {
        **env_for_subprocess(settings),
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD,  # set but unused on a PLAINTEXT listener: still must not leak
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SMTP_URL": f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:2525",
        "DATABASE_URL": f"postgresql://fulfil:{DB_PASSWORD}@127.0.0.1:1/fulfil",
        "FULFIL_LOG_LEVEL": "DEBUG",
        "FULFIL_LOG_FORMAT": "console",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "fulfil", "allocator"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[bytes] = []

    async def read() -> None:
        while chunk := await asyncio.to_thread(process.stdout.readline):
            lines.append(chunk)

    reader = asyncio.create_task(read())
    try:

        async def started() -> bool:
            if process.poll() is not None:
                raise AssertionError(b"".join(lines).decode()[-3000:])
            return any(b"allocator started" in line for line in lines)

        await wait_for(started, timeout=60, what="allocator started")
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
        await reader
    output = b"".join(lines).decode()
    assert code == 0, output[-3000:]
    assert "allocator configuration" in output
    assert "fulfil:***@127.0.0.1:1/fulfil" in output, (
        "the database URL is logged, with its password masked"
    )
    for secret in (SASL_PASSWORD, DB_PASSWORD, WEBHOOK_SECRET, SMTP_PASSWORD):
        assert secret not in output


def test_an_invalid_url_setting_is_reported_without_its_credentials() -> None:
    """Every service loads these settings: a URL its pattern refuses (here: a password
    with an unencoded '/' and a space) must not be echoed with the password."""
    from fulfil_platform.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as info:
        load_settings(smtp_url="smtp://mailer:top/se cret@mail.example:99999")
    message = str(info.value)
    assert "SMTP_URL" in message and "mail.example" in message
    assert "top" not in message and "se cret" not in message and "\n" not in message


def test_log_masking_covers_passwords_with_unencoded_characters() -> None:
    from fulfil_platform.config import mask_url_password

    masked = mask_url_password("connecting to postgresql://app:pa/ss@db.internal:5432/fulfil now")
    assert masked == "connecting to postgresql://app:***@db.internal:5432/fulfil now"


def test_a_database_url_that_is_not_postgresql_is_a_configuration_error(
    settings, env_for_subprocess
) -> None:
    """Issue 17: a bad DATABASE_URL exited 1 with the driver's exception class; it is a
    configuration error (exit 2, one line naming the setting), without the password."""
    env = env_for_subprocess(settings)
    for bad in ("notaurl", "mysql://shop:s3cret@db.example/shop"):
        result = _cli({**env, "DATABASE_URL": bad}, "backlog")
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0 and "DATABASE_URL" in result.stderr
        assert "s3cret" not in result.stderr and "Error:" not in result.stderr
