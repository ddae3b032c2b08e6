"""The pipelined (RFC 2920) and chained transport against a real MTA: Postfix advertises PIPELINING,
and logs "improper command pipelining" when a client sends ahead where it must not."""

from __future__ import annotations

import threading
import time

import pytest

from mailer.smtp_uri import parse_smtp_uri
from mailer.transport import DeliveryError, SendResult, SmtpPool

from tests.support.postfix import POSTFIX_PASSWORD, POSTFIX_USER, RECIPIENT_LIMIT, UNKNOWN_RECIPIENT, PostfixServer

from .test_postfix_pool import SESSION_END, note


def wait_for_session_end(server: PostfixServer, after: int, timeout: float = 10.0) -> tuple[list[str], str]:
    """The summary of the first smtpd session since `after` that sent MAIL (a listening probe's
    session, logged late, says only commands=0/0)."""
    deadline = time.monotonic() + timeout
    while True:
        new = server.log_lines()[after:]
        ends = [m.group(1) for line in new if (m := SESSION_END.search(line)) and "mail=" in m.group(1)]
        if ends or time.monotonic() > deadline:
            assert ends, "no smtpd session ended; Postfix log since:\n" + "\n".join(new)
            return new, ends[0]
        time.sleep(0.05)


def improper(server: PostfixServer, seen: int) -> list[str]:
    return [line for line in server.log_lines()[seen:] if "improper command pipelining" in line]


def test_postfix_offers_pipelining_and_mixed_replies_come_out_as_in_lockstep(postfix_server: PostfixServer):
    assert RECIPIENT_LIMIT == 2
    seen = len(postfix_server.log_lines())
    pool = SmtpPool(parse_smtp_uri(postfix_server.uri(POSTFIX_USER, POSTFIX_PASSWORD)))
    try:
        # ada 250, unknown 550, grace 250, alan 452 (Postfix's recipient limit): alan follows in
        # a second transaction on the same session.
        to = ["ada@example.com", UNKNOWN_RECIPIENT, "grace@example.com", "alan@example.com"]
        message = note("pipelined mixed")
        message["Message-ID"] = "<pipelined-mixed@example.com>"
        result = pool.send("noreply@example.com", to, message)
        (connection,) = pool._idle
        assert connection.pipelining is True
    finally:
        pool.close()
    assert result.accepted == ["ada@example.com", "grace@example.com", "alan@example.com"]
    assert result.rejected == [UNKNOWN_RECIPIENT] and result.pending == []
    assert len(result.responses) == 2
    for mailbox in ("ada@example.com", "grace@example.com", "alan@example.com"):
        postfix_server.wait_for_message(mailbox, "<pipelined-mixed@example.com>")
    new, summary = wait_for_session_end(postfix_server, seen)
    assert "mail=2" in summary and "data=2" in summary, summary
    assert improper(postfix_server, seen) == []


def test_all_recipients_refused_by_postfix_sends_no_data(postfix_server: PostfixServer):
    seen = len(postfix_server.log_lines())
    pool = SmtpPool(parse_smtp_uri(postfix_server.uri(POSTFIX_USER, POSTFIX_PASSWORD)))
    try:
        with pytest.raises(DeliveryError) as caught:
            pool.send("noreply@example.com", [UNKNOWN_RECIPIENT], note("refused"))
    finally:
        pool.close()
    error = caught.value
    assert error.code == 550 and error.transient is False and error.rejected == [UNKNOWN_RECIPIENT]
    assert error.message.startswith("SMTP server refused all 1 recipient(s) (1 permanently, 0 temporarily)")
    new, summary = wait_for_session_end(postfix_server, seen)
    # DATA was sent (pipelined) and refused; no message content went: Postfix counts data=0/1
    assert "data=0/1" in summary, summary
    assert improper(postfix_server, seen) == []


def test_chained_senders_share_one_postfix_session(postfix_server: PostfixServer):
    seen = len(postfix_server.log_lines())
    pool = SmtpPool(parse_smtp_uri(postfix_server.uri(POSTFIX_USER, POSTFIX_PASSWORD, maxConnections=1)))
    count = 8
    outcomes: dict[int, object] = {}
    claimed = []
    claim = pool._claim_next

    def claim_when_all_queued(connection):
        # the first data write waits until every other sender is queued, so each message after
        # the first goes out chained behind its predecessor's data
        deadline = time.monotonic() + 5
        while not claimed and pool.waiting < count - 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        waiter = claim(connection)
        claimed.append(waiter is not None)
        return waiter

    pool._claim_next = claim_when_all_queued  # read when a connection is opened

    def run(index: int) -> None:
        try:
            message = note(f"chained {index}")
            message["Message-ID"] = f"<chained-{index}@example.com>"
            outcomes[index] = pool.send("noreply@example.com", ["ada@example.com"], message)
        except Exception as exc:
            outcomes[index] = exc

    try:
        threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        pool.close()
    assert all(isinstance(outcomes[n], SendResult) for n in range(count)), outcomes
    assert len({outcomes[n].response for n in range(count)}) == count  # eight queue ids
    assert claimed == [True] * (count - 1) + [False]  # every message but the first was chained
    for index in range(count):
        postfix_server.wait_for_message("ada@example.com", f"<chained-{index}@example.com>")
    new, summary = wait_for_session_end(postfix_server, seen)
    assert f"mail={count}" in summary and f"data={count}" in summary, summary
    assert improper(postfix_server, seen) == []
