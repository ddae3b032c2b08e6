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


@pytest.fixture(autouse=True)
def fresh_hold_offs(monkeypatch):
    """Each test starts with no destination held off (the hold-offs are per process)."""
    from mailer import lifecycle

    monkeypatch.setattr(lifecycle, "_hold_offs", {})
    monkeypatch.setattr(lifecycle, "_answered", {})


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


def _moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_hanging_receiver_costs_one_deadline_then_is_held_off_until_it_answers(
    line, server, pubsub_receiver, log_stream, monkeypatch  # noqa: F811
):
    from mailer import lifecycle

    deadline = 4.0  # an email's own work stays well under it, even on a loaded machine
    monkeypatch.setattr(lifecycle, "PUBLISH_TIMEOUT_SECONDS", deadline)
    pubsub_receiver.hang = True
    took = []
    for doc_id in ("held-1", "held-2", "held-3"):
        started = time.monotonic()
        assert line.send(doc_id, MAIL)["state"] == "SUCCESS"
        took.append(time.monotonic() - started)
    warnings = warnings_logged(log_stream, 6)
    # One publish reached the receiver (the first email's claim) and waited out its deadline; every later
    # transition was skipped at once, with a warning saying until when.
    assert took[0] >= deadline and took[1] < deadline and took[2] < deadline, took
    assert pubsub_receiver.calls == 1 and pubsub_receiver.events == [] and len(server.messages) == 3
    assert [(entry["document"].rpartition("/")[2], entry["eventTypes"]) for entry in warnings] == [
        ("held-1", ["onStart", "onProcessing"]), ("held-1", ["onSuccess", "onComplete"]),
        ("held-2", ["onStart", "onProcessing"]), ("held-2", ["onSuccess", "onComplete"]),
        ("held-3", ["onStart", "onProcessing"]), ("held-3", ["onSuccess", "onComplete"])]
    assert warnings[0]["grpcCode"] == "DEADLINE_EXCEEDED" and all(entry["severity"] == "WARNING" for entry in warnings)
    assert all("exception" not in entry and entry["reason"] == lifecycle.HELD_OFF_REASON for entry in warnings[1:])
    until = {_moment(entry["heldOffUntil"]) for entry in warnings}
    assert max(until) - min(until) < timedelta(milliseconds=50)  # one hold-off, 30 s from the failure
    assert abs((min(until) - _moment(warnings[0]["time"])).total_seconds() - 30) < 0.5
    output = log_stream.getvalue()
    assert "ada@example.com" not in output and SMTP_PASSWORD not in output

    # Hold-off over, receiver answering: the next transition probes, publishes, and the back-off is reset.
    monkeypatch.setattr(lifecycle, "HOLD_OFF_FIRST_SECONDS", 0.2)
    time.sleep(0.3)
    pubsub_receiver.hang = False
    assert line.send("held-4", MAIL)["state"] == "SUCCESS"
    assert settled(pubsub_receiver, "held-4", 4) == SENT
    assert pubsub_receiver.calls == 3 and lifecycle._hold_offs == {}
    # So the next timeout holds off for the first step again (30 s), not twice that.
    monkeypatch.setattr(lifecycle, "HOLD_OFF_FIRST_SECONDS", 30.0)
    monkeypatch.setattr(lifecycle, "PUBLISH_TIMEOUT_SECONDS", 1.0)
    pubsub_receiver.hang = True
    assert line.send("held-5", MAIL)["state"] == "SUCCESS"
    failure = warnings_logged(log_stream, 8)[6]
    assert failure["document"].endswith("/held-5") and failure["grpcCode"] == "DEADLINE_EXCEEDED"
    assert abs((_moment(failure["heldOffUntil"]) - _moment(failure["time"])).total_seconds() - 30) < 0.5


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


