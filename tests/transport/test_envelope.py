"""The SMTP transaction: per-recipient results, reply codes, lost connections, SMTPUTF8, Bcc."""

from __future__ import annotations

import email.message
import email.policy

import pytest

from mailer.transport import DeliveryError
from tests.support.smtp import Behaviour
from tests.transport.helpers import RECIPIENT, SENDER, make_message

GONE = "gone@example.com"
LATER = "later@example.com"


def server_and_pool(smtp_server, open_pool, behaviour: Behaviour | None = None, **options):
    server = smtp_server(behaviour=behaviour)
    return server, open_pool(server.uri("user", "pass", **options))


def test_final_response_is_the_servers_real_reply(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    first = pool.send(SENDER, [RECIPIENT], make_message("one"))
    second = pool.send(SENDER, [RECIPIENT], make_message("two"))
    assert first.response == server.messages[0].response
    assert second.response == server.messages[1].response
    assert first.response.startswith(f"250 2.0.0 Ok: queued as {server.queue_prefix}")
    assert first.response != second.response


def test_partial_rejection_delivers_to_the_rest(smtp_server, open_pool) -> None:
    behaviour = Behaviour(rcpt_replies={GONE: "550 5.1.1 <gone@example.com>: No such user",
                                        LATER: "451 4.2.0 Greylisted, try again"})
    server, pool = server_and_pool(smtp_server, open_pool, behaviour)
    result = pool.send(SENDER, [RECIPIENT, GONE, LATER], make_message())
    assert (result.accepted, result.rejected, result.pending) == ([RECIPIENT], [GONE], [LATER])
    assert server.messages[0].rcpt_tos == [RECIPIENT]


def test_total_permanent_rejection_raises_with_the_lists(smtp_server, open_pool) -> None:
    behaviour = Behaviour(rcpt_replies={LATER: "451 4.2.0 Greylisted"},
                          rcpt_reply_default="550 5.1.1 No such user")
    server, pool = server_and_pool(smtp_server, open_pool, behaviour)
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [GONE, LATER], make_message())
    error = caught.value
    assert error.transient is False and error.code == 550
    assert (error.rejected, error.pending) == ([GONE], [LATER])
    assert "refused all 2 recipient(s) (1 permanently, 1 temporarily)" in error.message
    assert error.message.endswith("first reply: 550 5.1.1 No such user")
    assert server.messages == []


def test_total_temporary_rejection_is_transient(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool, Behaviour(rcpt_reply_default="451 4.7.1 Try later"))
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT, LATER], make_message())
    error = caught.value
    assert error.transient is True and error.code == 451
    assert (error.rejected, error.pending) == ([], [RECIPIENT, LATER])


@pytest.mark.parametrize("reply, transient", [
    ("451 4.3.0 Mail server temporarily rejected message", True),
    ("554 5.7.1 Message rejected as spam", False),
])
def test_data_reply_decides_transient_or_permanent(smtp_server, open_pool, reply, transient) -> None:
    server, pool = server_and_pool(smtp_server, open_pool, Behaviour(data_reply=reply))
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], make_message())
    assert caught.value.transient is transient
    assert caught.value.code == int(reply[:3])
    assert caught.value.message == f"SMTP {reply}"


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_421_closing_is_transient(smtp_server, open_pool, command) -> None:
    server, pool = server_and_pool(smtp_server, open_pool, Behaviour(close_with_421_at=command))
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], make_message())
    assert caught.value.transient is True and caught.value.code == 421
    assert caught.value.message.startswith("SMTP 421 4.3.2 Service shutting down")


def test_connection_dropped_during_data_is_transient_and_says_outcome_unknown(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool, Behaviour(drop_during_data=True))
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], make_message())
    assert caught.value.transient is True
    assert "connection lost during DATA; the server may or may not have accepted the message" in caught.value.message
    assert server.dropped_during_data == 1


def test_data_lost_on_a_reused_connection_is_not_retried(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    pool.send(SENDER, [RECIPIENT], make_message("warm"))
    server.behaviour = Behaviour(drop_during_data=True)  # the next message is lost mid-DATA
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], make_message("lost"))
    assert caught.value.transient is True
    assert server.dropped_during_data == 1 and server.connections == 1  # no second attempt


def test_slow_server_times_out_as_transient(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool,
                                   Behaviour(slow_reply_at="DATA", slow_reply_seconds=2), socketTimeout=400)
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], make_message())
    assert caught.value.transient is True
    assert caught.value.message == (
        f"SMTP connection to {server.address} timed out after 0.4s waiting for the reply to DATA; "
        "the server may or may not have accepted the message")


