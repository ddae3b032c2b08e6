"""End to end: a document lands in the emulator, Eventarc-shaped events reach the function through
functions-framework, a real SMTP server (STARTTLS + AUTH) receives the mail, the status is written back."""

from __future__ import annotations

import base64
import threading
from datetime import timedelta
from email import message_from_bytes, policy

import pytest

from local.eventarc import binary_event
from tests.support.smtp import Behaviour

from .conftest import CREATED, SMTP_PASSWORD, SMTP_USER, WRITTEN, post_event

HELLO = {"to": "Ada Lovelace <ada@example.com>", "message": {"subject": "Hello ✓", "text": "plain body", "html": "<p>html body</p>"}}


@pytest.fixture
def inbox(smtp_server):
    """A STARTTLS-required, AUTH-required SMTP server that accepts everything."""
    return smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})


def use(pipeline, server, **options):
    pipeline.configure(SMTP_CONNECTION_URI=server.uri(SMTP_USER, **options), SMTP_PASSWORD=SMTP_PASSWORD)


def created_event(pipeline, doc_id: str, data: dict) -> tuple[dict[str, str], bytes]:
    """Create the document and capture, from the emulator's change feed, the event Eventarc would send."""
    path = f"{pipeline.collection}/{doc_id}"
    with pipeline.emulator.changes() as feed:
        pipeline.doc(doc_id).create(data)
        change = next(c for c in feed if c["path"] == path)
    return binary_event(CREATED, project=pipeline.emulator.project, database="(default)", path=path, old=None,
                        new=change["new"])


def test_a_document_becomes_an_email_and_a_success_record(pipeline, inbox):
    use(pipeline, inbox)
    pipeline.start_bridge()
    delivery = pipeline.send("hello", HELLO)

    assert delivery["state"] == "SUCCESS", delivery
    assert delivery["attempts"] == 1 and delivery["error"] is None
    assert delivery["leaseExpireTime"] is None
    assert delivery["startTime"] <= delivery["endTime"]
    assert delivery["info"]["accepted"] == ["ada@example.com"]
    assert delivery["info"]["rejected"] == [] and delivery["info"]["pending"] == []
    assert delivery["info"]["response"].startswith("250")
    assert "expireAt" not in delivery  # TTL not configured

    (received,) = inbox.messages
    assert received.mail_from == "noreply@example.com"
    assert received.rcpt_tos == ["ada@example.com"]
    message = message_from_bytes(received.content, policy=policy.default)
    assert message["Subject"] == "Hello ✓"
    assert message["Message-ID"] == delivery["info"]["messageId"]
    assert message["To"].addresses[0].display_name == "Ada Lovelace"
    assert message.get_body(("plain",)).get_content().strip() == "plain body"
    assert message.get_body(("html",)).get_content().strip() == "<p>html body</p>"


def test_one_invocation_two_writes_and_no_reads_per_email(pipeline, inbox):
    use(pipeline, inbox)
    pipeline.start_bridge()
    pipeline.emulator.reset_stats()
    pipeline.doc("cost").create(HELLO)
    # Settle through the feed, not by polling the document: polling would count as reads.
    pipeline.wait_seen("cost", 3)  # the app's create, the claim, the outcome
    stats = pipeline.emulator.stats()
    path = f"{pipeline.collection}/cost"
    assert pipeline.bridge.invocations[path] == 1  # the function's own writes trigger nothing
    assert stats["writesByDocument"][path] == 3  # 1 by the app + 2 by the function
    assert stats["readsByDocument"].get(path, 0) == 0
    assert pipeline.doc("cost").get().get("delivery.state") == "SUCCESS"
    assert len(inbox.messages) == 1


def test_an_invalid_document_gets_one_error_write_and_nothing_is_sent(pipeline, inbox):
    use(pipeline, inbox)
    pipeline.start_bridge()
    pipeline.emulator.reset_stats()
    pipeline.doc("bad").create({"to": ["ok@example.com", "not-an-address"], "message": {"subject": "s", "text": "t"}})
    pipeline.wait_seen("bad", 2)
    assert pipeline.emulator.stats()["writesByDocument"][f"{pipeline.collection}/bad"] == 2
    delivery = pipeline.wait_for("bad")
    assert delivery["state"] == "ERROR"
    assert delivery["error"].startswith("to[1]:")
    assert delivery["attempts"] == 1
    assert inbox.messages == []


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"message": {"subject": "s", "text": "t"}}, "to"),
        ({"to": "a@example.com"}, "message"),
        ({"to": "a@example.com", "message": {"subject": "s", "text": "t", "attachments": [{"path": "/etc/passwd"}]}},
         "message.attachments[0].path"),
        ({"to": "a@example.com", "message": {"subject": "s", "text": "t", "attachments": [{"href": "http://169.254.169.254/"}]}},
         "message.attachments[0].href"),
        ({"to": "a@example.com\r\nBcc: victim@example.org", "message": {"subject": "s", "text": "t"}}, "to"),
        ({"to": "a@example.com", "headers": {"X-Tag": "a\r\nBcc: victim@example.org"}, "message": {"subject": "s", "text": "t"}},
         "headers.X-Tag"),
        ({"to": "a@example.com", "template": {"name": "welcome"}}, "template"),
    ],
)
def test_refusals_name_the_field(pipeline, inbox, data, field):
    use(pipeline, inbox)
    pipeline.start_bridge()
    delivery = pipeline.send("refused", data)
    assert delivery["state"] == "ERROR"
    assert delivery["error"].split(":", 1)[0] == field, delivery["error"]
    assert "\n" not in delivery["error"]
    assert inbox.messages == []


