"""The delivery state machine end to end: the trigger's first attempt, then the sweep (posted to the
deployed `sweep_mail` entry point as Eventarc posts a Pub/Sub message) retrying with backoff, sending
scheduled documents, honouring clients' requests and taking over attempts that died. Real Firestore
emulator, real SMTP server; duplicates are counted at the server."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from tests.support.smtp import Behaviour

from .conftest import SMTP_PASSWORD, SMTP_USER

MAIL = {"to": "ada@example.com", "message": {"subject": "Retry me", "text": "body"}}
GREYLISTED = Behaviour(data_reply="451 4.7.1 Greylisted, try again later")


@pytest.fixture
def server(smtp_server):
    return smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})


@pytest.fixture
def quiet(pipeline, server):
    """The pipeline with fast retries (1 s base, 2 s cap, 3 attempts) and no trigger: only the sweep acts."""
    pipeline.configure(SMTP_CONNECTION_URI=server.uri(SMTP_USER), SMTP_PASSWORD=SMTP_PASSWORD,
                       RETRY_BACKOFF_SECONDS="1", RETRY_BACKOFF_MAX_SECONDS="2", MAX_ATTEMPTS="3")
    return pipeline


@pytest.fixture
def line(quiet):
    """The same with the Firestore trigger delivering "created" events."""
    quiet.start_bridge()
    return quiet


def now() -> datetime:
    return datetime.now(timezone.utc)


def wait_until(moment: datetime) -> None:
    delay = (moment - now()).total_seconds()
    if delay > 0:
        time.sleep(delay + 0.05)


def sweep_when_due(line, doc_id: str) -> dict:
    """Wait for the document's next attempt time, run one sweep, return the delivery it left."""
    record = line.doc(doc_id).get().get("delivery")
    wait_until(record["nextAttemptTime"])
    assert line.sweep() == 200
    return line.doc(doc_id).get().get("delivery")


def message_ids(server) -> Counter[str]:
    return Counter(message.message["Message-ID"] for message in server.messages)


def test_a_transient_failure_is_retried_by_the_sweep_and_sent_once_with_the_same_message_id(line, server):
    server.behaviour = GREYLISTED
    first = line.send("greylisted", MAIL)
    assert first["state"] == "RETRY" and first["attempts"] == 1
    assert first["error"].startswith("SMTP 451")
    # The next attempt's time is visible, and never later than the schedule (1 s after attempt 1).
    assert first["endTime"] < first["nextAttemptTime"] <= first["endTime"] + timedelta(seconds=1)
    assert first["info"]["pending"] == ["ada@example.com"]

    server.behaviour = Behaviour()
    second = sweep_when_due(line, "greylisted")
    assert second["state"] == "SUCCESS" and second["attempts"] == 2, second
    assert second["nextAttemptTime"] is None and second["error"] is None
    assert second["info"]["accepted"] == ["ada@example.com"] and second["info"]["pending"] == []
    assert [entry["attempt"] for entry in second["attemptHistory"]] == [1]
    (received,) = server.messages
    assert received.message["Message-ID"] == first["messageId"] == second["messageId"] == second["info"]["messageId"]


def test_after_max_attempts_the_document_ends_in_error_with_its_history(line, server):
    server.behaviour = GREYLISTED
    record = line.send("hopeless", MAIL)
    schedule = [(record["endTime"], record["nextAttemptTime"])]
    while record["state"] == "RETRY":
        record = sweep_when_due(line, "hopeless")
        if record["state"] == "RETRY":
            schedule.append((record["endTime"], record["nextAttemptTime"]))
    assert record["state"] == "ERROR" and record["attempts"] == 3
    assert record["error"].startswith("gave up after 3 attempts; last: SMTP 451")
    assert record["nextAttemptTime"] is None
    assert [entry["attempt"] for entry in record["attemptHistory"]] == [1, 2, 3]
    assert all(entry["error"].startswith("SMTP 451") for entry in record["attemptHistory"])
    # Backoff: after attempt k the wait is at most min(cap, base * 2^(k-1)) = 1 s, then 2 s.
    for k, (ended, due) in enumerate(schedule, start=1):
        assert timedelta(0) < due - ended <= timedelta(seconds=min(2, 2 ** (k - 1)))
    assert server.messages == []


def test_a_sweep_before_the_next_attempt_time_leaves_the_document_alone(line, server):
    server.behaviour = GREYLISTED
    line.configure(RETRY_BACKOFF_SECONDS="30", RETRY_BACKOFF_MAX_SECONDS="60")
    line.send("later", MAIL)
    server.behaviour = Behaviour()
    assert line.sweep() == 200
    record = line.doc("later").get().get("delivery")
    assert record["state"] == "RETRY" and record["attempts"] == 1
    assert server.messages == []