def test_slow_rcpt_reply_times_out_as_transient(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool,
                                   Behaviour(slow_reply_at="RCPT", slow_reply_seconds=2), socketTimeout=400)
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT], make_message())
    assert caught.value.transient is True
    assert caught.value.message == f"SMTP connection to {server.address} timed out after 0.4s waiting for the reply to RCPT TO"


def test_refused_connection_is_transient(smtp_server, open_pool) -> None:
    server = smtp_server()
    uri = server.uri("user", "pass")
    server.stop()
    with pytest.raises(DeliveryError) as caught:
        open_pool(uri).send(SENDER, [RECIPIENT], make_message())
    assert caught.value.transient is True
    assert caught.value.message == f"SMTP connection to {server.address} failed during connect: Connection refused"


def utf8_message() -> email.message.EmailMessage:
    message = email.message.EmailMessage(policy=email.policy.SMTPUTF8)
    message["From"] = "zoë@exämple.com"
    message["To"] = "用户@例子.广告"
    message["Subject"] = "Grüße"
    message.set_content("Hallo Zoë\n")
    return message


def test_smtputf8_is_used_when_needed_and_offered(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    result = pool.send("zoë@exämple.com", ["用户@例子.广告"], utf8_message(), smtputf8=True)
    assert result.accepted == ["用户@例子.广告"]
    [received] = server.messages
    assert received.smtputf8 is True
    assert (received.mail_from, received.rcpt_tos) == ("zoë@exämple.com", ["用户@例子.广告"])
    assert "To: 用户@例子.广告\r\n".encode() in received.content  # raw UTF-8, not an encoded-word
    assert "BODY=8BITMIME" in received.mail_options


def test_smtputf8_needed_but_not_offered_is_permanent(smtp_server, open_pool) -> None:
    server = smtp_server(smtputf8=False)
    pool = open_pool(server.uri("user", "pass"))
    with pytest.raises(DeliveryError) as caught:
        pool.send("zoë@exämple.com", ["用户@例子.广告"], utf8_message(), smtputf8=True)
    assert caught.value.transient is False and "does not offer it" in caught.value.message
    assert "SMTPUTF8" in caught.value.message
    assert server.messages == []


def test_ascii_message_does_not_ask_for_smtputf8(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    pool.send(SENDER, [RECIPIENT], make_message())
    assert server.messages[0].smtputf8 is False
    assert not any(option.startswith(("SMTPUTF8", "BODY=")) for option in server.messages[0].mail_options)


def test_non_ascii_address_without_smtputf8_is_refused_before_connecting(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, ["用户@例子.广告"], make_message())
    assert caught.value.transient is False and "recipient #1 is not ASCII" in caught.value.message
    assert server.connections == 0


@pytest.mark.parametrize("bad", ["ada@example.com>\r\nRSET", "a da@example.com", "<ada@example.com>", ""])
def test_addresses_that_could_inject_commands_are_refused(smtp_server, open_pool, bad) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [RECIPIENT, bad], make_message())
    assert caught.value.transient is False and "recipient #2" in caught.value.message
    assert server.connections == 0


def test_null_sender_is_allowed_for_bounces(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    pool.send("", [RECIPIENT], make_message())
    assert server.messages[0].mail_from == "<>"


def test_no_recipients_is_permanent(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, [], make_message())
    assert caught.value.transient is False


def test_bcc_header_is_not_transmitted_but_bcc_recipient_gets_it(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    message = make_message(Bcc="hidden@example.com", Cc="seen@example.com")
    result = pool.send(SENDER, [RECIPIENT, "seen@example.com", "hidden@example.com"], message)
    assert result.accepted == [RECIPIENT, "seen@example.com", "hidden@example.com"]
    [received] = server.messages
    assert b"hidden@example.com" not in received.content
    assert received.message["Bcc"] is None and received.message["Cc"] == "seen@example.com"
    assert message["Bcc"] == "hidden@example.com"  # the caller's message is untouched


def test_lines_are_crlf_and_dots_are_stuffed(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    message = make_message(body=".\n..two dots\nbare\rcarriage\n")
    pool.send(SENDER, [RECIPIENT], message)
    content = server.messages[0].content
    assert b"\r\n.\r\n..two dots\r\n" in content  # the server un-stuffed what we stuffed
    assert b"\n" not in content.replace(b"\r\n", b"")
    assert b"\r" not in content.replace(b"\r\n", b"")


def test_8bit_body_is_announced_with_8bitmime(smtp_server, open_pool) -> None:
    server, pool = server_and_pool(smtp_server, open_pool)
    message = make_message()
    message.set_content("Grüße aus Köln\n", cte="8bit")
    pool.send(SENDER, [RECIPIENT], message)
    assert "BODY=8BITMIME" in server.messages[0].mail_options
    assert "Grüße aus Köln".encode() in server.messages[0].content
