"""Log lines are JSON Cloud Logging understands, and carry no bodies, full addresses or secrets."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.smtp import Behaviour

from .conftest import SMTP_PASSWORD, SMTP_USER



def test_log_lines_are_structured_and_reveal_only_domains(pipeline, smtp_server, log_stream):
    server = smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD},
                         behaviour=Behaviour(rcpt_replies={"gone@example.net": "550 5.1.1 <gone@example.net> unknown"}))
    pipeline.configure(SMTP_CONNECTION_URI=server.uri(SMTP_USER), SMTP_PASSWORD=SMTP_PASSWORD)
    pipeline.start_bridge()
    secret_text = "the-body-text-must-not-be-logged"
    pipeline.send("ok", {"to": ["Ada <ada@example.com>", "gone@example.net"],
                         "message": {"subject": "Subject-not-logged", "text": secret_text}})
    pipeline.send("only-gone", {"to": "gone@example.net", "message": {"subject": "s", "text": secret_text}})
    pipeline.send("invalid", {"to": "bob@@example.org", "message": {"subject": "s", "text": secret_text}})

    # The function logs each outcome just after writing it, so the test may see a document settle a
    # moment before its log line: wait for the three outcome lines.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
        if sum(entry.get("state") in ("SUCCESS", "ERROR") for entry in lines) >= 3:
            break
        time.sleep(0.02)
    for entry in lines:
        assert entry["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert isinstance(entry["message"], str)
    text = log_stream.getvalue()
    for forbidden in ("ada@example.com", "gone@example.net", "bob@@example.org", secret_text, "Subject-not-logged",
                      SMTP_PASSWORD, SMTP_USER + ":"):
        assert forbidden not in text, forbidden

    by_doc = {}
    for entry in lines:
        by_doc.setdefault(entry.get("document", "").rsplit("/", 1)[-1], []).append(entry)
    sent = next(e for e in by_doc["ok"] if e["message"] == "sent")
    assert sent["state"] == "SUCCESS" and sent["attempt"] == 1
    assert sent["messageId"].startswith("<") and sent["recipientDomains"] == ["example.com", "example.net"]
    failed = next(e for e in by_doc["only-gone"] if e["message"] == "not sent")
    assert failed["state"] == "ERROR" and failed["smtpCode"] == 550 and failed["severity"] == "WARNING"
    refused = next(e for e in by_doc["invalid"] if e["message"].startswith("refused"))
    assert refused["message"] == "refused: invalid to" and refused["state"] == "ERROR"
