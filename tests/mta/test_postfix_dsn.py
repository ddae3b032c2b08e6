"""A document's dsn against a real MTA (issue 12 item 5): Postfix offers DSN in its EHLO, takes RET, ENVID,
NOTIFY and ORCPT, and acts on them: with NOTIFY=SUCCESS it mails the envelope sender a success report
(multipart/report, RFC 3464) that quotes the envelope id and the original recipient back."""

from __future__ import annotations

import re
import time

from mailer.smtp_uri import parse_smtp_uri
from mailer.transport import SmtpPool

from tests.support.postfix import POSTFIX_PASSWORD, POSTFIX_USER, PostfixServer

SENDER = "grace@example.com"  # a mailbox of the test instance, so the reports Postfix sends can be read


def wait_for_report(server: PostfixServer, envelope_id: str, timeout: float = 15.0) -> str:
    """The delivery status report in the sender's mailbox that names this envelope id, as text."""
    deadline = time.monotonic() + timeout
    while True:
        for message in server.messages(SENDER):
            if message.get_content_type() == "multipart/report":
                text = message.as_string()
                if f"Original-Envelope-Id: {envelope_id}" in text:
                    return text
        if time.monotonic() > deadline:
            tail = "\n".join(server.log_lines()[-20:])
            raise AssertionError(f"no delivery status report for {envelope_id!r} reached {SENDER}; Postfix log tail:\n{tail}")
        time.sleep(0.05)


def test_a_document_asking_for_success_reports_gets_one_from_postfix(postfix_pipeline, postfix_server: PostfixServer):
    envelope_id = f"order-{time.time_ns()} #7"  # a space and '#': sent as xtext (+20), reported decoded
    delivery = postfix_pipeline.send("dsn-success", {
        "from": SENDER,
        "to": "ada@example.com",
        "message": {"subject": "Your order", "text": "Thanks"},
        "dsn": {"id": envelope_id, "return": "headers", "notify": ["success", "failure"], "recipient": "ada@example.com"},
    })
    assert delivery["state"] == "SUCCESS", delivery
    queue_id = delivery["info"]["response"].rsplit(" ", 1)[1]
    postfix_server.wait_for_message("ada@example.com", delivery["info"]["messageId"])

    report = wait_for_report(postfix_server, envelope_id)
    assert re.search(r"^Original-Recipient: rfc822; ?ada@example.com$", report, re.MULTILINE), report
    assert re.search(r"^Action: delivered$", report, re.MULTILINE), report
    # RET=HDRS: the report returns the original's headers only, not its body.
    assert "Subject: Your order" in report and "Thanks" not in report
    # Postfix's own log: the delivery triggered a sender delivery status notification.
    deadline = time.monotonic() + 10
    while not any(f"{queue_id}: sender delivery status notification" in line for line in postfix_server.log_lines()):
        assert time.monotonic() < deadline, "\n".join(postfix_server.log_lines()[-20:])
        time.sleep(0.05)


def test_without_notify_success_postfix_sends_no_report(postfix_server: PostfixServer):
    """The control for the test above: the same mail with NOTIFY=FAILURE only is delivered and no success
    report is sent (so the report above came from the parameters, not from Postfix's defaults)."""
    from mailer.dsn import DsnRequest

    envelope_id = f"control-{time.time_ns()}"
    pool = SmtpPool(parse_smtp_uri(postfix_server.uri(POSTFIX_USER, POSTFIX_PASSWORD)))
    message_id = f"<{envelope_id}@example.com>"
    payload = (f"From: {SENDER}\r\nTo: ada@example.com\r\nSubject: control\r\nMessage-ID: {message_id}\r\n\r\nbody\r\n").encode()
    try:
        result = pool.send(SENDER, ["ada@example.com"], payload, dsn=DsnRequest(envid=envelope_id, notify=("FAILURE",)))
    finally:
        pool.close()
    assert result.accepted == ["ada@example.com"]
    postfix_server.wait_for_message("ada@example.com", message_id)
    queue_id = result.response.rsplit(" ", 1)[1]
    time.sleep(1.0)  # a report, if one were coming, is queued right after the delivery
    assert not any(f"{queue_id}: sender delivery status notification" in line for line in postfix_server.log_lines())
    assert not any(f"Original-Envelope-Id: {envelope_id}" in m.as_string() for m in postfix_server.messages(SENDER))
