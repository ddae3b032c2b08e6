"""Lifecycle events end to end (issue 12 item 3): documents go through the deployed entry points (trigger
and sweep) against the Firestore emulator and a real SMTP server, and the function publishes to a local
Pub/Sub-compatible receiver (or Eventarc publishing receiver) through the real client libraries. Each
test asserts the exact sequence of event types per document: one per real transition, never a copy."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from mailer.settings import SettingsError, load_settings
from tests.support.pubsub import EventReceiver, eventarc_receiver, pubsub_receiver  # noqa: F401 (fixtures)
from tests.support.smtp import Behaviour

from .conftest import SMTP_PASSWORD, SMTP_USER, post_event
from .test_pipeline import created_event
from .test_faults import settle
from .test_sweep import _processing, sweep_when_due, wait_until

TOPIC = "projects/demo-mailer/topics/mail-events"
CHANNEL = "projects/demo-mailer/locations/us-central1/channels/mail-events"
ALL = "onStart,onProcessing,onPending,onRetry,onSuccess,onError,onComplete"
PREFIX = "firebase.extensions.firestore-send-email.v1."
MAIL = {"to": "ada@example.com", "message": {"subject": "Events", "text": "body"}}
GREYLISTED = Behaviour(data_reply="451 4.7.1 Greylisted, try again later")
SENT = ["onStart", "onProcessing", "onSuccess", "onComplete"]


@pytest.fixture
def server(smtp_server):
    return smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})


@pytest.fixture
def line(pipeline, server, pubsub_receiver):  # noqa: F811
    """Trigger + sweep with fast retries (1 s, 2 s cap, 3 attempts), every event type on, to the receiver."""
    pipeline.configure(SMTP_CONNECTION_URI=server.uri(SMTP_USER), SMTP_PASSWORD=SMTP_PASSWORD,
                       RETRY_BACKOFF_SECONDS="1", RETRY_BACKOFF_MAX_SECONDS="2", MAX_ATTEMPTS="3",
                       EVENTS=ALL, EVENTS_TOPIC=TOPIC, PUBSUB_ENDPOINT=pubsub_receiver.endpoint,
                       EVENTS_CHANNEL=None, EVENTARC_PUBLISHING_ENDPOINT=None)
    pipeline.start_bridge()
    return pipeline



def settled(receiver: EventReceiver, doc_id: str, count: int, timeout: float = 10.0) -> list[str]:
    """The document's event types once `count` have arrived and nothing more came for a moment (the
    function publishes just after writing, so the test may see the document settle first)."""
    deadline = time.monotonic() + timeout
    while len(receiver.types(doc_id)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    return receiver.types(doc_id)


def events_of(receiver: EventReceiver, doc_id: str) -> list[dict]:
    return [event for event in receiver.events if event.get("subject") == doc_id]


def test_a_sent_email_publishes_start_processing_success_complete_once_each(line, server, pubsub_receiver):  # noqa: F811
    record = line.send("hello", MAIL)
    assert record["state"] == "SUCCESS"
    assert settled(pubsub_receiver, "hello", 4) == SENT
    events = events_of(pubsub_receiver, "hello")
    assert all(event["_destination"] == TOPIC and event["type"].startswith(PREFIX) for event in events)
    assert all(event["specversion"] == "1.0" and event["datacontenttype"] == "application/json" for event in events)
    assert len({event["id"] for event in events}) == 4
    assert all(event["source"].endswith(f"/documents/{line.collection}") for event in events)
    # data.doc carries the document's id, path and the delivery record as written by that transition.
    assert [event["data"]["doc"]["delivery"]["state"] for event in events] == ["PROCESSING", "PROCESSING", "SUCCESS", "SUCCESS"]
    assert all(event["data"]["doc"]["id"] == "hello" and event["data"]["doc"]["path"] == f"{line.collection}/hello" for event in events)
    success = events[2]["data"]["doc"]["delivery"]
    assert success["messageId"] == record["messageId"] and success["attempts"] == 1
    assert success["endTime"] == record["endTime"].isoformat().replace("+00:00", "Z")
    assert len(server.messages) == 1
    # The delivery record only: no message content, and never the SMTP password.
    published = json.dumps(events)
    assert SMTP_PASSWORD not in published and "Events" not in published and "body" not in published


def test_a_retry_then_success_publishes_each_transition_once(line, server, pubsub_receiver):  # noqa: F811
    server.behaviour = GREYLISTED
    first = line.send("greylisted", MAIL)
    assert first["state"] == "RETRY"
    assert settled(pubsub_receiver, "greylisted", 3) == ["onStart", "onProcessing", "onRetry"]
    retry = events_of(pubsub_receiver, "greylisted")[2]["data"]
    assert retry["err"].startswith("SMTP 451") and retry["doc"]["delivery"]["nextAttemptTime"]

    server.behaviour = Behaviour()
    second = sweep_when_due(line, "greylisted")
    assert second["state"] == "SUCCESS" and second["attempts"] == 2
    assert settled(pubsub_receiver, "greylisted", 6) == [
        "onStart", "onProcessing", "onRetry", "onProcessing", "onSuccess", "onComplete"]
    assert len(server.messages) == 1


def test_a_permanent_failure_publishes_error_and_complete(line, server, pubsub_receiver):  # noqa: F811
    server.behaviour = Behaviour(rcpt_replies={"ada@example.com": "550 5.1.1 No such user"})
    assert line.send("gone", MAIL)["state"] == "ERROR"
    assert settled(pubsub_receiver, "gone", 4) == ["onStart", "onProcessing", "onError", "onComplete"]
    error = events_of(pubsub_receiver, "gone")[2]["data"]
    assert error["err"] == error["doc"]["delivery"]["error"] and error["err"]


def test_an_invalid_document_publishes_start_error_complete_without_processing(line, server, pubsub_receiver):  # noqa: F811
    assert line.send("invalid", {"to": "bob@@example.org", "message": {"subject": "s", "text": "t"}})["state"] == "ERROR"
    assert settled(pubsub_receiver, "invalid", 3) == ["onStart", "onError", "onComplete"]
    assert server.messages == []


def test_giving_up_after_max_attempts_publishes_every_attempt_and_one_error(line, server, pubsub_receiver):  # noqa: F811
    server.behaviour = GREYLISTED
    record = line.send("hopeless", MAIL)
    while record["state"] == "RETRY":
        record = sweep_when_due(line, "hopeless")
    assert record["state"] == "ERROR" and record["attempts"] == 3
    assert settled(pubsub_receiver, "hopeless", 8) == [
        "onStart", "onProcessing", "onRetry", "onProcessing", "onRetry", "onProcessing", "onError", "onComplete"]
    assert events_of(pubsub_receiver, "hopeless")[-2]["data"]["err"].startswith("gave up after 3 attempts")


def test_a_scheduled_document_publishes_pending_then_the_sweep_sends_it(line, server, pubsub_receiver):  # noqa: F811
    send_at = datetime.now(timezone.utc) + timedelta(seconds=1)
    line.doc("later").create({**MAIL, "sendAt": send_at})
    line.wait_for("later", states={"PENDING"})
    assert settled(pubsub_receiver, "later", 2) == ["onStart", "onPending"]
    wait_until(send_at)
    assert line.sweep() == 200
    assert line.sweep() == 200  # a second tick finds nothing due and publishes nothing
    assert settled(pubsub_receiver, "later", 5) == ["onStart", "onPending", "onProcessing", "onSuccess", "onComplete"]


def test_a_lapsed_claim_taken_over_by_the_sweep_publishes_the_new_attempt_not_a_start(line, server, pubsub_receiver):  # noqa: F811
    _processing(line, "crashed", lease=timedelta(seconds=-1))
    _processing(line, "exhausted", lease=timedelta(seconds=-1), attempts=3)
    assert line.sweep() == 200
    assert settled(pubsub_receiver, "crashed", 3) == ["onProcessing", "onSuccess", "onComplete"]
    assert settled(pubsub_receiver, "exhausted", 2) == ["onError", "onComplete"]
    assert events_of(pubsub_receiver, "exhausted")[0]["data"]["err"].startswith("gave up after 3 attempts")
    assert line.sweep() == 200  # nothing left to do: nothing more published
    assert settled(pubsub_receiver, "crashed", 3) == ["onProcessing", "onSuccess", "onComplete"]


def test_an_outcome_firestore_would_not_record_is_not_published_until_the_takeover_records_one(
    line, server, pubsub_receiver, monkeypatch  # noqa: F811
):
    import mailer.status_store

    monkeypatch.setattr(mailer.status_store, "OUTCOME_WRITE_DELAYS", (0.1,))
    line.configure(LEASE_SECONDS="2")
    server.behaviour = Behaviour(slow_reply_at="DATA", slow_reply_seconds=0.5)
    line.doc("unrecorded").create(MAIL)
    line.wait_for("unrecorded", states={"PROCESSING"})
    line.emulator.inject_fault("Commit", "INTERNAL", count=50)
    try:
        deadline = time.monotonic() + 20
        while not server.messages:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        line.emulator.clear_faults()
    # The email went out but its SUCCESS was never written: no onSuccess for it.
    assert settled(pubsub_receiver, "unrecorded", 2) == ["onStart", "onProcessing"]
    server.behaviour = Behaviour()
    assert settle(line, ["unrecorded"])["unrecorded"]["state"] == "SUCCESS"
    assert settled(pubsub_receiver, "unrecorded", 5) == ["onStart", "onProcessing", "onProcessing", "onSuccess", "onComplete"]


def test_a_client_asking_again_after_an_error_publishes_the_new_attempt(line, server, pubsub_receiver):  # noqa: F811
    server.behaviour = Behaviour(rcpt_replies={"ada@example.com": "550 5.1.1 No such user"})
    assert line.send("again", MAIL)["state"] == "ERROR"
    server.behaviour = Behaviour()
    line.doc("again").update({"delivery.state": "RETRY", "delivery.nextAttemptTime": None})
    assert line.sweep() == 200
    assert line.doc("again").get().get("delivery.state") == "SUCCESS"
    # The client's own write is not a transition the function made: it publishes from its claim on.
    assert settled(pubsub_receiver, "again", 7) == [
        "onStart", "onProcessing", "onError", "onComplete", "onProcessing", "onSuccess", "onComplete"]


def test_only_the_enabled_event_types_are_published(line, server, pubsub_receiver):  # noqa: F811
    line.configure(EVENTS="onSuccess, firebase.extensions.firestore-send-email.v1.onError")
    line.send("picky", MAIL)
    assert settled(pubsub_receiver, "picky", 1) == ["onSuccess"]


def test_nothing_is_published_when_events_are_off(line, server, pubsub_receiver):  # noqa: F811
    line.configure(EVENTS=None)
    assert line.send("quiet", MAIL)["state"] == "SUCCESS"
    time.sleep(0.3)
    assert pubsub_receiver.calls == 0 and pubsub_receiver.events == []


def test_a_redelivered_or_concurrent_trigger_event_publishes_nothing_new(line, server, pubsub_receiver):  # noqa: F811
    line.bridge.stop()
    line.bridge = None
    server.behaviour = Behaviour(slow_reply_at="DATA", slow_reply_seconds=0.3)
    headers, body = created_event(line, "twice", MAIL)
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def deliver() -> None:
        barrier.wait()
        statuses.append(post_event(line.app, headers, body))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert post_event(line.app, headers, body) == 200  # and once more, after the outcome
    assert statuses == [200] * 4
    assert len(server.messages) == 1
    assert settled(pubsub_receiver, "twice", 4) == SENT


@pytest.mark.parametrize("fault", ["receiver down", "UNAVAILABLE", "PERMISSION_DENIED"])
def test_a_failed_publish_never_blocks_or_duplicates_the_mail(line, server, pubsub_receiver, log_stream, fault):  # noqa: F811
    if fault == "receiver down":
        pubsub_receiver.stop()
    else:
        pubsub_receiver.fail_with = getattr(grpc.StatusCode, fault)
    started = time.monotonic()
    record = line.send("unheard", MAIL)
    assert record["state"] == "SUCCESS" and record["attempts"] == 1
    assert time.monotonic() - started < 5
    assert len(server.messages) == 1 and pubsub_receiver.events == []
    warnings = warnings_logged(log_stream, 2)
    assert [entry["eventTypes"] for entry in warnings] == [["onStart", "onProcessing"], ["onSuccess", "onComplete"]]
    assert all(entry["severity"] == "WARNING" and entry["document"] == f"{line.collection}/unheard" for entry in warnings)
    if fault != "receiver down":
        assert {entry.get("grpcCode") for entry in warnings} == {fault}
    output = log_stream.getvalue()
    assert "ada@example.com" not in output and SMTP_PASSWORD not in output


def warnings_logged(log_stream, count: int, timeout: float = 5.0) -> list[dict]:
    """The "not published" warnings, once `count` of them are there (the function publishes after it writes)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(text) for text in log_stream.getvalue().splitlines()]
        warnings = [entry for entry in lines if entry["message"] == "lifecycle event not published"]
        if len(warnings) >= count or time.monotonic() > deadline:
            return warnings
        time.sleep(0.05)


