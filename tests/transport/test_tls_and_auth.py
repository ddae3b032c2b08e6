"""TLS and AUTH against real aiosmtpd servers with a real (test-CA) certificate."""

from __future__ import annotations

import pytest

from mailer.transport import DeliveryError
from tests.support.smtp import Behaviour
from tests.transport.helpers import RECIPIENT, SENDER, make_message


def send_one(pool, subject: str = "Hello"):
    return pool.send(SENDER, [RECIPIENT], make_message(subject))


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN"])
def test_starttls_required_and_auth_delivers_the_message_intact(smtp_server, open_pool, method) -> None:
    server = smtp_server(tls="starttls", require_starttls=True, users={"ada@example.com": "s3cret pass"})
    pool = open_pool(server.uri("ada@example.com", "s3cret pass", authMethod=method))
    message = make_message("Intact?", "Line one\n.leading dot\nLast line äöü\n")

    result = pool.send(SENDER, [RECIPIENT], message)

    assert result.accepted == [RECIPIENT] and result.rejected == [] and result.pending == []
    [received] = server.messages
    assert received.tls is True
    assert received.authenticated_as == "ada@example.com"
    assert [(a.mechanism, a.login, a.success) for a in server.auth_attempts] == [(method, "ada@example.com", True)]
    assert (received.mail_from, received.rcpt_tos) == (SENDER, [RECIPIENT])
    assert received.message["Subject"] == "Intact?"
    assert received.message.get_content().replace("\r\n", "\n") == "Line one\n.leading dot\nLast line äöü\n"


def test_default_auth_method_is_one_the_server_offers(smtp_server, open_pool) -> None:
    server = smtp_server(auth_mechanisms=("LOGIN",))
    send_one(open_pool(server.uri("user", "pass")))
    assert [a.mechanism for a in server.auth_attempts] == ["LOGIN"]
    assert len(server.messages) == 1


def test_auth_method_not_offered_is_a_permanent_error(smtp_server, open_pool) -> None:
    server = smtp_server(auth_mechanisms=("LOGIN",))
    with pytest.raises(DeliveryError) as caught:
        send_one(open_pool(server.uri("user", "pass", authMethod="PLAIN")))
    assert caught.value.transient is False
    assert "offers AUTH LOGIN, not PLAIN" in caught.value.message
    assert server.messages == []


def test_non_ascii_credentials_are_sent_as_utf8(smtp_server, open_pool) -> None:
    server = smtp_server(users={"jürgen": "pässwörd"})
    send_one(open_pool(server.uri("jürgen", "pässwörd")))
    assert server.messages[0].authenticated_as == "jürgen"


def test_implicit_tls_delivers(smtp_server, open_pool) -> None:
    server = smtp_server(tls="implicit")
    uri = server.uri("user", "pass")
    assert uri.startswith("smtps://")
    result = send_one(open_pool(uri))
    assert result.accepted == [RECIPIENT]
    assert server.messages[0].tls is True and server.messages[0].authenticated_as == "user"


def test_wrong_password_is_permanent_and_carries_the_server_reply(smtp_server, open_pool) -> None:
    server = smtp_server()
    password = "Wr0ng-Pa55-Zebra"
    with pytest.raises(DeliveryError) as caught:
        send_one(open_pool(server.uri("user", password)))
    error = caught.value
    assert error.transient is False and error.code == 535
    assert error.message == "SMTP 535 5.7.8 Authentication credentials invalid"
    assert password not in str(error) and password not in repr(error)
    assert [a.success for a in server.auth_attempts] == [False]


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_certificate_from_an_untrusted_ca_is_a_permanent_error(smtp_server, open_pool, tls) -> None:
    server = smtp_server(tls=tls)
    with pytest.raises(DeliveryError) as caught:
        send_one(open_pool(server.uri("user", "pass", tlsCaFile=None)))
    error = caught.value
    assert error.transient is False
    assert f"TLS certificate verification failed for {server.address}" in error.message
    assert "tlsCaFile" in error.message and "tlsServername" in error.message
    assert server.auth_attempts == [] and server.messages == []


def test_tls_reject_unauthorized_false_accepts_an_untrusted_certificate(smtp_server, open_pool) -> None:
    server = smtp_server()
    send_one(open_pool(server.uri("user", "pass", tlsCaFile=None, tlsRejectUnauthorized=False)))
    assert server.messages[0].tls is True


