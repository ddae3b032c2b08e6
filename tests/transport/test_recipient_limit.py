"""A server that limits recipients per transaction (452 "too many recipients", RFC 5321 4.5.3.1.10):
the rest go in further transactions on the same connection, with the same message bytes."""

from __future__ import annotations

import pytest

from mailer.transport import DeliveryError
from tests.support.smtp import Behaviour
from tests.transport.helpers import SENDER, make_message

MESSAGE_ID = "<limit-test.1@mailer.example>"


def addresses(count: int, domain: str = "example.com") -> list[str]:
    return [f"r{number:05d}@{domain}" for number in range(count)]


def limited(smtp_server, open_pool, max_recipients: int, **behaviour):
    server = smtp_server(tls="none", auth=False, behaviour=Behaviour(max_recipients=max_recipients, **behaviour))
    return server, open_pool(server.uri())


def test_5001_recipients_at_1000_per_transaction_take_6_transactions_on_one_connection(smtp_server, open_pool) -> None:
    server, pool = limited(smtp_server, open_pool, 1000)
    recipients = addresses(5001)

    result = pool.send(SENDER, recipients, make_message(Message_ID=MESSAGE_ID))

    assert result.accepted == recipients
    assert (result.rejected, result.pending, result.unknown, result.deferred_reason) == ([], [], [], None)
    assert [len(m.rcpt_tos) for m in server.messages] == [1000] * 5 + [1]
    assert [m.rcpt_tos for m in server.messages] == [recipients[i:i + 1000] for i in range(0, 5001, 1000)]
    assert server.connections == 1 and {m.session for m in server.messages} == {1}
    assert server.mail_commands == 6
    # After each 452 the client stopped asking: one refused RCPT per full transaction, no more.
    assert server.rcpt_commands == 5001 + 5
    assert {m.message_id for m in server.messages} == {MESSAGE_ID}
    assert len({m.content for m in server.messages}) == 1  # the same bytes every time
    assert result.responses == [m.response for m in server.messages]
    assert result.response == server.messages[0].response


def test_refusals_mixed_with_the_limit_keep_their_own_results(smtp_server, open_pool) -> None:
    a, gone, later, b, c, d, e = addresses(7)
    server, pool = limited(smtp_server, open_pool, 2, rcpt_replies={
        gone: "550 5.1.1 No such user", later: "451 4.2.0 Greylisted"})

    result = pool.send(SENDER, [a, gone, later, b, c, d, e], make_message())

    assert result.accepted == [a, b, c, d, e]
    assert (result.rejected, result.pending, result.unknown) == ([gone], [later], [])
    assert result.deferred_reason == "SMTP 451 4.2.0 Greylisted"  # why `later` is still owed
    assert [m.rcpt_tos for m in server.messages] == [[a, b], [c, d], [e]]
    assert server.connections == 1


def test_a_later_transaction_refused_at_its_first_recipient_leaves_the_rest_pending(smtp_server, open_pool) -> None:
    a, b, c, d, e = addresses(5)
    # c is refused with 452 whatever the count: the second transaction accepts nobody.
    server, pool = limited(smtp_server, open_pool, 2, rcpt_replies={c: "452 4.5.3 Too many recipients"})

    result = pool.send(SENDER, [a, b, c, d, e], make_message())

    assert result.accepted == [a, b]
    assert (result.rejected, result.pending, result.unknown) == ([], [c, d, e], [])
    assert result.deferred_reason == "SMTP 452 4.5.3 Too many recipients"
    assert server.mail_commands == 2 and server.rcpt_commands == 2 + 1 + 1  # no endless loop
    assert len(server.messages) == 1
    # The connection was reset (RSET) and stays usable.
    assert pool.send(SENDER, [a], make_message()).accepted == [a]
    assert server.connections == 1


def test_too_many_at_the_very_first_recipient_is_a_transient_failure(smtp_server, open_pool) -> None:
    recipients = addresses(3)
    server, pool = limited(smtp_server, open_pool, 1, rcpt_reply_default="452 4.5.3 Too many recipients")

    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, recipients, make_message())

    error = caught.value
    assert (error.transient, error.outcome_unknown, error.code) == (True, False, 452)
    assert (error.rejected, error.pending) == ([], recipients)
    assert server.messages == [] and server.rcpt_commands == 1 and server.mail_commands == 1


def test_552_with_5_5_3_is_read_as_too_many_recipients(smtp_server, open_pool) -> None:
    # RFC 5321 4.5.3.1.10: RFC 821 listed 552 for this; clients should treat it like 452.
    recipients = addresses(5)
    server, pool = limited(smtp_server, open_pool, 2, too_many_recipients_reply="552 5.5.3 Too many recipients")

    result = pool.send(SENDER, recipients, make_message())

    assert result.accepted == recipients and result.rejected == []
    assert [len(m.rcpt_tos) for m in server.messages] == [2, 2, 1]


def test_other_552_replies_are_permanent_refusals(smtp_server, open_pool) -> None:
    a, full = addresses(2)
    server, pool = limited(smtp_server, open_pool, 10, rcpt_replies={full: "552 5.2.2 Mailbox full"})
    result = pool.send(SENDER, [a, full], make_message())
    assert (result.accepted, result.rejected, result.pending) == ([a], [full], [])
    assert len(server.messages) == 1


def test_421_at_rcpt_in_a_later_transaction_keeps_what_was_delivered(smtp_server, open_pool) -> None:
    a, b, c, d = addresses(4)
    server, pool = limited(smtp_server, open_pool, 2, rcpt_replies={d: "421 4.3.2 Shutting down"})

    result = pool.send(SENDER, [a, b, c, d], make_message())

    assert result.accepted == [a, b]
    # c was accepted at RCPT by the second transaction, which then died: still owed, like d.
    assert (result.rejected, result.pending, result.unknown) == ([], [c, d], [])
    assert result.deferred_reason == "SMTP 421 4.3.2 Shutting down"
    assert [m.rcpt_tos for m in server.messages] == [[a, b]]
    pool.send(SENDER, [a], make_message())
    assert server.connections == 2  # the closed connection was not reused
