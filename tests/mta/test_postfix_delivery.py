"""Documents become mail that Postfix really queues and delivers into its Maildirs, over STARTTLS
with Cyrus SASL AUTH; the delivery record carries Postfix's own replies."""

from __future__ import annotations

import base64
import re

from tests.support.postfix import POSTFIX_PASSWORD, RECIPIENT_LIMIT, UNKNOWN_RECIPIENT, PostfixServer

from .conftest import use_postfix

QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$")
CSV = b"name,score\nada,10\n"


def test_a_full_document_is_delivered_through_postfix(postfix_pipeline, postfix_server: PostfixServer):
    data = {
        "to": "Ada Lovelace <ada@example.com>",
        "cc": ["grace@example.com"],
        "message": {
            "subject": "Quarterly report ✓",
            "text": "plain body",
            "html": "<p>html body</p>",
            "attachments": [{"filename": "report.csv", "content": base64.b64encode(CSV).decode(),
                             "encoding": "base64", "contentType": "text/csv"}],
        },
    }
    delivery = postfix_pipeline.send("full", data)

    assert delivery["state"] == "SUCCESS", delivery
    assert delivery["error"] is None
    info = delivery["info"]
    assert QUEUED.match(info["response"]), info["response"]
    assert sorted(info["accepted"]) == ["ada@example.com", "grace@example.com"]
    assert info["rejected"] == [] and info["pending"] == []
    queue_id = info["response"].rsplit(" ", 1)[1]
    assert any(f"{queue_id}: client=" in line and "sasl_username=mailer@example.com" in line
               for line in postfix_server.log_lines())  # the queued message came in authenticated

    for mailbox in ("ada@example.com", "grace@example.com"):
        message = postfix_server.wait_for_message(mailbox, info["messageId"])
        assert message["Subject"] == "Quarterly report ✓"
        assert message["Delivered-To"] == mailbox
        assert message["Cc"] == "grace@example.com"
        assert message.get_body(("plain",)).get_content().strip() == "plain body"
        assert message.get_body(("html",)).get_content().strip() == "<p>html body</p>"
        (attachment,) = list(message.iter_attachments())
        assert attachment.get_filename() == "report.csv"
        assert attachment.get_content_type() == "text/csv"
        assert attachment.get_payload(decode=True) == CSV
        # Postfix's own Received header: TLS was used and the client authenticated (ESMTPSA, RFC 3848).
        assert "using TLS" in message["Received"] and "with ESMTPSA" in message["Received"], message["Received"]


def test_a_wrong_password_is_postfixs_535_and_never_shown(pipeline, postfix_server: PostfixServer):
    wrong = "Wrong-pf-Password-42"
    use_postfix(pipeline, postfix_server, password=wrong)
    pipeline.start_bridge()
    delivery = pipeline.send("wrong-password", {"to": "ada@example.com", "message": {"subject": "s", "text": "t"}})

    assert delivery["state"] == "ERROR", delivery
    assert delivery["error"].startswith("SMTP 535 5.7.8 Error: authentication failed"), delivery["error"]
    assert wrong not in delivery["error"] and POSTFIX_PASSWORD not in delivery["error"]
    assert "\n" not in delivery["error"]


def test_a_recipient_postfix_rejects_at_rcpt_is_listed_and_the_rest_delivered(postfix_pipeline, postfix_server):
    data = {"to": ["alan@example.com", UNKNOWN_RECIPIENT], "message": {"subject": "partly", "text": "t"}}
    delivery = postfix_pipeline.send("partial", data)

    assert delivery["state"] == "SUCCESS", delivery
    info = delivery["info"]
    assert info["accepted"] == ["alan@example.com"]
    assert info["rejected"] == [UNKNOWN_RECIPIENT]
    assert QUEUED.match(info["response"]), info["response"]
    assert any(f"550 5.1.1 <{UNKNOWN_RECIPIENT}>: Recipient address rejected: User unknown" in line
               for line in postfix_server.log_lines())
    message = postfix_server.wait_for_message("alan@example.com", info["messageId"])
    assert message["Subject"] == "partly"


def test_a_non_ascii_mailbox_is_reached_with_smtputf8(postfix_pipeline, postfix_server):
    data = {"to": "Jörg <jörg@example.com>", "message": {"subject": "Grüße", "text": "Hallo Jörg"}}
    delivery = postfix_pipeline.send("utf8", data)

    assert delivery["state"] == "SUCCESS", delivery
    info = delivery["info"]
    assert info["accepted"] == ["jörg@example.com"]
    message = postfix_server.wait_for_message("jörg@example.com", info["messageId"])
    assert message["Subject"] == "Grüße"
    assert message["To"].addresses[0].addr_spec == "jörg@example.com"
    # Postfix refuses a non-ASCII address unless MAIL FROM declared SMTPUTF8 ("553 5.6.7 Must declare
    # SMTPUTF8"), so getting here means the envelope used it; virtual(8) names the recipient as given.
    assert message["Delivered-To"] == "jörg@example.com"


def test_more_recipients_than_postfix_takes_per_transaction_are_all_delivered(postfix_pipeline, postfix_server: PostfixServer):
    # Postfix answers the RCPT beyond smtpd_recipient_limit with "452 4.5.3 Error: too many recipients";
    # the rest go in a further transaction on the same connection, with the same message.
    recipients = ["ada@example.com", "grace@example.com", "alan@example.com"]
    assert len(recipients) > RECIPIENT_LIMIT
    delivery = postfix_pipeline.send("many", {"to": recipients, "message": {"subject": "To all", "text": "t"}})
    assert delivery["state"] == "SUCCESS", delivery
    assert sorted(delivery["info"]["accepted"]) == sorted(recipients)
    assert delivery["info"]["pending"] == [] and delivery["attempts"] == 1
    # Two transactions: Postfix's cleanup logs each queued message's Message-ID once.
    queued = [line for line in postfix_server.log_lines() if f"message-id={delivery['messageId']}" in line]
    assert len(queued) == 2, queued
    for mailbox in recipients:
        message = postfix_server.wait_for_message(mailbox, delivery["messageId"])
        assert message["Subject"] == "To all"
        assert len([m for m in postfix_server.messages(mailbox) if m["Message-ID"] == delivery["messageId"]]) == 1
