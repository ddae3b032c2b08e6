"""What the delivery record lists stays bounded whatever the recipient count (issue 13): the first
INFO_LIST_LIMIT addresses of each list, the counts, and digests so a retry still skips everyone who
accepted. End to end against the Firestore emulator and aiosmtpd; copies are counted at the server."""

from __future__ import annotations

from collections import Counter

import pytest

from mailer import delivery
from mailer.prepare import MAX_RECIPIENTS
from tests.support.smtp import Behaviour

from .conftest import SMTP_PASSWORD, SMTP_USER
from .test_sweep import sweep_when_due

LIMIT = delivery.INFO_LIST_LIMIT


def addresses(count: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{n}@example.com" for n in range(count)]


def test_a_long_list_is_written_capped_with_its_count_and_read_back_whole():
    many = addresses(5000)
    info = delivery.Info("<m@x>", accepted=many, rejected=["gone@example.com"], pending=addresses(300, "p"))
    written = info.as_map()
    assert written["accepted"] == many[:LIMIT] and written["acceptedCount"] == 5000
    assert len(written["acceptedDigest"]) == 5000 * delivery.DIGEST_BYTES
    assert written["rejected"] == ["gone@example.com"] and written["rejectedCount"] == 1
    assert "rejectedDigest" not in written  # a short list is complete by itself
    assert written["pending"] == addresses(LIMIT, "p") and written["pendingCount"] == 300
    assert "pendingDigest" not in written  # pending recipients are owed anyway

    carried = delivery.carried_info({"messageId": "<m@x>", "state": "RETRY", "info": written})
    assert len(carried.accepted) == 5000
    owed = delivery.owed_recipients([*many, "gone@example.com", "new@example.com"], carried)
    assert owed == ["new@example.com"]


def test_counts_stay_true_across_attempts_and_digests_go_once_nothing_more_is_owed():
    first = delivery.merged_info(delivery.Info("<m@x>"), "<m@x>", accepted=addresses(100), pending=addresses(20, "p"))
    carried = delivery.carried_info({"messageId": "<m@x>", "state": "RETRY", "info": first.as_map()})
    second = delivery.merged_info(carried, "<m@x>", accepted=addresses(20, "p"))
    assert len(second.accepted) == 120 and not second.pending
    done = delivery.finish({"state": "PROCESSING"}, delivery.SUCCESS, None, info=second)
    assert done["info"]["acceptedCount"] == 120 and len(done["info"]["accepted"]) == LIMIT
    assert "acceptedDigest" not in done["info"]
    failed = delivery.finish({"state": "PROCESSING"}, delivery.ERROR, None, info=second)
    assert len(failed["info"]["acceptedDigest"]) == 120 * delivery.DIGEST_BYTES  # a client's RETRY still skips them


def test_a_records_short_lists_read_as_before():
    """Records written before counts existed (or by the extension) have only lists."""
    carried = delivery.carried_info({"messageId": "<m@x>", "state": "RETRY",
                                     "info": {"accepted": ["a@example.com"], "rejected": [], "pending": ["b@example.com"]}})
    assert len(carried.accepted) == 1 and "a@example.com" in carried.accepted
    assert delivery.owed_recipients(["a@example.com", "b@example.com"], carried) == ["b@example.com"]


@pytest.fixture
def line(pipeline, smtp_server):
    server = smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})
    pipeline.configure(SMTP_CONNECTION_URI=server.uri(SMTP_USER), SMTP_PASSWORD=SMTP_PASSWORD,
                       RETRY_BACKOFF_SECONDS="1", RETRY_BACKOFF_MAX_SECONDS="2", MAX_ATTEMPTS="3")
    pipeline.start_bridge()
    return pipeline, server


def test_thousands_of_bcc_recipients_leave_a_small_record_and_each_gets_one_copy(line):
    pipeline, server = line
    bcc = addresses(3000)
    busy = bcc[::10]  # 300 mailboxes refuse for now
    server.behaviour = Behaviour(rcpt_replies={address: "450 4.2.0 Mailbox busy" for address in busy})
    first = pipeline.send("crowd", {"to": "list@example.com", "bcc": bcc, "message": {"subject": "All", "text": "hi"}})
    assert first["state"] == "RETRY", first["error"]
    info = first["info"]
    assert info["acceptedCount"] == 1 + 3000 - 300 and len(info["accepted"]) == LIMIT
    assert info["pendingCount"] == 300 and info["pending"] == busy[:LIMIT]
    assert len(info["acceptedDigest"]) == info["acceptedCount"] * delivery.DIGEST_BYTES
    stored = pipeline.doc("crowd").get().to_dict()
    # The record's share of the document: capped lists + 8 bytes per recipient, far from 1 MiB.
    assert _size(stored["delivery"]) < 40_000, _size(stored["delivery"])

    server.behaviour = Behaviour()
    second = sweep_when_due(pipeline, "crowd")
    assert second["state"] == "SUCCESS" and second["attempts"] == 2, second["error"]
    assert second["info"]["acceptedCount"] == 3001 and second["info"]["pendingCount"] == 0
    assert "acceptedDigest" not in second["info"]
    copies = Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)
    assert copies == Counter(["list@example.com", *bcc])  # every recipient exactly once
    assert server.messages[-1].rcpt_tos == busy  # the retry went to the 300 alone


def test_more_recipients_than_the_limit_are_refused_naming_the_field(line):
    pipeline, server = line
    record = pipeline.send("too-many", {"to": "a@example.com", "bcc": addresses(MAX_RECIPIENTS),
                                        "message": {"subject": "All", "text": "hi"}})
    assert record["state"] == "ERROR"
    assert record["error"].startswith(f"bcc: {MAX_RECIPIENTS + 1} recipients in to, cc, bcc together; at most {MAX_RECIPIENTS}")
    assert server.messages == []


def _size(value) -> int:
    """Firestore's storage size of a value (strings and bytes: length + 1; maps: keys + values)."""
    if isinstance(value, dict):
        return sum(len(key.encode()) + 1 + _size(item) for key, item in value.items())
    if isinstance(value, list):
        return sum(_size(item) for item in value)
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, bytes):
        return len(value) + 1
    return 8
