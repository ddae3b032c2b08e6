"""SmtpPool.send takes an already serialized message (bytes) as well as an EmailMessage."""

from __future__ import annotations

import email.policy

import pytest

from mailer.transport import DeliveryError

from .helpers import SENDER, make_message


@pytest.mark.parametrize("pipelining", [True, False])
def test_bytes_are_sent_as_is_with_crlf_and_dot_stuffing(smtp_server, open_pool, pipelining) -> None:
    server = smtp_server(pipelining=pipelining)
    pool = open_pool(server.uri("user", "pass"))
    raw = (b"From: sender@example.com\nTo: ada@example.com\r\nSubject: raw\r"
           b"Message-ID: <fixed@example.com>\n\n.leading dot\n..two dots\nlast line without newline")
    result = pool.send(SENDER, ["ada@example.com"], raw)
    assert result.accepted == ["ada@example.com"]
    (received,) = server.messages
    assert received.content == (b"From: sender@example.com\r\nTo: ada@example.com\r\nSubject: raw\r\n"
                                b"Message-ID: <fixed@example.com>\r\n\r\n.leading dot\r\n..two dots\r\n"
                                b"last line without newline\r\n")
    assert received.message_id == "<fixed@example.com>"
    # SIZE= declares the size with CRLF line endings (less the final CRLF the client adds here)
    size = [option for option in received.mail_options if option.startswith("SIZE=")]
    assert size == [f"SIZE={len(received.content) - 2}"], received.mail_options


def test_bytes_and_the_email_message_they_came_from_arrive_identical(smtp_server, open_pool) -> None:
    server = smtp_server(pipelining=True)
    pool = open_pool(server.uri("user", "pass"))
    message = make_message("same", Message_ID="<same@example.com>")
    pool.send(SENDER, ["ada@example.com"], message)
    pool.send(SENDER, ["ada@example.com"], message.as_bytes(policy=email.policy.SMTP))
    pool.send(SENDER, ["ada@example.com"], bytearray(message.as_bytes(policy=email.policy.SMTP)))
    first, second, third = server.messages
    assert first.content == second.content == third.content


def test_eight_bit_bytes_ask_for_8bitmime_and_size(smtp_server, open_pool) -> None:
    server = smtp_server(pipelining=True)
    pool = open_pool(server.uri("user", "pass"))
    raw = "Subject: café\r\n\r\nnaïve\r\n".encode()
    pool.send(SENDER, ["ada@example.com"], raw)
    (received,) = server.messages
    assert "BODY=8BITMIME" in received.mail_options
    assert received.content == raw


def test_something_else_is_refused(smtp_server, open_pool) -> None:
    server = smtp_server()
    pool = open_pool(server.uri("user", "pass"))
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, ["ada@example.com"], "Subject: str\r\n\r\nbody")  # type: ignore[arg-type]
    assert caught.value.transient is False and "EmailMessage or bytes" in caught.value.message
    assert server.connections == 0
