"""Reads and writes of a mail document's `delivery` record in Firestore.

The claim is an update with an `update_time` precondition: it succeeds only if the document is still
exactly the version the caller saw. Real Firestore enforces that atomically, so of two attempts that saw
the same version only one can claim it, without a read on the happy path (the event carries the version).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore

from mailer.events import DocumentState

# Firestore errors that a moment later may not recur.
TRANSIENT_ERRORS = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.TooManyRequests,
    gexc.RetryError,
)
# Waits between tries of an outcome write: about 15 s in all, well inside any lease.
OUTCOME_WRITE_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)

_clients: dict[tuple[str, str], firestore.Client] = {}
_clients_lock = threading.Lock()


def client_for(project: str, database: str) -> firestore.Client:
    """One client per database for the life of the instance (gRPC channels are costly to open)."""
    key = (project, database)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = firestore.Client(project=project, database=database)
        return _clients[key]


class StatusStore:
    def __init__(self, client: firestore.Client) -> None:
        self._client = client

    def read(self, path: str) -> DocumentState | None:
        snapshot = self._client.document(path).get()
        if not snapshot.exists:
            return None
        return DocumentState(fields=snapshot.to_dict() or {}, update_time=snapshot.update_time)

    def write_if_unchanged(
        self, path: str, delivery: dict[str, Any], seen: DatetimeWithNanoseconds
    ) -> DatetimeWithNanoseconds | None:
        """Replace `delivery` if the document's update_time is still `seen`. Returns the new update_time,
        or None when the document changed or vanished since (someone else got there first)."""
        option = self._client.write_option(last_update_time=seen)
        try:
            result = self._client.document(path).update({"delivery": delivery}, option=option)
        except (gexc.FailedPrecondition, gexc.NotFound):
            return None
        return result.update_time

    def write(
        self,
        path: str,
        delivery: dict[str, Any],
        delays: tuple[float, ...] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """Replace `delivery` unconditionally (the outcome of a send must be recorded whatever else
        changed meanwhile), trying again through a short Firestore outage: an outcome that is not
        written leaves the document PROCESSING until its lease lapses, and then it is sent again.
        False if the document was deleted; raises the last error when Firestore stays unavailable."""
        for delay in (*(OUTCOME_WRITE_DELAYS if delays is None else delays), None):
            try:
                self._client.document(path).update({"delivery": delivery})
                return True
            except gexc.NotFound:
                return False
            except TRANSIENT_ERRORS:
                if delay is None:
                    raise
                sleep(delay)
        return False  # not reached
