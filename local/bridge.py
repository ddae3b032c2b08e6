"""A local stand-in for Eventarc: the emulator's change feed in, CloudEvents out to the function.

It applies the deployed trigger's event type and `match-path-pattern` document filter, so the function
sees locally exactly the events it would see in the cloud, and no event for changes the cloud would
not deliver (such as the function's own status writes under a `created` trigger).

A delivery that fails (the function answers 5xx or another non-2xx status, refuses or drops the
connection, or times out) is one failed attempt: it is retried with exponential backoff, as the deployed
trigger's retry policy does, up to `attempts` times; then the document's path goes to `failures` and a
warning names it. A failed delivery never ends the bridge: only a lost change feed does, and then
`running` turns False and `stopped_reason` says why (the local stack's watchdog stops everything).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
import urllib.error
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
        """The HTTP status; raises OSError (URLError, ConnectionError, timeout) when there is none."""
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
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
        attempts: int = 5,
        backoff_seconds: float = 0.5,
        backoff_max_seconds: float = 8.0,
    ) -> None:
        self._changes_url = changes_url
        self._deliver = deliver
        self._event_type = event_type
        self._pattern = path_pattern(document)
        self._database = database
        self._location = location
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._backoff_max = backoff_max_seconds
        self.seen: Counter[str] = Counter()  # changes read from the feed, per document path
        self.invocations: Counter[str] = Counter()  # deliveries to the function, per document path
        self.failures: list[str] = []  # paths given up on after `attempts` failed deliveries
        self.failed_attempts = 0  # deliveries that failed (each retried until `attempts` is reached)
        self.stopped_reason: str | None = None  # why the thread ended, when not by stop()
        self._connection: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None  # the feed's (http.client lets go of it for a close-delimited body)
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
        sock = self._sock
        if sock is not None:
            try:  # unblocks the reader thread's pending read
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=10)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        url = urllib.parse.urlsplit(self._changes_url)
        self._connection = http.client.HTTPConnection(url.hostname, url.port)
        try:
            self._connection.request("GET", url.path or "/")
            self._sock = self._connection.sock
            response = self._connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            self.stopped_reason = f"change feed unavailable ({error or type(error).__name__})"
            log.error("%s at %s", self.stopped_reason, self._changes_url)
            return
        self._subscribed.set()
        try:
            for line in response:
                if self._stopping.is_set():
                    return
                if line.strip():
                    self._handle(json.loads(line))
            if not self._stopping.is_set():
                self.stopped_reason = "change feed ended (the emulator closed it)"
        except (OSError, http.client.HTTPException, ValueError) as error:
            if not self._stopping.is_set():
                self.stopped_reason = f"change feed lost ({error or type(error).__name__})"
        finally:
            self._connection.close()
            if self.stopped_reason and not self._stopping.is_set():
                log.error("%s; no more documents are delivered", self.stopped_reason)

    def _handle(self, change: dict[str, Any]) -> None:
        try:
            self._dispatch(change)
        except Exception:  # noqa: BLE001 - one bad change must not end the feed
            log.exception("could not deliver the change to %s", change.get("path"))
        finally:
            self.seen[change.get("path", "?")] += 1

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
        path = change["path"]
        for attempt in range(1, self._attempts + 1):
            self.invocations[path] += 1
            try:
                status = self._deliver(headers, body)
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out
                reason = describe_error(error)
            else:
                if 200 <= status < 300:
                    if attempt > 1:
                        log.warning("delivered %s on attempt %d", path, attempt)
                    return
                reason = f"HTTP {status}"
            self.failed_attempts += 1
            if attempt == self._attempts or self._stopping.is_set():
                break
            delay = min(self._backoff_max, self._backoff * 2 ** (attempt - 1))
            log.warning("delivery of %s failed (%s, attempt %d of %d); retrying in %g s", path, reason, attempt,
                        self._attempts, delay)
            if self._stopping.wait(delay):
                break
        self.failures.append(path)
        log.error("gave up delivering %s to the function after %d attempt(s) (last: %s)", path, attempt, reason)


def describe_error(error: BaseException) -> str:
    """A short reason for a failed HTTP call: 'Connection refused', 'timed out', ..."""
    reason: object = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