def test_a_receiver_back_up_gets_the_next_transitions(line, server, pubsub_receiver, log_stream):  # noqa: F811
    pubsub_receiver.stop()
    server.behaviour = GREYLISTED
    assert line.send("flaky", MAIL)["state"] == "RETRY"
    assert [entry["eventTypes"] for entry in warnings_logged(log_stream, 2)] == [["onStart", "onProcessing"], ["onRetry"]]
    pubsub_receiver.start()  # same port; after a failure the function opens a new connection
    server.behaviour = Behaviour()
    assert sweep_when_due(line, "flaky")["state"] == "SUCCESS"
    assert settled(pubsub_receiver, "flaky", 3) == ["onProcessing", "onSuccess", "onComplete"]


def test_an_eventarc_channel_receives_structured_cloud_events(line, server, pubsub_receiver, eventarc_receiver):  # noqa: F811
    line.configure(EVENTS_TOPIC=None, PUBSUB_ENDPOINT=None, EVENTS_CHANNEL=CHANNEL,
                   EVENTARC_PUBLISHING_ENDPOINT=eventarc_receiver.endpoint)
    assert line.send("channelled", MAIL)["state"] == "SUCCESS"
    assert settled(eventarc_receiver, "channelled", 4) == SENT
    assert pubsub_receiver.events == []
    events = events_of(eventarc_receiver, "channelled")
    assert all(event["_destination"] == CHANNEL and event["specversion"] == "1.0" for event in events)
    assert events[2]["data"]["doc"]["delivery"]["state"] == "SUCCESS"