def _emitter(names: tuple[str, ...] = ("onStart",)):
    """(emit, key): emit(doc_id) publishes one PROCESSING transition of mail/<doc_id> to a fixed topic with
    `names` enabled, as the handler calls lifecycle.emit; key is that destination's hold-off key."""
    from mailer import lifecycle
    from mailer.settings import EventSettings

    class Settings:
        events = EventSettings(names=names, topic="projects/acme-mailer/topics/mail-events")

    def emit(doc_id: str = "a") -> list[str]:
        return lifecycle.emit(Settings(), project="acme-mailer", database="(default)", path=f"mail/{doc_id}",
                              before=None, record={"state": "PROCESSING"}, version=None)

    return emit, lifecycle._destination(Settings.events)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Destination:
    """A stand-in publisher whose publish takes `takes` seconds of the fake clock and then fails with `fails`."""

    def __init__(self, clock: _Clock) -> None:
        self.clock, self.calls, self.takes, self.fails = clock, 0, 0.0, None

    def publish(self, events) -> None:
        self.calls += 1
        self.clock.now += self.takes
        if self.fails is not None:
            raise self.fails

    def close(self) -> None:
        pass


@pytest.fixture
def destination(monkeypatch):
    from mailer import lifecycle

    clock = _Clock()
    fake = _Destination(clock)
    monkeypatch.setattr(lifecycle, "_clock", clock)
    monkeypatch.setattr(lifecycle, "publisher_for", lambda config: fake)

    fake.emit, fake.key = _emitter(("onStart", "onProcessing"))
    return fake


def _held_for(destination) -> float | None:
    from mailer import lifecycle

    state = lifecycle._hold_offs.get(destination.key)
    return None if state is None else state.until() - destination.clock.now


def test_consecutive_slow_failures_double_the_hold_off_up_to_the_cap(destination, log_stream):
    from google.api_core.exceptions import DeadlineExceeded

    destination.takes, destination.fails = 5.0, DeadlineExceeded("deadline")
    held = []
    for _ in range(6):
        assert destination.emit() == [] and destination.calls == len(held) + 1
        held.append(_held_for(destination))
        # Held off: nothing is attempted until the very end of it.
        destination.clock.now += held[-1] - 1
        assert destination.emit() == [] and destination.calls == len(held)
        destination.clock.now += 1
    assert held == [30, 60, 120, 240, 300, 300]
    # The probe succeeds: the back-off is gone, and the next slow failure starts again at 30 s.
    destination.fails = None
    assert destination.emit() == ["onStart", "onProcessing"] and _held_for(destination) is None
    destination.fails = DeadlineExceeded("deadline")
    destination.emit()
    assert _held_for(destination) == 30


def test_any_failure_that_took_a_second_holds_off_and_a_fast_one_does_not(destination, log_stream):
    from google.api_core.exceptions import PermissionDenied, ServiceUnavailable

    for fails in (ServiceUnavailable("refused"), PermissionDenied("denied"), RuntimeError("boom")):
        destination.takes, destination.fails = 0.05, fails
        for doc_id in ("a", "b", "c"):  # each one is attempted: a fast failure costs nothing
            calls = destination.calls
            assert destination.emit(doc_id) == [] and destination.calls == calls + 1
            assert _held_for(destination) is None
    warnings = warnings_logged(log_stream, 9)
    assert len(warnings) == 9 and not any("heldOffUntil" in entry for entry in warnings)

    destination.takes, destination.fails = 1.0, ServiceUnavailable("slow")
    destination.emit("d")
    assert _held_for(destination) == 30
    calls = destination.calls
    assert destination.emit("e") == [] and destination.calls == calls
    skipped = warnings_logged(log_stream, 11)[-1]
    assert skipped["document"] == "mail/e" and skipped["eventTypes"] == ["onStart", "onProcessing"]
    assert skipped["state"] == "PROCESSING" and skipped["heldOffUntil"].endswith("Z") and skipped["reason"]


def test_one_probe_at_a_time_and_a_shared_timeout_counts_once(monkeypatch, log_stream):
    # Two threads publish to a hanging destination at once: both time out, the hold-off is 30 s (not 60).
    # After it, one thread probes; a transition meanwhile is skipped rather than waiting out a deadline too.
    from google.api_core.exceptions import DeadlineExceeded

    from mailer import lifecycle

    clock = _Clock()
    monkeypatch.setattr(lifecycle, "_clock", clock)
    arrived, release = threading.Barrier(2), threading.Event()
    calls = []

    class Hanging:
        def publish(self, events):
            calls.append(events[0]["subject"])
            if len(calls) <= 2:
                arrived.wait(5)
            release.wait(5)
            clock.now += 5
            raise DeadlineExceeded("deadline")

        def close(self):
            pass

    monkeypatch.setattr(lifecycle, "publisher_for", lambda config: Hanging())

    emit, key = _emitter()

    threads = [threading.Thread(target=emit, args=(doc_id,)) for doc_id in ("a", "b")]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert sorted(calls) == ["a", "b"] and lifecycle._hold_offs[key].failures == 1

    clock.now = lifecycle._hold_offs[key].until()
    release.clear()
    probe = threading.Thread(target=emit, args=("probe",))
    probe.start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    emit("meanwhile")  # returns at once: the probe is out
    release.set()
    probe.join(10)
    assert calls[2:] == ["probe"] and lifecycle._hold_offs[key].failures == 2
    meanwhile = [entry for entry in warnings_logged(log_stream, 4) if entry["document"] == "mail/meanwhile"]
    assert meanwhile and meanwhile[0]["reason"] == lifecycle.PROBING_REASON and "heldOffUntil" in meanwhile[0]


