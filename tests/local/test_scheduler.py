"""The local scheduler (Cloud Scheduler -> Pub/Sub -> Eventarc, on one machine): it posts the Pub/Sub
CloudEvent Eventarc would, one call at a time, and a failed call is counted and logged, never fatal."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import textwrap
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from local.bridge import http_deliverer
from local.eventarc import PUBSUB_EVENT_TYPE, pubsub_event
from local.function import SWEEP_ENTRY_POINT, start_function
from local.processes import free_port
from local.scheduler import SweepScheduler, describe_failure

EVENT = partial(pubsub_event, project="demo-mailer", topic="mailer-sweep", subscription="eventarc-sweep-sub")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.01)


@dataclass
class Call:
    start: float
    end: float
    headers: dict[str, str]
    body: bytes


@dataclass
class SweepServer:
    """An HTTP endpoint standing in for the sweep function: records every call, answers `status` after
    `delay` seconds, and notes how many calls were ever in progress at once."""

    url: str = ""
    port: int = 0
    status: int = 204
    delay: float = 0.0
    calls: list[Call] = field(default_factory=list)
    in_progress: int = 0
    most_at_once: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def serve(recorder: SweepServer, port: int = 0) -> Callable[[], None]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            start = time.monotonic()
            with recorder.lock:
                recorder.in_progress += 1
                recorder.most_at_once = max(recorder.most_at_once, recorder.in_progress)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(recorder.delay)
            # Recorded before the answer, so the caller cannot start its next call before this is written.
            with recorder.lock:
                recorder.in_progress -= 1
                recorder.calls.append(Call(start, time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(recorder.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    recorder.port = server.server_address[1]
    recorder.url = f"http://127.0.0.1:{recorder.port}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


@pytest.fixture
def sweep_server() -> Iterator[SweepServer]:
    recorder = SweepServer()
    stop = serve(recorder)
    try:
        yield recorder
    finally:
        stop()


def test_the_event_is_a_binary_mode_pubsub_cloudevent() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 3, 250000, tzinfo=timezone.utc)
    headers, body = pubsub_event(project="demo-mailer", topic="mailer-sweep", subscription="eventarc-sweep-sub",
                                 data=b'{"sweep": true}', message_id="1096434104173400", time=moment)
    assert headers == {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "1096434104173400",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/demo-mailer/topics/mailer-sweep",
        "ce-time": "2024-05-01T12:00:03.250000Z",
    }
    assert json.loads(body) == {
        "message": {"data": base64.b64encode(b'{"sweep": true}').decode(), "messageId": "1096434104173400",
                    "publishTime": "2024-05-01T12:00:03.250000Z"},
        "subscription": "projects/demo-mailer/subscriptions/eventarc-sweep-sub",
    }
    # Each tick is a new message, as each Cloud Scheduler run publishes one.
    first, second = EVENT()[0], EVENT()[0]
    assert first["ce-id"] != second["ce-id"] and first["ce-id"].isdigit()


def test_it_posts_the_event_every_period(sweep_server: SweepServer) -> None:
    with SweepScheduler(http_deliverer(sweep_server.url), EVENT, period=0.1) as scheduler:
        wait_until(lambda: scheduler.succeeded >= 4, 5, "four sweeps")
    calls = list(sweep_server.calls)
    assert len(calls) == scheduler.sweeps >= 4 and scheduler.failed == 0
    assert {call.headers["ce-type"] for call in calls} == {PUBSUB_EVENT_TYPE}
    assert all(json.loads(call.body)["subscription"] == "projects/demo-mailer/subscriptions/eventarc-sweep-sub" for call in calls)
    assert len({call.headers["ce-id"] for call in calls}) == len(calls)
    # About one call per period: not a busy loop, not a lazy one.
    gaps = [later.start - earlier.start for earlier, later in zip(calls, calls[1:])]
    assert all(0.08 <= gap <= 1.0 for gap in gaps), gaps


def test_a_call_never_starts_before_the_previous_one_returned(sweep_server: SweepServer) -> None:
    # Each call takes two periods: Cloud Scheduler would pile them up; this scheduler waits.
    sweep_server.delay = 0.6
    with SweepScheduler(http_deliverer(sweep_server.url), EVENT, period=0.3) as scheduler:
        wait_until(lambda: len(sweep_server.calls) >= 3, 15, "three slow sweeps")
    calls = list(sweep_server.calls)
    assert sweep_server.most_at_once == 1
    assert all(later.start >= earlier.end for earlier, later in zip(calls, calls[1:]))
    # ... and the next call follows at once, not a period later (missed ticks are dropped, not made up).
    assert all(later.start - earlier.end < 0.15 for earlier, later in zip(calls, calls[1:]))
    assert scheduler.sweeps == len(calls)


def test_a_refused_call_is_logged_and_the_next_tick_calls_again(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens here yet
    recorder = SweepServer()
    caplog.set_level(logging.DEBUG, logger="local.scheduler")
    scheduler = SweepScheduler(http_deliverer(f"http://127.0.0.1:{port}/"), EVENT, period=0.05)
    stop_server = lambda: None  # noqa: E731
    try:
        scheduler.start()
        wait_until(lambda: scheduler.failed >= 3, 5, "three refused calls")
        assert scheduler.running and scheduler.last_failure == "Connection refused"
        stop_server = serve(recorder, port)  # the sweep function comes up
        wait_until(lambda: scheduler.succeeded >= 2, 5, "two sweeps once the function listens")
    finally:
        scheduler.stop()
        stop_server()
    assert scheduler.running is False
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    # One line when the failures start and one when they end, not one per tick.
    assert warnings[0] == "sweep 1 failed (Connection refused); calling again every 0.05 s", warnings
    assert len(warnings) == 2 and warnings[1].endswith("before it had failed"), warnings
    assert scheduler.sweeps == scheduler.failed + scheduler.succeeded


def test_an_error_status_counts_as_a_failure(sweep_server: SweepServer, caplog: pytest.LogCaptureFixture) -> None:
    sweep_server.status = 500
    with SweepScheduler(http_deliverer(sweep_server.url), EVENT, period=0.05) as scheduler:
        wait_until(lambda: scheduler.failed >= 3, 5, "three failed sweeps")
        sweep_server.status = 200
        wait_until(lambda: scheduler.succeeded >= 1, 5, "a sweep after the function recovered")
    assert scheduler.last_failure == "HTTP 500"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING][0] == (
        "sweep 1 failed (HTTP 500); calling again every 0.05 s")


def test_an_exception_from_the_event_or_the_call_never_ends_the_thread() -> None:
    outcomes = iter([TimeoutError("timed out"), RuntimeError("boom"), 200, 200])

    def deliver(headers: dict[str, str], body: bytes) -> int:
        outcome = next(outcomes)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    with SweepScheduler(deliver, EVENT, period=0.02) as scheduler:
        wait_until(lambda: scheduler.succeeded >= 2, 5, "two sweeps after two exceptions")
    assert (scheduler.failed, scheduler.succeeded) == (2, 2)


def test_stopping_waits_for_nothing_when_idle() -> None:
    scheduler = SweepScheduler(lambda headers, body: 204, EVENT, period=60)
    scheduler.start()
    started = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - started < 1 and not scheduler.running and scheduler.sweeps == 0
    scheduler.stop()  # twice is fine


def test_failure_reasons_are_short() -> None:
    refused = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    assert describe_failure(refused) == "Connection refused"
    assert describe_failure(socket.timeout("timed out")) == "timed out"
    assert describe_failure(RuntimeError()) == "RuntimeError"


TINY_SWEEP = textwrap.dedent(
    """
    import json, os
    import functions_framework

    @functions_framework.cloud_event
    def sweep_mail(cloud_event):
        record = {"attributes": dict(cloud_event.get_attributes()), "data": cloud_event.data}
        with open(os.environ["EVENTS_FILE"], "a") as events:
            events.write(json.dumps(record, default=str) + "\\n")
    """
)


def test_functions_framework_takes_the_event_as_a_pubsub_cloudevent(tmp_path: Path) -> None:
    # A stand-in sweep_mail under the real functions-framework: what it receives is what the deployed
    # sweep gets from Eventarc.
    source = tmp_path / "main.py"
    source.write_text(TINY_SWEEP)
    events_file = tmp_path / "events.jsonl"
    env = {"PATH": os.environ["PATH"], "EVENTS_FILE": str(events_file)}
    process, url = start_function(env, tmp_path / "sweep.log", target=SWEEP_ENTRY_POINT, source=source)
    try:
        with SweepScheduler(http_deliverer(url), EVENT, period=0.1) as scheduler:
            wait_until(lambda: scheduler.succeeded >= 2, 20, "two sweeps served by functions-framework")
    finally:
        process.stop()
    assert scheduler.failed == 0
    received = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert len(received) == scheduler.sweeps
    first = received[0]
    assert first["attributes"]["type"] == PUBSUB_EVENT_TYPE
    assert first["attributes"]["source"] == "//pubsub.googleapis.com/projects/demo-mailer/topics/mailer-sweep"
    assert first["data"]["subscription"] == "projects/demo-mailer/subscriptions/eventarc-sweep-sub"
    assert first["data"]["message"]["messageId"] == first["attributes"]["id"]


def test_the_local_sweep_is_wired_as_the_deployed_one() -> None:
    # The entry point, event type and message come from infra/sweep.py, which deploys them.
    from infra import sweep
    from local.stack import SWEEP_MESSAGE

    assert (SWEEP_ENTRY_POINT, PUBSUB_EVENT_TYPE) == (sweep.ENTRY_POINT, sweep.EVENT_TYPE)
    assert base64.b64encode(SWEEP_MESSAGE).decode() == sweep.MESSAGE_DATA


def test_paused_waits_for_the_call_in_progress_and_skips_ticks():
    calls: list[float] = []
    entered = threading.Event()

    def deliver(headers, body):
        entered.set()
        time.sleep(0.3)
        calls.append(time.monotonic())
        return 204

    scheduler = SweepScheduler(deliver, lambda: ({}, b""), 0.05)
    scheduler.start()
    try:
        assert entered.wait(5)
        with scheduler.paused():
            paused_at = time.monotonic()
            assert calls and calls[-1] <= paused_at  # the call in progress finished first
            count = len(calls)
            time.sleep(0.4)
            assert len(calls) == count  # no call while paused
        deadline = time.monotonic() + 5
        while len(calls) == count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(calls) > count  # ticking again afterwards
    finally:
        scheduler.stop()