def test_a_future_send_at_is_scheduled_not_sent_and_the_sweep_sends_it_after_its_time(line, server):
    send_at = now() + timedelta(seconds=2)
    line.doc("later").create({**MAIL, "sendAt": send_at})
    record = line.wait_for("later", states={"PENDING"})
    assert record["nextAttemptTime"] == send_at.replace(microsecond=send_at.microsecond)
    assert record["attempts"] == 0
    assert line.sweep() == 200  # too early: nothing happens
    assert line.doc("later").get().get("delivery.state") == "PENDING"
    assert server.messages == []

    wait_until(send_at)
    assert line.sweep() == 200
    record = line.doc("later").get().get("delivery")
    assert record["state"] == "SUCCESS" and record["attempts"] == 1
    assert record["startTime"] >= send_at
    assert len(server.messages) == 1


def test_an_iso_send_at_in_the_past_sends_at_once(line, server):
    record = line.send("past", {**MAIL, "sendAt": "2020-01-01T00:00:00+02:00"})
    assert record["state"] == "SUCCESS" and len(server.messages) == 1


def test_an_unreadable_send_at_is_an_error_naming_the_field(line, server):
    record = line.send("garbled", {**MAIL, "sendAt": "next tuesday"})
    assert record["state"] == "ERROR" and record["error"].startswith("sendAt: ")
    assert server.messages == []


def test_a_clients_retry_of_an_error_gets_one_more_attempt_in_the_same_delivery(line, server):
    server.behaviour = Behaviour(data_reply="554 5.7.1 Rejected")
    failed = line.send("asked", MAIL)
    assert failed["state"] == "ERROR" and failed["attempts"] == 1
    server.behaviour = Behaviour()
    line.doc("asked").update({"delivery.state": "RETRY"})  # what an app writes
    assert line.sweep() == 200
    record = line.doc("asked").get().get("delivery")
    assert record["state"] == "SUCCESS" and record["attempts"] == 2
    (received,) = server.messages
    assert received.message["Message-ID"] == failed["messageId"]


def test_a_clients_resend_of_a_success_is_a_new_delivery_with_a_new_message_id(line, server):
    first = line.send("again", MAIL)
    line.doc("again").update({"delivery.state": "PENDING"})
    assert line.sweep() == 200
    second = line.doc("again").get().get("delivery")
    assert second["state"] == "SUCCESS" and second["attempts"] == 2
    assert second["messageId"] != first["messageId"]
    assert list(message_ids(server).values()) == [1, 1]


def _processing(line, doc_id: str, lease: timedelta, attempts: int = 1, message_id: str = "<lost-1@example.com>") -> None:
    """A document whose attempt died mid-send: PROCESSING with a lease, as the claim left it."""
    moment = now()
    line.doc(doc_id).set({**MAIL, "delivery": {
        "state": "PROCESSING", "attempts": attempts, "startTime": moment, "endTime": None,
        "leaseExpireTime": moment + lease, "nextAttemptTime": None, "error": None, "info": None,
        "messageId": message_id, "attemptHistory": [], "outcomeUnknown": False}})


def test_a_lapsed_lease_is_taken_over_and_counted_as_an_attempt(quiet, server):
    _processing(quiet, "crashed", lease=timedelta(seconds=-1))
    _processing(quiet, "running", lease=timedelta(minutes=5))
    assert quiet.sweep() == 200
    taken = quiet.doc("crashed").get().get("delivery")
    assert taken["state"] == "SUCCESS" and taken["attempts"] == 2
    assert taken["outcomeUnknown"] is True  # the dead attempt may have sent it: receivers see one Message-ID
    (lost,) = taken["attemptHistory"]
    assert lost["attempt"] == 1 and "lease lapsed" in lost["error"] and lost["outcomeUnknown"] is True
    (received,) = server.messages
    assert received.message["Message-ID"] == "<lost-1@example.com>"
    assert quiet.doc("running").get().get("delivery.state") == "PROCESSING"  # a live lease is left alone


def test_a_lapsed_lease_on_the_last_attempt_ends_in_error(quiet, server):
    _processing(quiet, "exhausted", lease=timedelta(seconds=-1), attempts=3)
    assert quiet.sweep() == 200
    record = quiet.doc("exhausted").get().get("delivery")
    assert record["state"] == "ERROR" and record["attempts"] == 3
    assert record["error"].startswith("gave up after 3 attempts")
    assert server.messages == []