def test_a_probe_that_never_returns_does_not_hold_the_destination_off_for_good(monkeypatch, log_stream):
    # The probe after a hold-off hangs past any deadline (a stuck channel, a stuck credential fetch): the
    # transitions after it must not be skipped for the life of the instance with a heldOffUntil long past.
    # The lost probe counts as one more slow failure; after that hold-off a new probe goes out.
    from google.api_core.exceptions import DeadlineExceeded

    from mailer import lifecycle

    clock = _Clock()
    monkeypatch.setattr(lifecycle, "_clock", clock)
    hung, release = threading.Event(), threading.Event()
    calls = []

    class Destination:
        def publish(self, events):
            calls.append(events[0]["subject"])
            if events[0]["subject"] == "stuck":
                hung.set()
                release.wait(10)
                raise DeadlineExceeded("deadline")
            if events[0]["subject"] == "first":
                clock.now += 5
                raise DeadlineExceeded("deadline")

        def close(self):
            pass

    monkeypatch.setattr(lifecycle, "publisher_for", lambda config: Destination())

    emit, key = _emitter()
    assert emit("first") == [] and lifecycle._hold_offs[key].failures == 1
    clock.now = lifecycle._hold_offs[key].until()
    probe = threading.Thread(target=emit, args=("stuck",))
    probe.start()
    try:
        assert hung.wait(10)
        clock.now += 3600  # an hour later the probe has still not returned
        assert emit("later") == []
        (later,) = [entry for entry in warnings_logged(log_stream, 2) if entry["document"] == "mail/later"]
        assert later["reason"] == lifecycle.HELD_OFF_REASON
        assert _moment(later["heldOffUntil"]) > datetime.now(timezone.utc)  # not a moment long past
        assert lifecycle._hold_offs[key].failures == 2
        clock.now = lifecycle._hold_offs[key].until()
        assert emit("next") == ["onStart"]  # a new probe went out, and the destination answered it
        assert calls == ["first", "stuck", "next"] and key not in lifecycle._hold_offs
    finally:
        release.set()
        probe.join(10)


def test_a_timeout_of_a_publish_begun_before_the_destination_answered_does_not_hold_it_off(monkeypatch, log_stream):
    # Two threads: "slow" goes out while the destination hangs, "quick" after it is back and is answered;
    # then "slow" times out. The destination has answered since "slow" began: no hold-off, and the next
    # transition is published.
    from google.api_core.exceptions import DeadlineExceeded

    from mailer import lifecycle

    clock = _Clock()
    monkeypatch.setattr(lifecycle, "_clock", clock)
    slow_out, quick_done = threading.Event(), threading.Event()
    calls = []

    class Destination:
        def publish(self, events):
            calls.append(events[0]["subject"])
            if events[0]["subject"] == "slow":
                slow_out.set()
                quick_done.wait(10)
                clock.now += 5
                raise DeadlineExceeded("deadline")
            clock.now += 0.01

        def close(self):
            pass

    monkeypatch.setattr(lifecycle, "publisher_for", lambda config: Destination())

    emit, key = _emitter()
    slow = threading.Thread(target=emit, args=("slow",))
    slow.start()
    try:
        assert slow_out.wait(10)
        clock.now += 1
        assert emit("quick") == ["onStart"]
    finally:
        quick_done.set()
        slow.join(10)
    assert key not in lifecycle._hold_offs
    assert emit("next") == ["onStart"] and calls == ["slow", "quick", "next"]
