"""SMTP with STARTTLS, implicit TLS and AUTH against a real aiosmtpd on loopback.

Certificates are made at test time with the openssl CLI: a CA and a server
certificate for IP 127.0.0.1 signed by it, trusted through SMTP_SSL_CAFILE.
The servers record, per mail, the user the session authenticated as and its
TLS version, and every AUTH attempt with its outcome.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from fulfil_platform import kafka
from fulfil_platform.config import ConfigError
from services.notifier.adapters.channels import DeliveryError
from services.notifier.adapters.outbox import Claimed
from services.notifier.adapters.smtp import EmailChannel
from services.notifier.config import NotifierSettings, load_notifier_settings
from tests.builders import allocations as b
from tests.kafka_helpers import publish, wait_for
from tests.services.notifier.conftest import SmtpServer, notifier_settings_for
from tests.services.notifier.helpers import assert_no_pii, outbox, running_notifier

USER = "orders@shop.example"  # an address as the user name: it must be percent-encoded in a URL
PASSWORD = "pw-K7q@s/x:9 %z"  # every character that needs percent-encoding in a URL's userinfo
WRONG_PASSWORD = "pw-wrong-Vx31"


# ---------------------------------------------------------------- certificates


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (subjectAltName IP) it signed."""
    where = tmp_path_factory.mktemp("smtp-tls")
    ca, ca_key = where / "ca.pem", where / "ca.key"
    cert, key, csr, ext = (
        where / "server.pem",
        where / "server.key",
        where / "server.csr",
        where / "server.ext",
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-days",
        "2",
        "-subj",
        "/CN=fulfil-notifier-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        ca_key,
        "-out",
        ca,
    )
    _openssl("req", "-new", *ec, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr)
    ext.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext,
        "-out",
        cert,
    )
    return {"ca": ca, "cert": cert, "key": key}