def test_at_most_once_never_resends_an_attempt_whose_outcome_is_unknown(quiet, server):
    quiet.configure(DELIVERY_GUARANTEE="at-most-once")
    _processing(quiet, "unknown", lease=timedelta(seconds=-1))
    assert quiet.sweep() == 200
    record = quiet.doc("unknown").get().get("delivery")
    assert record["state"] == "ERROR" and "unknown" in record["error"] and "at-most-once" in record["error"]
    assert server.messages == []


def test_a_temporarily_refused_recipient_is_retried_alone(line, server):
    server.behaviour = Behaviour(rcpt_replies={"bob@example.com": "450 4.2.0 Mailbox busy"})
    first = line.send("two", {**MAIL, "to": ["ada@example.com", "bob@example.com"]})
    assert first["state"] == "RETRY", first
    assert first["info"]["accepted"] == ["ada@example.com"] and first["info"]["pending"] == ["bob@example.com"]
    server.behaviour = Behaviour()
    second = sweep_when_due(line, "two")
    assert second["state"] == "SUCCESS" and second["attempts"] == 2
    assert second["info"]["accepted"] == ["ada@example.com", "bob@example.com"] and second["info"]["pending"] == []
    assert [m.rcpt_tos for m in server.messages] == [["ada@example.com"], ["bob@example.com"]]
    assert len(set(message_ids(server))) == 1


def test_overlapping_sweeps_and_the_trigger_send_each_document_once(line, server):
    server.behaviour = GREYLISTED
    ids = [f"burst-{n}" for n in range(12)]
    for doc_id in ids:
        line.doc(doc_id).create(MAIL)
    for doc_id in ids:
        line.wait_for(doc_id)
    server.behaviour = Behaviour(slow_reply_at="DATA", slow_reply_seconds=0.05)
    wait_until(max(line.doc(d).get().get("delivery.nextAttemptTime") for d in ids))
    sweeps = [threading.Thread(target=line.sweep) for _ in range(3)]
    for sweep in sweeps:
        sweep.start()
    for sweep in sweeps:
        sweep.join(30)
    states = Counter(line.doc(d).get().get("delivery.state") for d in ids)
    assert states == Counter({"SUCCESS": len(ids)})
    assert len(server.messages) == len(ids)
    assert set(message_ids(server).values()) == {1}


def test_an_idle_sweep_costs_one_read_per_query_and_no_writes(line):
    line.emulator.reset_stats()
    assert line.sweep() == 200
    stats = line.emulator.stats()
    assert stats["reads"] == 3 and stats["writes"] == 0


def _due_documents(line, count: int) -> list[str]:
    """`count` documents waiting for a retry that is due now, written directly (as the function leaves them)."""
    moment = now() - timedelta(seconds=1)
    batch = line.client.batch()
    ids = [f"backlog-{n:04d}" for n in range(count)]
    for doc_id in ids:
        batch.set(line.doc(doc_id), {**MAIL, "delivery": {
            "state": "RETRY", "attempts": 1, "startTime": moment, "endTime": moment, "leaseExpireTime": None,
            "nextAttemptTime": moment, "error": "SMTP 451 later", "info": None, "messageId": None,
            "attemptHistory": [], "outcomeUnknown": False}})
    batch.commit()
    return ids


def test_a_backlog_larger_than_a_page_drains_in_one_sweep(quiet, server):
    from mailer.handler import Handler
    from mailer.status_store import client_for
    from mailer.sweep import PAGE_SIZE, Sweeper

    ids = _due_documents(quiet, PAGE_SIZE * 2 + 7)
    report = Sweeper(Handler(), client_for).run()
    assert report.outcomes == Counter({"SUCCESS": len(ids)}) and not report.out_of_time
    assert report.found == len(ids)
    assert len(server.messages) == len(ids) and set(message_ids(server).values()) == {1}


def test_a_sweep_out_of_budget_leaves_the_rest_for_the_next_one(quiet, server):
    from mailer.handler import Handler
    from mailer.status_store import client_for
    from mailer.sweep import Sweeper

    ids = _due_documents(quiet, 30)
    ticks = iter(range(1000))
    quiet.configure(SWEEP_BUDGET_SECONDS="1")
    # A clock that advances one second per reading: the budget is spent after the first page.
    first = Sweeper(Handler(), client_for, monotonic=lambda: float(next(ticks)), page_size=10).run()
    assert first.out_of_time and first.outcomes == Counter({"SUCCESS": 10})
    states = Counter(quiet.doc(d).get().get("delivery.state") for d in ids)
    assert states == Counter({"SUCCESS": 10, "RETRY": 20})
    second = Sweeper(Handler(), client_for, page_size=10).run()
    assert second.outcomes == Counter({"SUCCESS": 20}) and not second.out_of_time
    assert len(server.messages) == 30