@pytest.mark.parametrize(("env", "named"), [
    ({"EVENTS": "onStart,onSent", "EVENTS_TOPIC": TOPIC}, "EVENTS:"),
    ({"EVENTS": "onStart"}, "EVENTS_TOPIC:"),
    ({"EVENTS": "onStart", "EVENTS_TOPIC": TOPIC, "EVENTS_CHANNEL": CHANNEL}, "EVENTS_TOPIC and EVENTS_CHANNEL:"),
    ({"EVENTS": "onStart", "EVENTS_TOPIC": "mail-events"}, "EVENTS_TOPIC:"),
    ({"EVENTS": "onStart", "EVENTS_CHANNEL": "projects/p/channels/c"}, "EVENTS_CHANNEL:"),
    ({"EVENTS": "onStart", "EVENTS_TOPIC": TOPIC, "PUBSUB_ENDPOINT": "pubsub.example.com:443"}, "PUBSUB_ENDPOINT:"),
    ({"EVENTS": "onStart", "EVENTS_CHANNEL": CHANNEL, "EVENTARC_PUBLISHING_ENDPOINT": "10.0.0.1:80"},
     "EVENTARC_PUBLISHING_ENDPOINT:"),
])
def test_event_settings_errors_name_the_variable(env, named):
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(named)