def _server_context(tls_files: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    return context


# ---------------------------------------------------------------- servers


@dataclass(frozen=True)
class Attempt:
    mechanism: str
    login: str
    ok: bool


class Authenticator:
    """aiosmtpd authenticator with one account; remembers every attempt."""

    def __init__(self, user: str, password: str):
        self.user, self.password = user, password
        self.lock = threading.Lock()
        self._attempts: list[Attempt] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = (login, password) == (self.user, self.password)
        with self.lock:
            self._attempts.append(Attempt(mechanism, login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    @property
    def attempts(self) -> list[Attempt]:
        with self.lock:
            return list(self._attempts)


@dataclass
class SecureSmtp:
    server: SmtpServer
    auth: Authenticator

    @property
    def mails(self):
        return self.server.mails


def _started(request: pytest.FixtureRequest, **options: Any) -> SmtpServer:
    server = SmtpServer(**options)
    request.addfinalizer(server.stop)  # registered first: stopped even if start fails half-way
    server.start()
    return server


@pytest.fixture
def starttls_smtp(request, tls_files) -> SecureSmtp:
    """Plain port that refuses mail before STARTTLS and AUTH before TLS, and requires AUTH."""
    auth = Authenticator(USER, PASSWORD)
    server = _started(
        request,
        tls_context=_server_context(tls_files),
        require_starttls=True,
        authenticator=auth,
        auth_required=True,
        auth_require_tls=True,
    )
    return SecureSmtp(server, auth)


@pytest.fixture
def smtps_smtp(request, tls_files) -> SecureSmtp:
    """Implicit TLS (smtps://) requiring AUTH. aiosmtpd's auth_require_tls only knows
    STARTTLS, so it is off here; the connection is TLS from the first byte anyway."""
    auth = Authenticator(USER, PASSWORD)
    server = _started(
        request,
        ssl_context=_server_context(tls_files),
        authenticator=auth,
        auth_required=True,
        auth_require_tls=False,
    )
    return SecureSmtp(server, auth)


def _url(server: SmtpServer, user: str | None = None, password: str | None = None) -> str:
    scheme, _, where = server.url.partition("://")
    if user is None:
        return server.url
    userinfo = quote(user, safe="") + (
        f":{quote(password, safe='')}" if password is not None else ""
    )
    return f"{scheme}://{userinfo}@{where}"


# ---------------------------------------------------------------- channel level (no broker)


def _channel_settings(**values: Any) -> NotifierSettings:
    defaults: dict[str, Any] = {
        "smtp_timeout_seconds": 5.0,
        "smtp_username": None,
        "smtp_password": None,
    }
    return load_notifier_settings(**{**defaults, **values})


def _row(n: int = 1) -> Claimed:
    return Claimed(
        id=n,
        event_id=f"evt-{n}",
        channel="email",
        kind="backordered",
        event_type="Backordered",
        order_id=f"ord-{n}",
        message_id=f"<evt-{n}.email@fulfil>",
        recipient=f"customer{n}@shop-customers.example",
        subject="Your order",
        body_text="Hello",
        body_html=None,
        body_json=None,
        attempts=0,
        created_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_smtps_with_credentials_in_the_url_is_implicit_tls_and_authenticated(
    smtps_smtp, tls_files
) -> None:
    url = _url(smtps_smtp.server, USER, PASSWORD)
    assert url.startswith("smtps://")
    channel = EmailChannel(_channel_settings(smtp_url=url, smtp_ssl_cafile=tls_files["ca"]))
    assert channel.implicit_tls and (channel.username, channel.password) == (USER, PASSWORD)

    await channel.send(_row())

    (mail,) = smtps_smtp.mails
    assert mail.message_id == "<evt-1.email@fulfil>"
    assert mail.auth_login == USER and mail.tls_version in ("TLSv1.2", "TLSv1.3")
    assert [a.ok for a in smtps_smtp.auth.attempts] == [True]


async def test_explicit_username_and_password_win_over_the_url(starttls_smtp, tls_files) -> None:
    # The URL's credentials are wrong: only the explicit ones can log in.
    settings = _channel_settings(
        smtp_url=_url(starttls_smtp.server, "someone-else", WRONG_PASSWORD),
        smtp_starttls=True,
        smtp_username=USER,
        smtp_password=PASSWORD,
        smtp_ssl_cafile=tls_files["ca"],
    )
    await EmailChannel(settings).send(_row())
    (mail,) = starttls_smtp.mails
    assert mail.auth_login == USER and mail.tls_version is not None
    assert [(a.login, a.ok) for a in starttls_smtp.auth.attempts] == [(USER, True)]


async def test_smtp_password_completes_a_url_that_names_only_the_user(
    starttls_smtp, tls_files
) -> None:
    settings = _channel_settings(
        smtp_url=_url(starttls_smtp.server, USER),
        smtp_starttls=True,
        smtp_password=PASSWORD,
        smtp_ssl_cafile=tls_files["ca"],
    )
    await EmailChannel(settings).send(_row())
    (mail,) = starttls_smtp.mails
    assert mail.auth_login == USER


async def test_an_untrusted_server_certificate_is_a_retryable_failure_and_no_password_is_sent(
    starttls_smtp,
) -> None:
    # No SMTP_SSL_CAFILE: the system's trust store does not know the test CA.
    settings = _channel_settings(
        smtp_url=_url(starttls_smtp.server, USER, PASSWORD), smtp_starttls=True
    )
    with pytest.raises(DeliveryError) as failure:
        await EmailChannel(settings).send(_row())
    assert not failure.value.permanent
    assert failure.value.summary.startswith("SMTP unavailable")
    assert starttls_smtp.mails == [] and starttls_smtp.auth.attempts == []


async def test_without_starttls_the_server_refuses_auth_and_nothing_is_sent(
    starttls_smtp, tls_files
) -> None:
    # SMTP_STARTTLS left off: aiosmtpd offers no AUTH on a plain connection.
    settings = _channel_settings(
        smtp_url=_url(starttls_smtp.server, USER, PASSWORD), smtp_ssl_cafile=tls_files["ca"]
    )
    with pytest.raises(DeliveryError) as failure:
        await EmailChannel(settings).send(_row())
    assert not failure.value.permanent
    assert starttls_smtp.mails == [] and starttls_smtp.auth.attempts == []


# ---------------------------------------------------------------- settings


def test_credentials_in_the_url_are_percent_decoded_and_masked_when_logged() -> None:
    url = f"smtp://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@mail.example:587"
    settings = _channel_settings(smtp_url=url)
    assert settings.smtp_credentials() == (USER, PASSWORD)
    shown = repr(settings.loggable())
    assert quote(PASSWORD, safe="") not in shown and "pw-K7q" not in shown
    assert settings.loggable()["smtp_url"] == "smtp://orders%40shop.example:***@mail.example:587"


def test_no_credentials_anywhere_means_no_auth() -> None:
    settings = _channel_settings(smtp_url="smtp://mail.example:25")
    assert settings.smtp_credentials() == (None, None)
    channel = EmailChannel(settings)
    assert (channel.port, channel.implicit_tls, channel.tls_context) == (25, False, None)


def test_smtps_defaults_to_port_465() -> None:
    channel = EmailChannel(_channel_settings(smtp_url="smtps://mail.example"))
    assert (channel.port, channel.implicit_tls) == (465, True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"smtp_url": f"smtp://{quote(USER, safe='')}@mail.example"},
            "names an SMTP user but no password",
        ),
        ({"smtp_url": "smtp://mail.example", "smtp_password": PASSWORD}, "is set without a user"),
        ({"smtp_url": f"smtp://:{quote(PASSWORD, safe='')}@mail.example"}, "is set without a user"),
        ({"smtp_url": "smtp://orders:pw-K7q@s@mail.example"}, "as %40"),
        ({"smtp_url": "smtp://mail.example:99999"}, "port must be between"),
        ({"smtp_url": "smtp://u@mail.example", "smtp_username": "u"}, "SMTP_PASSWORD is required"),
    ],
)
def test_smtp_settings_that_cannot_work_are_one_config_error_without_the_password(
    values, message
) -> None:
    with pytest.raises(ConfigError, match=message) as failure:
        _channel_settings(**values)
    assert "pw-K7q" not in str(failure.value) and "K7q" not in str(failure.value)


def test_an_invalid_smtp_url_is_reported_without_its_password() -> None:
    # A raw '/' in the password breaks SMTP_URL's pattern; the error must not echo it.
    with pytest.raises(ConfigError, match="invalid SMTP_URL") as failure:
        _channel_settings(smtp_url="smtp://orders:pw-K7q/secret@mail.example:587")
    assert "K7q" not in str(failure.value) and "secret" not in str(failure.value)


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="SMTP_SSL_CAFILE"):
        _channel_settings(smtp_url="smtps://mail.example", smtp_ssl_cafile=bogus)
    with pytest.raises(ConfigError, match="SMTP_SSL_CAFILE"):
        _channel_settings(smtp_url="smtps://mail.example", smtp_ssl_cafile=tmp_path / "missing.pem")


