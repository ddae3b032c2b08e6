"""A local stand-in for Eventarc: the emulator's change feed in, CloudEvents out to the function.

It applies the deployed trigger's event type and `match-path-pattern` document filter, so the function
sees locally exactly the events it would see in the cloud, and no event for changes the cloud would
not deliver (such as the function's own status writes under a `created` trigger). A delivery that the
function answers with an error is retried a few times, as the deployed trigger's retry policy does.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

from local.eventarc import binary_event, path_pattern, receives

log = logging.getLogger("local.bridge")

# Deliver(headers, body) -> HTTP status code.
Deliver = Callable[[dict[str, str], bytes], int]


def http_deliverer(url: str, timeout: float = 120.0) -> Deliver:
    """POST events to a function served by functions-framework."""

    def deliver(headers: dict[str, str], body: bytes) -> int:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    return deliver


class TriggerBridge:
    def __init__(
        self,
        changes_url: str,
        deliver: Deliver,
        *,
        event_type: str,
        document: str,
        database: str = "(default)",
        location: str = "nam5",
        attempts: int = 3,
    ) -> None:
        self._changes_url = changes_url
        self._deliver = deliver
        self._event_type = event_type
        self._pattern = path_pattern(document)
        self._database = database
        self._location = location
        self._attempts = attempts
        self.seen: Counter[str] = Counter()  # changes read from the feed, per document path
        self.invocations: Counter[str] = Counter()  # deliveries to the function, per document path
        self.failures: list[str] = []
        self._connection: http.client.HTTPConnection | None = None
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trigger-bridge", daemon=True)

    def __enter__(self) -> TriggerBridge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"could not subscribe to the emulator's change feed at {self._changes_url}")

    def stop(self) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            try:  # unblocks the reader thread's pending read
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=10)

    def _run(self) -> None:
        url = urllib.parse.urlsplit(self._changes_url)
        self._connection = http.client.HTTPConnection(url.hostname, url.port)
        try:
            self._connection.request("GET", url.path or "/")
            response = self._connection.getresponse()
        except OSError:
            log.exception("change feed unavailable")
            return
        self._subscribed.set()
        try:
            for line in response:
                if self._stopping.is_set():
                    return
                if line.strip():
                    self._handle(json.loads(line))
        except OSError:
            if not self._stopping.is_set():
                log.exception("change feed lost")
        finally:
            self._connection.close()

    def _handle(self, change: dict[str, Any]) -> None:
        try:
            self._dispatch(change)
        finally:
            self.seen[change["path"]] += 1

    def _dispatch(self, change: dict[str, Any]) -> None:
        if change.get("database", "(default)") != self._database:
            return
        if not self._pattern.match(change["path"]) or not receives(self._event_type, change["kind"]):
            return
        project = change["document"].split("/")[1]
        headers, body = binary_event(
            self._event_type,
            project=project,
            database=self._database,
            path=change["path"],
            old=base64.b64decode(change["old"]) if change.get("old") else None,
            new=base64.b64decode(change["new"]) if change.get("new") else None,
            location=self._location,
        )
        for attempt in range(self._attempts):
            self.invocations[change["path"]] += 1
            status = self._deliver(headers, body)
            if 200 <= status < 300:
                return
            log.warning("function answered %s for %s (attempt %d)", status, change["path"], attempt + 1)
            time.sleep(0.2 * 2**attempt)
        self.failures.append(change["path"])
