"""The local stack keeps delivering: the trigger bridge retries a function that fails, refuses or drops
the connection (as Eventarc's retry policy does) and never dies of it; a dead part stops `--serve`."""

from __future__ import annotations

import base64
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from local.bridge import TriggerBridge, http_deliverer
from local.processes import ManagedProcess
from local.stack import LocalStack

EVENT_TYPE = "google.cloud.firestore.document.v1.created"


class ChangeFeed:
    """A stand-in for the emulator's /changes: NDJSON lines pushed with add(), the response kept open."""

    def __init__(self) -> None:
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                while (line := feed.lines.get()) is not None:
                    self.wfile.write(line)
                    self.wfile.flush()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/changes"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, doc_id: str) -> None:
        change = {"path": f"mail/{doc_id}", "kind": "created", "database": "(default)",
                  "document": f"projects/demo/databases/(default)/documents/mail/{doc_id}",
                  "new": base64.b64encode(b"").decode()}
        self.lines.put(json.dumps(change).encode() + b"\n")

    def close(self) -> None:
        self.lines.put(None)
        self.server.shutdown()
        self.server.server_close()


class StandInFunction:
    """An HTTP server standing in for the function: answers POSTs with the next of `plan` (a status, or
    "drop" to close the connection without an answer, as a killed worker does), then 204."""

    def __init__(self, plan: list[int | str], port: int = 0) -> None:
        self.plan = list(plan)
        self.received: list[str] = []  # ce-subject of each request
        function = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                step = function.plan.pop(0) if function.plan else 204
                function.received.append(f"{self.headers.get('ce-subject')} -> {step}")
                if step == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.send_response(int(step))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def bridge_to(url: str, feed: ChangeFeed, attempts: int = 5) -> Iterator[TriggerBridge]:
    bridge = TriggerBridge(feed.url, http_deliverer(url, timeout=5), event_type=EVENT_TYPE, document="mail/{docId}",
                           attempts=attempts, backoff_seconds=0.2, backoff_max_seconds=1.0)
    with bridge:
        yield bridge


def wait_for(condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_bridge_retries_5xx_and_a_dropped_connection_then_delivers() -> None:
    feed, function = ChangeFeed(), StandInFunction([500, "drop", 503])
    try:
        with bridge_to(function.url, feed) as bridge:
            feed.add("a")
            wait_for(lambda: bridge.seen["mail/a"] == 1)
            assert bridge.invocations["mail/a"] == 4 and bridge.failed_attempts == 3
            assert bridge.failures == [] and bridge.running
            feed.add("b")  # and the next document goes through at once
            wait_for(lambda: bridge.seen["mail/b"] == 1)
            assert bridge.invocations["mail/b"] == 1
    finally:
        feed.close()
        function.close()
    assert [line.split(" -> ")[1] for line in function.received] == ["500", "drop", "503", "204", "204"]


def test_the_bridge_waits_for_a_function_that_refuses_connections() -> None:
    port = free_port()  # nothing listens yet: connection refused, as after the function's worker died
    feed = ChangeFeed()
    function: StandInFunction | None = None
    try:
        with bridge_to(f"http://127.0.0.1:{port}/", feed, attempts=8) as bridge:
            feed.add("late")
            wait_for(lambda: bridge.failed_attempts >= 2)
            function = StandInFunction([], port=port)
            wait_for(lambda: bridge.seen["mail/late"] == 1)
            assert bridge.failures == [] and bridge.running
            assert function.received == ["documents/mail/late -> 204"]
    finally:
        feed.close()
        if function is not None:
            function.close()


def test_the_bridge_gives_up_after_its_attempts_names_the_document_and_keeps_going(caplog) -> None:  # type: ignore[no-untyped-def]
    feed, function = ChangeFeed(), StandInFunction([500, 500, 500])
    try:
        with bridge_to(function.url, feed, attempts=3) as bridge:
            feed.add("doomed")
            wait_for(lambda: bridge.seen["mail/doomed"] == 1)
            assert bridge.failures == ["mail/doomed"] and bridge.running
            feed.add("fine")
            wait_for(lambda: bridge.seen["mail/fine"] == 1)
            assert bridge.failures == ["mail/doomed"]
    finally:
        feed.close()
        function.close()
    assert any("gave up delivering mail/doomed" in record.getMessage() and "HTTP 500" in record.getMessage()
               for record in caplog.records)


def test_a_lost_change_feed_ends_the_bridge_with_a_reason() -> None:
    feed, function = ChangeFeed(), StandInFunction([])
    try:
        with bridge_to(function.url, feed) as bridge:
            feed.lines.put(None)  # the emulator closes the feed
            wait_for(lambda: not bridge.running)
            assert bridge.stopped_reason and "change feed" in bridge.stopped_reason
    finally:
        feed.close()
        function.close()


def test_check_names_a_process_that_exited(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    process = ManagedProcess("sh", ["sh", "-c", "exit 3"], tmp_path / "sh.log")
    stack._processes.append(("function process_mail", process))
    try:
        process.process.wait(timeout=10)
        dead = stack.check()
    finally:
        process.stop()
    assert dead is not None
    assert str(dead) == "function process_mail exited with code 3" and dead.log == tmp_path / "sh.log"


def test_check_is_quiet_while_everything_runs(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    process = ManagedProcess("sleep", ["sleep", "30"], tmp_path / "sleep.log")
    stack._processes.append(("function process_mail", process))
    try:
        assert stack.check() is None
    finally:
        process.stop()