def test_oversize_messages_are_refused(pipeline, inbox):
    use(pipeline, inbox)
    pipeline.configure(MAX_MESSAGE_BYTES="2000")
    pipeline.start_bridge()
    data = {"to": "a@example.com", "message": {"subject": "big", "text": "x" * 5000}}
    delivery = pipeline.send("big", data)
    assert delivery["state"] == "ERROR" and "MAX_MESSAGE_BYTES" in delivery["error"]
    assert inbox.messages == []


def test_the_same_event_delivered_twice_sends_once(pipeline, inbox):
    use(pipeline, inbox)
    headers, body = created_event(pipeline, "twice", HELLO)
    assert post_event(pipeline.app, headers, body) == 200
    assert post_event(pipeline.app, headers, body) == 200
    assert len(inbox.messages) == 1
    delivery = pipeline.wait_for("twice")
    assert delivery["state"] == "SUCCESS" and delivery["attempts"] == 1


def test_concurrent_deliveries_of_one_event_send_once(pipeline, smtp_server):
    # A slow server keeps the first attempt in flight while the others try to claim.
    server = smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD}, behaviour=Behaviour(slow_reply_at="DATA", slow_reply_seconds=0.3))
    use(pipeline, server)
    headers, body = created_event(pipeline, "race", HELLO)
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def deliver() -> None:
        barrier.wait()
        statuses.append(post_event(pipeline.app, headers, body))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    assert len(server.messages) == 1
    delivery = pipeline.wait_for("race")
    assert delivery["state"] == "SUCCESS" and delivery["attempts"] == 1


def test_a_document_changed_before_the_claim_is_sent_once_as_it_now_is(pipeline, inbox):
    use(pipeline, inbox)
    headers, body = created_event(pipeline, "edited", HELLO)
    pipeline.doc("edited").update({"message.subject": "Edited subject"})
    assert post_event(pipeline.app, headers, body) == 200
    assert post_event(pipeline.app, headers, body) == 200
    (received,) = inbox.messages
    assert message_from_bytes(received.content, policy=policy.default)["Subject"] == "Edited subject"


@pytest.mark.parametrize(
    ("behaviour", "state", "error_part"),
    [
        (Behaviour(rcpt_replies={"ada@example.com": "451 4.3.0 Try again later"}), "RETRY", "451"),
        (Behaviour(data_reply="451 4.7.1 Greylisted"), "RETRY", "451"),
        (Behaviour(close_with_421_at="DATA"), "RETRY", "421"),
        (Behaviour(data_reply="554 5.7.1 Rejected as spam"), "ERROR", "554"),
        (Behaviour(rcpt_replies={"ada@example.com": "550 5.1.1 No such user"}), "ERROR", "550"),
        (Behaviour(drop_during_data=True), "RETRY", "DATA"),
    ],
)
def test_smtp_failures_are_told_apart(pipeline, smtp_server, behaviour, state, error_part):
    server = smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD}, behaviour=behaviour)
    use(pipeline, server)
    pipeline.start_bridge()
    delivery = pipeline.send("failing", HELLO)
    assert delivery["state"] == state, delivery
    assert error_part in delivery["error"]
    assert delivery["leaseExpireTime"] is None and delivery["attempts"] == 1


def test_a_slow_server_times_out_into_retry(pipeline, smtp_server):
    server = smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD}, behaviour=Behaviour(slow_reply_at="DATA", slow_reply_seconds=2.0))
    use(pipeline, server, socketTimeout="500")
    pipeline.start_bridge()
    delivery = pipeline.send("slow", HELLO)
    assert delivery["state"] == "RETRY" and "timed out" in delivery["error"]


