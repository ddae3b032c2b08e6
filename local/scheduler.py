"""A local stand-in for Cloud Scheduler -> Pub/Sub -> Eventarc: every `period` seconds it posts one Pub/Sub
CloudEvent (binary mode, as Eventarc delivers it) to the sweep function.

Unlike Cloud Scheduler it never overlaps itself: the next call starts only after the previous one has
returned (at once if that took longer than a period; missed ticks are not made up). A call that fails
(connection refused, a timeout, an HTTP error status) is counted and logged, never raised: the next
tick calls again, as the cloud's scheduler would. The sweep itself is safe to overlap (every attempt
claims its document with a precondition); not overlapping here keeps the demo's logs readable.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from local.bridge import Deliver

log = logging.getLogger("local.scheduler")

# Event() -> (headers, body): a fresh CloudEvent per tick (a new ce-id and publish time, as Pub/Sub gives).
Event = Callable[[], tuple[dict[str, str], bytes]]
STOP_WAIT_SECONDS = 5.0


def describe_failure(error: BaseException) -> str:
    """A short reason for a failed call: 'Connection refused', 'timed out', ..."""
    reason: object = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


class SweepScheduler:
    """Calls `deliver(*event())` every `period` seconds on its own thread, one call at a time.

    sweeps: calls made; succeeded / failed: how they ended (2xx is success); last_failure: the reason of
    the latest failed call."""

    def __init__(self, deliver: Deliver, event: Event, period: float, *, name: str = "sweep-scheduler") -> None:
        if period <= 0:
            raise ValueError(f"period must be positive, not {period}")
        self.period = period
        self._deliver = deliver
        self._event = event
        self.sweeps = 0
        self.succeeded = 0
        self.failed = 0
        self.last_failure: str | None = None
        self._failing_since: int | None = None  # the sweep number that began a run of failures
        self._stopping = threading.Event()
        self._calling = threading.Lock()  # held by a call in progress, and by paused()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> SweepScheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No new calls; waits a little for one in progress (the sweep function stops after us, which
        ends any call still running). Safe to call twice, or without start()."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_WAIT_SECONDS)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No calls inside this block: waits for a call in progress to return; ticks meanwhile are skipped
        (the benchmark posts sweeps of its own there and bills exactly those)."""
        with self._calling:
            yield

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        next_call = time.monotonic() + self.period  # the first tick is one period after start, as a cron's
        while not self._stopping.wait(max(0.0, next_call - time.monotonic())):
            started = time.monotonic()
            if self._calling.acquire(blocking=False):
                try:
                    self._call()
                finally:
                    self._calling.release()
            next_call = started + self.period

    def _call(self) -> None:
        self.sweeps += 1
        number = self.sweeps
        try:
            headers, body = self._event()
            status = self._deliver(headers, body)
        except Exception as error:  # noqa: BLE001 - any failure of one call is the next tick's business
            reason = describe_failure(error)
        else:
            if 200 <= status < 300:
                self.succeeded += 1
                if self._failing_since is not None:
                    log.warning("sweep %d succeeded; the %d call(s) before it had failed", number,
                                number - self._failing_since)
                    self._failing_since = None
                return
            reason = f"HTTP {status}"
        self.failed += 1
        self.last_failure = reason
        if self._stopping.is_set():
            return  # the sweep function is being stopped with us
        if self._failing_since is None:
            self._failing_since = number
            log.warning("sweep %d failed (%s); calling again every %g s", number, reason, self.period)
        else:
            log.debug("sweep %d failed (%s)", number, reason)
