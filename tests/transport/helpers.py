"""Small builders shared by the transport tests."""

from __future__ import annotations

import email.message

from mailer.transport import SmtpPool, parse_smtp_uri

SENDER = "sender@example.com"
RECIPIENT = "ada@example.com"


def make_message(subject: str = "Hello", body: str = "Hi Ada,\nthe transport works.\n",
                 **headers: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = SENDER
    message["To"] = RECIPIENT
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


def pool_from(uri: str, password: str | None = None) -> SmtpPool:
    return SmtpPool(parse_smtp_uri(uri, password))