def test_partial_rejection_is_success_with_the_rejections_listed(pipeline, smtp_server):
    server = smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD},
                         behaviour=Behaviour(rcpt_replies={"gone@example.com": "550 5.1.1 No such user"}))
    use(pipeline, server)
    pipeline.start_bridge()
    data = {**HELLO, "to": ["ada@example.com", "gone@example.com"], "bcc": "audit@example.org"}
    delivery = pipeline.send("partial", data)
    assert delivery["state"] == "SUCCESS"
    assert delivery["info"]["accepted"] == ["ada@example.com", "audit@example.org"]
    assert delivery["info"]["rejected"] == ["gone@example.com"]
    (received,) = server.messages
    assert "Bcc" not in message_from_bytes(received.content, policy=policy.default)


def test_a_wrong_password_is_an_error_that_does_not_show_the_password(pipeline, inbox):
    pipeline.configure(SMTP_CONNECTION_URI=inbox.uri(SMTP_USER), SMTP_PASSWORD="wrong-Pa55-zebra")
    pipeline.start_bridge()
    delivery = pipeline.send("wrongpass", HELLO)
    assert delivery["state"] == "ERROR" and "535" in delivery["error"]
    assert "wrong-Pa55-zebra" not in str(delivery)


def test_a_bad_uri_fails_its_documents_clearly_and_does_not_poison_the_instance(pipeline, inbox):
    pipeline.configure(SMTP_CONNECTION_URI="smtp://user@:notaport", SMTP_PASSWORD=SMTP_PASSWORD)
    pipeline.start_bridge()
    first = pipeline.send("bad-uri-1", HELLO)
    second = pipeline.send("bad-uri-2", HELLO)
    for delivery in (first, second):
        assert delivery["state"] == "ERROR"
        assert delivery["error"].startswith("function configuration: SMTP_CONNECTION_URI")
    use(pipeline, inbox)
    assert pipeline.send("good-uri", HELLO)["state"] == "SUCCESS"
    assert len(inbox.messages) == 1


def test_missing_uri_is_an_error_naming_the_variable(pipeline):
    pipeline.start_bridge()
    delivery = pipeline.send("no-uri", HELLO)
    assert delivery["state"] == "ERROR"
    assert delivery["error"] == "function configuration: SMTP_CONNECTION_URI is not set"


def test_ttl_sets_expire_at_on_final_states(pipeline, inbox):
    use(pipeline, inbox)
    pipeline.configure(TTL_EXPIRE_TYPE="day", TTL_EXPIRE_VALUE="2")
    pipeline.start_bridge()
    delivery = pipeline.send("ttl", HELLO)
    assert delivery["expireAt"] - delivery["endTime"] == timedelta(days=2)


def test_inline_attachments_arrive_intact(pipeline, inbox):
    use(pipeline, inbox)
    pipeline.start_bridge()
    payload = bytes(range(256))
    data = {"to": "a@example.com", "message": {"subject": "files", "text": "see attached", "attachments": [
        {"filename": "data.bin", "content": base64.b64encode(payload).decode(), "encoding": "base64"},
        {"filename": "notes.txt", "content": "hello notes"},
    ]}}
    assert pipeline.send("files", data)["state"] == "SUCCESS"
    message = message_from_bytes(inbox.messages[0].content, policy=policy.default)
    parts = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
    assert parts["data.bin"] == payload
    assert parts["notes.txt"].strip() == "hello notes"


def test_a_clients_retry_request_is_honoured_by_a_written_trigger_but_not_by_the_deployed_created_one(
    pipeline, smtp_server, inbox
):
    rejecting = smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD},
                            behaviour=Behaviour(data_reply="554 5.7.1 Rejected"))
    use(pipeline, rejecting)
    pipeline.start_bridge(CREATED)
    assert pipeline.send("again", HELLO)["state"] == "ERROR"
    use(pipeline, inbox)
    pipeline.doc("again").update({"delivery.state": "RETRY"})
    pipeline.wait_seen("again", 4)
    assert pipeline.bridge.invocations[f"{pipeline.collection}/again"] == 1
    assert inbox.messages == []  # honoured by the next sweep, not at once

    pipeline.bridge.stop()
    pipeline.start_bridge(WRITTEN)
    pipeline.doc("again").update({"delivery.state": "ERROR"})
    pipeline.doc("again").update({"delivery.state": "RETRY"})
    delivery = pipeline.wait_for("again", states={"SUCCESS"})
    assert delivery["attempts"] == 2
    assert len(inbox.messages) == 1


def test_an_unreadable_event_is_acknowledged_without_a_write(pipeline, inbox):
    use(pipeline, inbox)
    pipeline.emulator.reset_stats()
    headers, _ = binary_event(CREATED, project="demo-mailer", database="(default)", path="mail/x", old=None, new=None)
    assert post_event(pipeline.app, headers, b"\xff\xfe not protobuf") == 200
    assert pipeline.emulator.stats()["writes"] == 0
