"""Every way a send can fail, classified: transient or permanent, and whether the outcome is unknown
(only after the final "." and before the reply). Real servers with scripted faults and the fault
proxy; the server's copies are counted, and no error shows the password."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mailer.transport import DeliveryError
from tests.support.faultproxy import FaultProxy
from tests.support.smtp import Behaviour
from tests.transport.helpers import RECIPIENT, SENDER, make_message

SECRET = "Quokka-Nebula-4471"
MESSAGE_ID = "<unknown-outcome.1@mailer.example>"
UNKNOWN_TEXT = "the server may or may not have accepted the message"
PLAIN = dict(tls="none", auth=True)  # lets the proxy read the session; AUTH still needs the password


@dataclass(frozen=True)
class Case:
    transient: bool
    unknown: bool
    copies: int = 0  # messages the server holds afterwards
    code: int | None = None
    behaviour: Behaviour = field(default_factory=Behaviour)
    server: dict[str, Any] = field(default_factory=lambda: dict(tls="starttls", auth=True))
    options: dict[str, Any] = field(default_factory=dict)
    proxy: Callable[[FaultProxy], None] | None = None
    text: str | None = None  # part of the error message
    password: str = SECRET  # what the client sends


def stall(point: str) -> Behaviour:
    return Behaviour(stall_at=point, stall_seconds=5)


CASES = {
    # -- before the server could have the message: outcome known ----------------------------------
    "refused at connect": Case(True, False, server=PLAIN, proxy=lambda p: p.refuse_connections(),
                               text="failed during connect: Connection refused"),
    "reset at connect": Case(True, False, server=PLAIN, proxy=lambda p: p.reset_connections()),
    "421 greeting": Case(True, False, code=421, behaviour=Behaviour(greeting_reply="421 4.3.2 Try later"),
                         text="SMTP 421 4.3.2 Try later"),
    "greeting stalls": Case(True, False, behaviour=stall("greeting"), options={"greetingTimeout": 300},
                            text="timed out after 0.3s waiting for the greeting"),
    "EHLO stalls": Case(True, False, behaviour=stall("EHLO"), text="waiting for the reply to EHLO"),
    "STARTTLS handshake: server hangs up": Case(True, False, behaviour=Behaviour(starttls_fault="hang up"),
                                                text="during STARTTLS"),
    "STARTTLS handshake: server sends an alert": Case(False, False, behaviour=Behaviour(starttls_fault="alert"),
                                                      text="during STARTTLS"),
    "STARTTLS stalls": Case(True, False, behaviour=stall("STARTTLS"), text="waiting for the reply to STARTTLS"),
    "implicit TLS, certificate for another name": Case(
        False, False, server=dict(tls="implicit", auth=True), options={"tlsServername": "mail.example.net"},
        text="TLS certificate verification failed"),
    "AUTH 454": Case(True, False, code=454,
                     behaviour=Behaviour(auth_reply="454 4.7.0 Temporary authentication failure"),
                     text="SMTP 454 4.7.0 Temporary authentication failure"),
    "AUTH 535 (wrong password)": Case(False, False, code=535, password=SECRET + "-wrong"),
    "AUTH stalls": Case(True, False, behaviour=stall("AUTH"), text="waiting for the reply to AUTH"),
    "MAIL 421": Case(True, False, code=421, behaviour=Behaviour(close_with_421_at="MAIL")),
    "MAIL 451": Case(True, False, code=451, behaviour=Behaviour(mail_reply_sequence=["451 4.3.2 Busy"])),
    "connection cut at MAIL": Case(True, False, server=PLAIN, proxy=lambda p: p.cut_at("MAIL")),
    "RCPT stalls": Case(True, False, behaviour=stall("RCPT"), text="waiting for the reply to RCPT TO"),
    "connection cut at DATA": Case(True, False, server=PLAIN, proxy=lambda p: p.cut_at("DATA", reset=True)),
    "DATA go-ahead stalls": Case(True, False, behaviour=stall("DATA"),
                                 text="timed out after 0.3s waiting for the reply to DATA"),
    "final reply 451": Case(True, False, code=451, behaviour=Behaviour(data_reply_sequence=["451 4.3.0 Try later"])),
    "final reply 554": Case(False, False, code=554, behaviour=Behaviour(data_reply_sequence=["554 5.7.1 Spam"])),
    "421 instead of the final reply": Case(True, False, code=421, behaviour=Behaviour(close_with_421_at="DATA")),
    # -- after the final ".", before the reply: outcome unknown ----------------------------------
    "connection lost after the final dot": Case(True, True, copies=1,
                                                behaviour=Behaviour(drop_after_data_received_times=1)),
    "connection lost after the final dot (implicit TLS)": Case(
        True, True, copies=1, server=dict(tls="implicit", auth=True),
        behaviour=Behaviour(drop_after_data_received_times=1)),
    "connection lost after the final dot (plaintext)": Case(
        True, True, copies=1, server=PLAIN, options={"allowPlaintextAuth": True},
        behaviour=Behaviour(drop_after_data_received_times=1)),
    "proxy cuts after the final dot": Case(True, True, copies=1, server=PLAIN,
                                           proxy=lambda p: p.cut_at("after end of data")),
    "proxy resets after the final dot": Case(True, True, copies=1, server=PLAIN,
                                             proxy=lambda p: p.cut_at("after end of data", reset=True)),
    "proxy cuts before the final dot reaches the server": Case(True, True, copies=0, server=PLAIN,
                                                               proxy=lambda p: p.cut_at("before end of data")),
    "final reply stalls past socketTimeout": Case(True, True, copies=1, behaviour=stall("end of DATA"),
                                                  text="timed out after 0.3s waiting for the reply to DATA"),
    "proxy holds the final reply past socketTimeout": Case(
        True, True, copies=1, server=PLAIN, proxy=lambda p: p.stall_at("after end of data", 3)),
    "server hangs up without recording (drop_during_data)": Case(
        True, True, copies=0, behaviour=Behaviour(drop_during_data=True)),
}


def hidden(*texts: str) -> bool:
    forms = (SECRET, base64.b64encode(f"\0user\0{SECRET}".encode()).decode())
    return not any(form in text for text in texts for form in forms)


@pytest.mark.parametrize("name", list(CASES))
def test_failure_is_classified(smtp_server, fault_proxy, open_pool, name) -> None:
    case = CASES[name]
    server = smtp_server(users={"user": SECRET}, behaviour=case.behaviour, **case.server)
    options = {"socketTimeout": 300, **case.options}
    if case.server.get("tls") == "none":
        options.setdefault("allowPlaintextAuth", True)
    if case.proxy is not None:
        proxy = fault_proxy(server)
        case.proxy(proxy)
        uri = proxy.uri("user", case.password, **options)
    else:
        uri = server.uri("user", case.password, **options)
    pool = open_pool(uri)

    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], make_message(Message_ID=MESSAGE_ID))

    error = caught.value
    assert (error.transient, error.outcome_unknown) == (case.transient, case.unknown), error.message
    assert (UNKNOWN_TEXT in error.message) is case.unknown
    if case.code is not None:
        assert error.code == case.code
    if case.text is not None:
        assert case.text in error.message
    assert "\n" not in error.message
    assert hidden(error.message, str(error), repr(error), repr(error.args))
    if case.proxy is not None:
        assert proxy.fired, "the proxy fault never fired"
    server.wait_until_no_connections()
    assert len(server.messages) == case.copies
    assert all(m.message_id == MESSAGE_ID for m in server.messages)


def test_at_least_once_retry_after_an_unknown_outcome_leaves_two_copies_with_one_message_id(
        smtp_server, open_pool) -> None:
    server = smtp_server(behaviour=Behaviour(drop_after_data_received_times=1))
    pool = open_pool(server.uri("user", "pass"))
    message = make_message(Message_ID=MESSAGE_ID)
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], message)
    assert caught.value.outcome_unknown is True
    result = pool.send(SENDER, [RECIPIENT], message)  # the retry, same message
    assert result.accepted == [RECIPIENT]
    assert [(m.message_id, m.response is None) for m in server.messages] == [(MESSAGE_ID, True), (MESSAGE_ID, False)]
    assert server.dropped_during_data == 1 and server.connections == 2


def test_a_transient_final_reply_once_then_normal_is_counted_across_sessions(smtp_server, open_pool) -> None:
    server = smtp_server(behaviour=Behaviour(data_reply_sequence=["451 4.3.0 Try later", None]))
    pool = open_pool(server.uri("user", "pass"))
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], make_message("first"))
    assert (caught.value.code, caught.value.outcome_unknown) == (451, False)
    pool.send(SENDER, [RECIPIENT], make_message("second"))  # a new session: the failed one is closed
    assert server.connections == 2 and server.data_received == 2
    assert [m.message["Subject"] for m in server.messages] == ["second"]


def test_a_stalled_final_reply_that_arrives_in_time_is_a_success(smtp_server, open_pool) -> None:
    server = smtp_server(behaviour=Behaviour(stall_at="end of DATA", stall_seconds=0.2))
    result = open_pool(server.uri("user", "pass", socketTimeout=5000)).send(SENDER, [RECIPIENT], make_message())
    assert result.response == server.messages[0].response and result.response.startswith("250 ")


def test_redacted_keeps_outcome_unknown_and_the_lists() -> None:
    error = DeliveryError(f"SMTP 451 echo {SECRET}", transient=True, code=451, rejected=["r@x"],
                          pending=["p@x"], outcome_unknown=True)
    clean = error.redacted(SECRET)
    assert clean is not error and clean.message == "SMTP 451 echo ******"
    assert (clean.transient, clean.code, clean.rejected, clean.pending, clean.outcome_unknown) == (
        True, 451, ["r@x"], ["p@x"], True)
    assert DeliveryError("x", transient=False).outcome_unknown is False


def test_connection_lost_while_the_data_is_still_being_written_is_not_unknown(
        smtp_server, fault_proxy, open_pool) -> None:
    # 16 MB is more than the loopback socket buffers hold: the reset reaches the client mid-write,
    # before its final "." left, so the server cannot have the message.
    server = smtp_server(tls="none", auth=False)
    proxy = fault_proxy(server)
    proxy.cut_at("start of data", reset=True)
    big = make_message(body=("x" * 998 + "\n") * 16_000)

    with pytest.raises(DeliveryError) as caught:
        open_pool(proxy.uri()).send(SENDER, [RECIPIENT], big)

    error = caught.value
    assert (error.transient, error.outcome_unknown) == (True, False), error.message
    assert error.message == f"SMTP connection to {proxy.address} closed unexpectedly during DATA"
    assert proxy.fired == ["cut start of data"]
    server.wait_until_no_connections()
    assert server.messages == [] and server.data_received == 0