def test_ssl_cert_file_environment_is_trusted(smtp_server, open_pool, smtp_ca_file, monkeypatch) -> None:
    # The system trust store is used, so operators can add a CA without a URI option.
    monkeypatch.setenv("SSL_CERT_FILE", smtp_ca_file)
    server = smtp_server()
    send_one(open_pool(server.uri("user", "pass", tlsCaFile=None)))
    assert len(server.messages) == 1


def test_tls_servername_is_sent_and_checked(smtp_server, open_pool) -> None:
    server = smtp_server()  # certificate names localhost and 127.0.0.1; we dial 127.0.0.1
    send_one(open_pool(server.uri("user", "pass", tlsServername="localhost")))
    assert server.sni_names == ["localhost"]
    assert len(server.messages) == 1


def test_wrong_tls_servername_fails_verification(smtp_server, open_pool) -> None:
    server = smtp_server(tls="implicit")
    with pytest.raises(DeliveryError) as caught:
        send_one(open_pool(server.uri("user", "pass", tlsServername="mail.example.net")))
    assert caught.value.transient is False
    assert "checked name 'mail.example.net'" in caught.value.message
    assert server.sni_names == ["mail.example.net"]
    assert server.messages == []


def test_bad_tls_ca_file_is_a_config_error(smtp_server, tmp_path) -> None:
    from mailer.transport import SmtpConfigError, pool_for

    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n")
    server = smtp_server()
    with pytest.raises(SmtpConfigError, match="option 'tlsCaFile': cannot load CA certificates"):
        pool_for(server.uri("user", "pass", tlsCaFile=str(not_pem)), None)


def test_credentials_without_starttls_are_refused(smtp_server, open_pool) -> None:
    server = smtp_server(tls="none", auth=True)
    with pytest.raises(DeliveryError) as caught:
        send_one(open_pool(server.uri("user", "pass")))
    assert caught.value.transient is False
    assert "does not offer STARTTLS" in caught.value.message
    assert "allowPlaintextAuth=true" in caught.value.message
    assert server.auth_attempts == [] and server.messages == []


def test_allow_plaintext_auth_permits_credentials_without_tls(smtp_server, open_pool) -> None:
    server = smtp_server(tls="none", auth=True)
    send_one(open_pool(server.uri("user", "pass", allowPlaintextAuth=True)))
    assert server.messages[0].tls is False and server.messages[0].authenticated_as == "user"


def test_starttls_is_used_when_offered_even_without_credentials(smtp_server, open_pool) -> None:
    server = smtp_server(auth=False, require_starttls=False)
    send_one(open_pool(server.uri()))
    assert server.messages[0].tls is True


def test_require_tls_refuses_a_server_without_starttls(smtp_server, open_pool) -> None:
    server = smtp_server(tls="none", auth=False)
    with pytest.raises(DeliveryError) as caught:
        send_one(open_pool(server.uri(requireTLS=True)))
    assert caught.value.transient is False and "requireTLS=true" in caught.value.message
    send_one(open_pool(server.uri()))  # without it, plaintext is fine for an open relay
    assert len(server.messages) == 1 and server.messages[0].tls is False


def test_ignore_tls_never_upgrades(smtp_server, open_pool) -> None:
    server = smtp_server(auth=False, require_starttls=False)
    send_one(open_pool(server.uri(ignoreTLS=True)))
    assert server.messages[0].tls is False and server.sni_names == []


def test_auth_required_by_server_but_no_credentials_is_permanent(smtp_server, open_pool) -> None:
    server = smtp_server(tls="implicit")
    with pytest.raises(DeliveryError) as caught:
        send_one(open_pool(server.uri()))
    assert caught.value.transient is False and caught.value.code == 530


def test_server_without_auth_but_credentials_configured_is_permanent(smtp_server, open_pool) -> None:
    server = smtp_server(auth=False)
    with pytest.raises(DeliveryError) as caught:
        send_one(open_pool(server.uri("user", "pass")))
    assert caught.value.transient is False and "does not offer AUTH" in caught.value.message


def test_ehlo_name_option_takes_effect(smtp_server, open_pool) -> None:
    server = smtp_server()
    send_one(open_pool(server.uri("user", "pass", name="client.mailer.example")))
    assert server.ehlo_names == ["client.mailer.example", "client.mailer.example"]  # before and after STARTTLS


def test_greeting_timeout_is_transient(smtp_server, open_pool) -> None:
    server = smtp_server(behaviour=Behaviour(slow_reply_at="greeting", slow_reply_seconds=2))
    with pytest.raises(DeliveryError) as caught:
        send_one(open_pool(server.uri("user", "pass", greetingTimeout=300)))
    assert caught.value.transient is True
    assert caught.value.message == f"SMTP connection to {server.address} timed out after 0.3s waiting for the greeting"
