"""A send of several transactions (the server takes 2 recipients per transaction) whose later
transaction fails: what was delivered stays delivered, the rest is pending, rejected or unknown, and
deferred_reason says why. Every recipient ends in exactly one list."""

from __future__ import annotations

import pytest

from mailer.transport import DeliveryError, SendResult
from tests.support.smtp import HANG_UP, Behaviour
from tests.transport.helpers import SENDER, make_message

A, B, C, D, E = RECIPIENTS = [f"{name}@example.com" for name in "abcde"]  # transactions: [a b] [c d] [e]
MESSAGE_ID = "<partial.1@mailer.example>"
SECRET = "Narwhal-Comet-5820"
UNKNOWN_TEXT = "the server may or may not have accepted the message"


def assert_partition(result: SendResult) -> None:
    lists = result.accepted + result.rejected + result.pending + result.unknown
    assert sorted(lists) == sorted(RECIPIENTS)


def send_through(pool) -> SendResult:
    result = pool.send(SENDER, RECIPIENTS, make_message(Message_ID=MESSAGE_ID))
    assert_partition(result)
    return result


def server_with(smtp_server, **behaviour):
    return smtp_server(tls="none", auth=False, behaviour=Behaviour(max_recipients=2, **behaviour))


@pytest.mark.parametrize("sequence, rejected, pending, reason", [
    (["451 4.3.0 Try later"], [], [C, D, E], "SMTP 451 4.3.0 Try later"),
    (["554 5.7.1 Rejected"], [C, D], [E], "SMTP 554 5.7.1 Rejected"),
], ids=["451", "554"])
def test_final_reply_refused_in_a_later_transaction(smtp_server, open_pool, sequence, rejected, pending, reason) -> None:
    server = server_with(smtp_server, data_reply_sequence=[None, *sequence])
    pool = open_pool(server.uri())

    result = send_through(pool)

    assert result.accepted == [A, B]
    assert (result.rejected, result.pending, result.unknown) == (rejected, pending, [])
    assert result.deferred_reason == reason
    assert result.response == server.messages[0].response and result.responses == [result.response]
    assert [m.rcpt_tos for m in server.messages] == [[A, B]]
    pool.send(SENDER, [A], make_message())
    assert server.connections == 2  # the connection that failed was not reused


@pytest.mark.parametrize("reply", ["451 4.3.2 Busy", "550 5.7.1 Not now"])
def test_mail_refused_in_a_later_transaction_leaves_the_rest_pending(smtp_server, open_pool, reply) -> None:
    # MAIL failed before any of c, d, e was offered: nothing was refused for them, they are owed.
    server = server_with(smtp_server, mail_reply_sequence=[None, reply])
    result = send_through(open_pool(server.uri()))
    assert result.accepted == [A, B]
    assert (result.rejected, result.pending, result.unknown) == ([], [C, D, E], [])
    assert result.deferred_reason == f"SMTP {reply}"


def test_connection_lost_after_a_later_final_dot_makes_its_recipients_unknown(smtp_server, open_pool) -> None:
    server = server_with(smtp_server, data_reply_sequence=[None, HANG_UP])

    result = send_through(open_pool(server.uri()))

    assert result.accepted == [A, B]
    assert (result.unknown, result.pending, result.rejected) == ([C, D], [E], [])
    assert UNKNOWN_TEXT in result.deferred_reason
    # The server kept both copies, with the same Message-ID; the second was never answered.
    assert [(m.rcpt_tos, m.message_id, m.response is None) for m in server.messages] == [
        ([A, B], MESSAGE_ID, False), ([C, D], MESSAGE_ID, True)]


def test_proxy_cut_after_a_later_final_dot(smtp_server, fault_proxy, open_pool) -> None:
    server = server_with(smtp_server)
    proxy = fault_proxy(server)
    proxy.cut_at("after end of data", skip=1)

    result = send_through(open_pool(proxy.uri()))

    assert proxy.fired == ["cut after end of data"]
    assert (result.accepted, result.unknown, result.pending) == ([A, B], [C, D], [E])
    assert [m.rcpt_tos for m in server.messages] == [[A, B], [C, D]]  # the server has the second


def test_timeout_after_a_later_final_dot_is_unknown_too(smtp_server, fault_proxy, open_pool) -> None:
    server = server_with(smtp_server)
    proxy = fault_proxy(server)
    proxy.stall_at("after end of data", 3, skip=1)

    result = send_through(open_pool(proxy.uri(socketTimeout=300)))

    assert (result.accepted, result.unknown, result.pending) == ([A, B], [C, D], [E])
    assert result.deferred_reason == (
        f"SMTP connection to {proxy.address} timed out after 0.3s waiting for the reply to DATA; {UNKNOWN_TEXT}")


def test_timeout_before_a_later_final_dot_leaves_its_recipients_pending(smtp_server, fault_proxy, open_pool) -> None:
    server = server_with(smtp_server)
    proxy = fault_proxy(server)
    proxy.stall_at("DATA", 3, skip=1)  # the second DATA command waits: no data was sent

    result = send_through(open_pool(proxy.uri(socketTimeout=300)))

    assert (result.accepted, result.unknown, result.pending) == ([A, B], [], [C, D, E])
    assert UNKNOWN_TEXT not in result.deferred_reason
    assert "waiting for the reply to DATA" in result.deferred_reason


def test_connection_lost_at_a_later_mail(smtp_server, fault_proxy, open_pool) -> None:
    server = server_with(smtp_server)
    proxy = fault_proxy(server)
    proxy.cut_at("MAIL", skip=1)

    result = send_through(open_pool(proxy.uri()))

    assert (result.accepted, result.pending, result.unknown) == ([A, B], [C, D, E], [])
    assert result.deferred_reason == f"SMTP connection to {proxy.address} closed unexpectedly during MAIL FROM"
    assert len(server.messages) == 1


def test_cut_before_a_later_final_dot_reaches_the_server(smtp_server, fault_proxy, open_pool) -> None:
    # The client cannot tell this from a lost reply (unknown), but the server holds no copy.
    server = server_with(smtp_server)
    proxy = fault_proxy(server)
    proxy.cut_at("before end of data", skip=1)

    result = send_through(open_pool(proxy.uri()))

    assert (result.accepted, result.unknown, result.pending) == ([A, B], [C, D], [E])
    server.wait_until_no_connections()
    assert [m.rcpt_tos for m in server.messages] == [[A, B]]


def test_first_transaction_failing_still_raises_and_later_ones_are_not_tried(smtp_server, open_pool) -> None:
    server = server_with(smtp_server, data_reply_sequence=["451 4.3.0 Try later"])
    with pytest.raises(DeliveryError) as caught:
        open_pool(server.uri()).send(SENDER, RECIPIENTS, make_message())
    assert (caught.value.code, caught.value.transient, caught.value.outcome_unknown) == (451, True, False)
    assert server.mail_commands == 1 and server.messages == []


def test_deferred_reason_never_shows_the_password(smtp_server, open_pool) -> None:
    server = smtp_server(users={"user": SECRET}, behaviour=Behaviour(
        max_recipients=2, data_reply_sequence=[None, f"451 4.3.0 Bad {SECRET} seen"]))

    result = send_through(open_pool(server.uri("user", SECRET)))

    assert result.accepted == [A, B] and result.pending == [C, D, E]
    assert result.deferred_reason == "SMTP 451 4.3.0 Bad ****** seen"
    assert SECRET not in repr(result)
