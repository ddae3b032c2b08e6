"""The transport's pool against Postfix: one authenticated session carries several messages."""

from __future__ import annotations

import email.message
import re
import time

from mailer.smtp_uri import parse_smtp_uri
from mailer.transport import SmtpPool

from tests.support.postfix import POSTFIX_PASSWORD, POSTFIX_USER, PostfixServer

SESSION_END = re.compile(r"postfix/smtpd\[\d+\]: disconnect from \S+ (.*)$")


def note(subject: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"], message["To"], message["Subject"] = "noreply@example.com", "ada@example.com", subject
    message.set_content("pooled")
    return message


def wait_for_session_end(server: PostfixServer, after: int, timeout: float = 10.0) -> tuple[list[str], str]:
    """Postfix logs through postlogd, a moment after the fact: poll for smtpd's session summary."""
    deadline = time.monotonic() + timeout
    while True:
        new = server.log_lines()[after:]
        ends = [m.group(1) for line in new if (m := SESSION_END.search(line))]
        if ends or time.monotonic() > deadline:
            assert ends, f"no smtpd session ended; Postfix log since:\n" + "\n".join(new)
            return new, ends[0]
        time.sleep(0.05)


def test_two_sends_share_one_authenticated_postfix_session(postfix_server: PostfixServer):
    seen = len(postfix_server.log_lines())
    pool = SmtpPool(parse_smtp_uri(postfix_server.uri(POSTFIX_USER, POSTFIX_PASSWORD)))
    try:
        first = pool.send("noreply@example.com", ["ada@example.com"], note("pooled one"))
        second = pool.send("noreply@example.com", ["ada@example.com"], note("pooled two"))
    finally:
        pool.close()  # QUIT: smtpd then logs the session's command counts

    assert first.response != second.response  # two queue ids
    new, summary = wait_for_session_end(postfix_server, seen)
    assert sum("postfix/smtpd" in line and ": connect from " in line for line in new) == 1, new
    assert "auth=1" in summary and "mail=2" in summary and "data=2" in summary, summary