# ---------------------------------------------------------------- the running notifier


@pytest.fixture
def secure_notifier(settings, test_database, tls_files):
    def make(url: str, **overrides: Any) -> NotifierSettings:
        return notifier_settings_for(
            settings,
            test_database,
            smtp_url=url,
            smtp_starttls=True,
            smtp_ssl_cafile=tls_files["ca"],
            **overrides,
        )

    return make


async def test_starttls_and_auth_required_by_the_server_deliver_the_email(
    starttls_smtp, secure_notifier, captured_logs
) -> None:
    notifier = secure_notifier(starttls_smtp.server.url, smtp_username=USER, smtp_password=PASSWORD)
    await kafka.create_topics(notifier)
    event = b.partially_shipped("ord-tls", b.customer(3))
    await publish(notifier, [event])

    async with running_notifier(notifier):
        (row,) = await wait_for(
            lambda: outbox(notifier, status="sent"), timeout=60, what="the email over TLS"
        )
    (mail,) = starttls_smtp.mails
    assert mail.message_id == f"<{event.id}.email@fulfil>" == row["message_id"]
    assert mail.to == "customer3@shop-customers.example"
    assert mail.auth_login == USER
    assert mail.tls_version in ("TLSv1.2", "TLSv1.3")
    assert [a.ok for a in starttls_smtp.auth.attempts] == [True]
    logs = captured_logs.getvalue()
    assert PASSWORD not in logs and quote(PASSWORD, safe="") not in logs
    assert_no_pii(logs, "Customer Number")


async def test_credentials_in_smtp_url_log_in_and_stay_masked_in_the_logs(
    starttls_smtp, secure_notifier, captured_logs
) -> None:
    url = _url(starttls_smtp.server, USER, PASSWORD)
    notifier = secure_notifier(url)
    assert (notifier.smtp_username, notifier.smtp_password) == (None, None)
    await kafka.create_topics(notifier)
    event = b.partially_shipped("ord-url", b.customer(4))
    await publish(notifier, [event])

    async with running_notifier(notifier):
        await wait_for(lambda: outbox(notifier, status="sent"), timeout=60, what="the email")
    (mail,) = starttls_smtp.mails
    assert mail.message_id == f"<{event.id}.email@fulfil>"
    assert mail.auth_login == USER and mail.tls_version is not None
    logs = captured_logs.getvalue()
    assert "notifier configuration" in logs
    assert f"smtp://orders%40shop.example:***@127.0.0.1:{starttls_smtp.server.port}" in logs
    assert PASSWORD not in logs and quote(PASSWORD, safe="") not in logs and "K7q" not in logs


async def test_a_wrong_password_is_retried_then_failed_and_the_notifier_keeps_running(
    starttls_smtp, secure_notifier, captured_logs
) -> None:
    notifier = secure_notifier(
        starttls_smtp.server.url,
        smtp_username=USER,
        smtp_password=WRONG_PASSWORD,
        fulfil_notifier_max_attempts=3,
    )
    await kafka.create_topics(notifier)
    await publish(notifier, [b.partially_shipped("ord-pw", b.customer(5))])

    async with running_notifier(notifier) as task:
        (row,) = await wait_for(
            lambda: outbox(notifier, status="failed"), timeout=60, what="attempts to run out"
        )
        assert not task.done(), "the notifier stopped on an authentication failure"
    assert row["attempts"] == 3
    assert row["last_error"] == "SMTP authentication failed (535)"
    assert starttls_smtp.mails == []
    attempts = starttls_smtp.auth.attempts
    assert attempts and not any(a.ok for a in attempts) and {a.login for a in attempts} == {USER}
    # aiosmtplib tries every mechanism both sides know (PLAIN, LOGIN) once per send: 3 sends.
    assert set(Counter(a.mechanism for a in attempts).values()) == {3}
    logs = captured_logs.getvalue()
    assert WRONG_PASSWORD not in logs
    assert_no_pii(logs, "Customer Number")
