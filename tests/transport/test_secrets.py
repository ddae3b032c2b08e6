"""The password never shows: not in errors, not in reprs, not in logs, on any failure path."""

from __future__ import annotations

import base64
import logging

import pytest

from mailer.transport import DeliveryError, SmtpConfigError, parse_smtp_uri, pool_for
from tests.support.smtp import Behaviour
from tests.transport.helpers import RECIPIENT, SENDER, make_message

SECRET = "Zebra-Quasar-9137"
FORMS = (SECRET, base64.b64encode(SECRET.encode()).decode())


def assert_hidden(*texts: str) -> None:
    for text in texts:
        for form in FORMS:
            assert form not in text


# Each case: (server arguments, extra URI options, password the server expects).
FAILURES = {
    "wrong password": (dict(users={"user": "other"}), {}, None),
    "untrusted certificate": ({}, {"tlsCaFile": None}, SECRET),
    "wrong tls servername": ({}, {"tlsServername": "mail.example.net"}, SECRET),
    "no starttls offered": (dict(tls="none"), {}, SECRET),
    "auth method not offered": (dict(auth_mechanisms=("LOGIN",)), {"authMethod": "PLAIN"}, SECRET),
    "slow greeting": (dict(behaviour=Behaviour(slow_reply_at="greeting", slow_reply_seconds=1)),
                      {"greetingTimeout": 200}, SECRET),
    "slow data": (dict(behaviour=Behaviour(slow_reply_at="DATA", slow_reply_seconds=1)),
                  {"socketTimeout": 200}, SECRET),
    "421 at mail": (dict(behaviour=Behaviour(close_with_421_at="MAIL")), {}, SECRET),
    "all rejected": (dict(behaviour=Behaviour(rcpt_reply_default="550 5.1.1 No")), {}, SECRET),
    "554 at data": (dict(behaviour=Behaviour(data_reply="554 5.7.1 Spam")), {}, SECRET),
    "dropped during data": (dict(behaviour=Behaviour(drop_during_data=True)), {}, SECRET),
    "server echoes the password": (dict(behaviour=Behaviour(data_reply=f"554 5.7.1 Weak password {SECRET}")),
                                   {}, SECRET),
}


@pytest.mark.parametrize("case", list(FAILURES))
@pytest.mark.parametrize("in_uri", [True, False], ids=["password-in-uri", "password-override"])
def test_no_failure_path_shows_the_password(smtp_server, open_pool, caplog, case, in_uri) -> None:
    server_args, options, expected = FAILURES[case]
    server_args = dict(server_args)  # the table is shared by all parametrizations
    users = server_args.pop("users", None) or {"user": expected}
    server = smtp_server(users=users, **server_args)
    caplog.set_level(logging.DEBUG)  # every logger, the test server's included
    if in_uri:
        pool = open_pool(server.uri("user", SECRET, **options))
    else:
        pool = open_pool(server.uri("user", **options), SECRET)

    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], make_message())

    error = caught.value
    assert "\n" not in error.message
    # Where the test server itself says the password, its own log ("mail.log") says it too.
    echoed = case == "server echoes the password"
    logs = "\n".join(r.getMessage() for r in caplog.records if not (echoed and r.name == "mail.log"))
    assert_hidden(str(error), repr(error), error.message, repr(pool.settings), logs)
    assert_hidden(*(str(arg) for arg in error.args))
    if case == "server echoes the password":
        assert error.message == "SMTP 554 5.7.1 Weak password ******"


def test_refused_connection_does_not_show_the_password(smtp_server, open_pool, caplog) -> None:
    server = smtp_server()
    uri = server.uri("user", SECRET)
    server.stop()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeliveryError) as caught:
        open_pool(uri).send(SENDER, [RECIPIENT], make_message())
    assert_hidden(str(caught.value), caplog.text)


def test_successful_send_logs_no_password(smtp_server, open_pool, caplog) -> None:
    server = smtp_server(users={"user": SECRET})
    caplog.set_level(logging.DEBUG)
    for method in ("PLAIN", "LOGIN"):
        open_pool(server.uri("user", SECRET, authMethod=method)).send(SENDER, [RECIPIENT], make_message())
    transport_lines = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mailer"))
    assert_hidden(transport_lines)
    assert SECRET not in caplog.text
    assert len(server.messages) == 2


@pytest.mark.parametrize("uri", [
    f"smtp://user:{SECRET}@host?nope=1",
    f"smtp://user:{SECRET}@host:99999",
    f"smtps://user:{SECRET}@host?ignoreTLS=true",
    f"smtp://user:{SECRET}@host?tlsCaFile=/nonexistent/ca.pem",
])
def test_config_errors_do_not_show_the_password(uri: str, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SmtpConfigError) as caught:
        pool_for(uri, None)
    with pytest.raises(SmtpConfigError) as caught_override:
        pool_for(uri.replace(f":{SECRET}", ""), SECRET)
    assert_hidden(str(caught.value), repr(caught.value), str(caught_override.value), caplog.text)


def test_settings_repr_hides_password_from_either_source() -> None:
    assert_hidden(repr(parse_smtp_uri(f"smtp://user:{SECRET}@host")))
    assert_hidden(repr(parse_smtp_uri("smtp://user@host", SECRET)))