def test_event_settings_accept_short_and_full_names_and_are_off_by_default():
    assert load_settings({}).events is None
    assert load_settings({"EVENTS": " , ", "EVENTS_TOPIC": "x"}).events is None
    events = load_settings({"EVENTS": f"onStart, {PREFIX}onComplete,onStart", "EVENTS_TOPIC": TOPIC,
                            "PUBSUB_ENDPOINT": "localhost:8085"}).events
    assert events.names == ("onStart", "onComplete") and events.topic == TOPIC and events.endpoint == "localhost:8085"


def test_the_client_libraries_are_not_imported_when_events_are_off():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import main; "
            "print(sorted(m for m in sys.modules if m.startswith(('google.pubsub', 'google.cloud.pubsub', "
            "'google.cloud.eventarc'))))")
    functions = Path(__file__).resolve().parents[2] / "functions"
    out = subprocess.run([sys.executable, "-c", code], cwd=functions, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(functions)})
    assert out.stdout.strip() == "[]"


def test_a_failed_publish_drops_only_its_own_publisher():
    # Two threads share a destination: the first's publish fails after another thread has already replaced
    # the publisher (its own failure, then a new connection). The replacement is in use: it must stay open.
    from mailer import lifecycle
    from mailer.settings import EventSettings

    class Publisher:
        def __init__(self, fail_with: Exception | None = None) -> None:
            self.fail_with, self.closed = fail_with, False

        def publish(self, events):
            if self.fail_with is not None:
                lifecycle._publishers[key] = replacement  # what the other thread did meanwhile
                raise self.fail_with

        def close(self):
            self.closed = True

    config = EventSettings(names=("onStart",), topic="projects/acme-mailer/topics/mail-events")
    key = lifecycle._destination(config)
    failing, replacement = Publisher(RuntimeError("UNAVAILABLE")), Publisher()

    class Settings:
        events = config

    lifecycle._publishers[key] = failing
    try:
        assert lifecycle.emit(Settings(), project="acme-mailer", database="(default)", path="mail/a", before=None,
                              record={"state": "PROCESSING"}, version=None) == []
        assert lifecycle._publishers.get(key) is replacement and not replacement.closed
        # Its own failure still drops it, so the next event opens a new connection.
        replacement.fail_with = RuntimeError("UNAVAILABLE")
        lifecycle.emit(Settings(), project="acme-mailer", database="(default)", path="mail/b", before=None,
                       record={"state": "PROCESSING"}, version=None)
        assert key not in lifecycle._publishers and replacement.closed
    finally:
        lifecycle._publishers.pop(key, None)
