"""The fault suite: real peers misbehave (the SMTP server scripted, the Firestore emulator failing calls,
the function's process killed mid-send) and every document still ends SUCCESS or ERROR within a bound,
with exactly one copy at the server per SUCCESS, except where the outcome was unknown: there the copies
are counted and must carry the same Message-ID.

Bound, with the settings used here (1 s base, 2 s cap, 3 attempts, sweeps run back to back): a
document is final after at most 3 attempts and 1 + 2 s of backoff; a killed attempt adds its lease."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from local.bridge import TriggerBridge, http_deliverer
from local.function import start_function
from tests.support.smtp import Behaviour

from .conftest import CREATED, SMTP_PASSWORD, SMTP_USER

MAIL = {"to": ["ada@example.com", "bob@example.com"], "message": {"subject": "Faults", "text": "body"}}
FINAL = {"SUCCESS", "ERROR"}
BOUND_SECONDS = 20.0  # generous over the 3 s of backoff: shared 2-core machines stall


@pytest.fixture
def server(smtp_server):
    return smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})


def configure(pipeline, server, **extra):
    pipeline.configure(SMTP_CONNECTION_URI=server.uri(SMTP_USER, socketTimeout=1000), SMTP_PASSWORD=SMTP_PASSWORD,
                       RETRY_BACKOFF_SECONDS="1", RETRY_BACKOFF_MAX_SECONDS="2", MAX_ATTEMPTS="3", **extra)


def settle(pipeline, doc_ids, bound: float = BOUND_SECONDS) -> dict[str, dict]:
    """Run sweeps back to back until every document is final; fails if that takes longer than `bound`."""
    deadline = time.monotonic() + bound
    while True:
        records = {doc_id: (pipeline.doc(doc_id).get().to_dict() or {}).get("delivery") or {} for doc_id in doc_ids}
        if all(record.get("state") in FINAL for record in records.values()):
            return records
        stuck = {doc_id: record.get("state") for doc_id, record in records.items() if record.get("state") not in FINAL}
        assert time.monotonic() < deadline, f"not final within {bound:.0f} s: {stuck}"
        time.sleep(0.2)
        assert pipeline.sweep() == 200


def copies(server) -> Counter[str]:
    return Counter(message.message["Message-ID"] for message in server.messages)


def exactly_one_copy_per_success(server, records) -> None:
    sent = copies(server)
    for record in records.values():
        if record["state"] == "SUCCESS":
            assert sent[record["messageId"]] == 1, record
    assert sum(sent.values()) == sum(record["state"] == "SUCCESS" for record in records.values())


@pytest.mark.parametrize(
    ("fault", "first_error"),
    [
        (Behaviour(close_with_421_at="MAIL"), "SMTP 421"),
        (Behaviour(close_with_421_at="RCPT"), "SMTP 421"),
        (Behaviour(data_reply="451 4.3.0 Local error in processing"), "SMTP 451"),
        (Behaviour(slow_reply_at="RCPT", slow_reply_seconds=1.5), "timed out"),
        (Behaviour(slow_reply_at="EHLO", slow_reply_seconds=1.5), "timed out"),
        (Behaviour(rcpt_reply_default="452 4.3.1 Insufficient system storage"), "452"),
    ],
    ids=["421-at-MAIL", "421-at-RCPT", "451-after-DATA", "stall-at-RCPT", "stall-at-EHLO", "452-storage"],
)
def test_a_transient_smtp_fault_is_retried_to_success_with_one_copy(pipeline, server, fault, first_error):
    configure(pipeline, server)
    pipeline.start_bridge()
    server.behaviour = fault
    first = pipeline.send("fault", MAIL)
    assert first["state"] == "RETRY" and first_error in first["error"], first
    server.behaviour = Behaviour()
    records = settle(pipeline, ["fault"])
    assert records["fault"]["state"] == "SUCCESS" and records["fault"]["attempts"] == 2
    assert sorted(records["fault"]["info"]["accepted"]) == ["ada@example.com", "bob@example.com"]
    exactly_one_copy_per_success(server, records)


def test_a_fault_that_never_clears_ends_in_error_within_the_bound(pipeline, server):
    configure(pipeline, server)
    pipeline.start_bridge()
    server.behaviour = Behaviour(close_with_421_at="DATA")
    pipeline.doc("lost-cause").create(MAIL)
    pipeline.wait_for("lost-cause")
    records = settle(pipeline, ["lost-cause"])
    record = records["lost-cause"]
    assert record["state"] == "ERROR" and record["attempts"] == 3
    assert record["error"].startswith("gave up after 3 attempts") and len(record["attemptHistory"]) == 3
    assert server.messages == []


@pytest.mark.parametrize("code", ["UNAVAILABLE", "INTERNAL"])
def test_firestore_failing_the_outcome_write_is_ridden_out(pipeline, server, code):
    # UNAVAILABLE is retried inside the client library; INTERNAL by the function's own outcome loop.
    configure(pipeline, server)
    pipeline.start_bridge()
    server.behaviour = Behaviour(slow_reply_at="DATA", slow_reply_seconds=0.5)
    pipeline.doc("outage").create(MAIL)
    pipeline.wait_for("outage", states={"PROCESSING"})
    pipeline.emulator.inject_fault("Commit", code, count=3)  # the outcome write, three times
    try:
        record = pipeline.wait_for("outage", timeout=30)
    finally:
        pipeline.emulator.clear_faults()
    assert record["state"] == "SUCCESS" and record["attempts"] == 1
    assert list(copies(server).values()) == [1]


def test_an_outcome_that_cannot_be_written_is_taken_over_after_the_lease_with_the_same_message_id(
    pipeline, server, monkeypatch
):
    import mailer.status_store

    monkeypatch.setattr(mailer.status_store, "OUTCOME_WRITE_DELAYS", (0.1,))
    configure(pipeline, server, LEASE_SECONDS="2")
    pipeline.start_bridge()
    server.behaviour = Behaviour(slow_reply_at="DATA", slow_reply_seconds=0.5)
    pipeline.doc("unrecorded").create(MAIL)
    pipeline.wait_for("unrecorded", states={"PROCESSING"})
    # INTERNAL, which the client library does not retry, so the function's own retries run out fast.
    pipeline.emulator.inject_fault("Commit", "INTERNAL", count=50)
    try:
        deadline = time.monotonic() + 20
        while not server.messages:  # the email goes out; its record does not
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        pipeline.emulator.clear_faults()
    assert pipeline.doc("unrecorded").get().get("delivery.state") == "PROCESSING"
    server.behaviour = Behaviour()
    records = settle(pipeline, ["unrecorded"])
    record = records["unrecorded"]
    assert record["state"] == "SUCCESS" and record["attempts"] == 2 and record["outcomeUnknown"] is True
    # At least once: a second copy, which receivers de-duplicate by its Message-ID.
    assert copies(server) == Counter({record["messageId"]: 2})


@pytest.fixture
def served(pipeline, server, tmp_path):
    """process_mail in its own functions-framework process (so it can be killed), fed by the bridge."""
    configure(pipeline, server, LEASE_SECONDS="2")
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": pipeline.emulator.host}
    process, url = start_function(env, tmp_path / "function.log")
    bridge = TriggerBridge(f"{pipeline.emulator.admin_url}/changes", http_deliverer(url, timeout=30),
                           event_type=CREATED, document=f"{pipeline.collection}/{{docId}}", attempts=1)
    bridge.start()
    try:
        yield process
    finally:
        bridge.stop()
        process.stop()


def test_a_function_killed_mid_send_is_taken_over_once_its_lease_lapses(pipeline, server, served):
    server.behaviour = Behaviour(slow_reply_at="RCPT", slow_reply_seconds=30)
    pipeline.doc("killed").create(MAIL)
    claimed = pipeline.wait_for("killed", states={"PROCESSING"})
    deadline = time.monotonic() + 10
    while server.connections == 0:  # the attempt is talking to the server
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(served.process.pid, signal.SIGKILL)
    served.process.wait(10)
    server.behaviour = Behaviour()

    assert pipeline.sweep() == 200  # the lease has not lapsed yet: nothing is taken over
    assert pipeline.doc("killed").get().get("delivery.state") == "PROCESSING"
    lapse = claimed["leaseExpireTime"]
    time.sleep(max(0.0, (lapse - datetime.now(timezone.utc)).total_seconds()) + 0.1)
    records = settle(pipeline, ["killed"])
    record = records["killed"]
    assert record["state"] == "SUCCESS" and record["attempts"] == 2
    (lost,) = record["attemptHistory"]
    assert lost["attempt"] == 1 and "lease lapsed" in lost["error"]
    assert record["endTime"] - lapse < timedelta(seconds=BOUND_SECONDS)
    exactly_one_copy_per_success(server, records)  # killed before DATA: the server never had it
