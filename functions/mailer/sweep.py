"""The sweep: every document that is due gets its attempt, through the same path as the trigger.

Cloud Scheduler publishes to a Pub/Sub topic every minute; Eventarc delivers that to `sweep_mail`, and
one call works through what is due at the moment of the call:

    due      RETRY/PENDING whose nextAttemptTime has passed (backoff over, or sendAt reached)
    asked    RETRY/PENDING without nextAttemptTime (a client asked for another attempt)
    lapsed   PROCESSING whose lease has lapsed (the attempt holding it died)

Each query pages with a cursor; each document goes to Handler.process (claim with a precondition,
send, record), so a sweep that overlaps another sweep or the trigger cannot send twice. Attempts run on
a few threads (SWEEP_WORKERS) sharing the warm SMTP pool. A sweep stops starting attempts once its
budget (SWEEP_BUDGET_SECONDS, below the function's timeout) is spent; the rest waits for the next one.

Documents without any `delivery` are not found here (Firestore cannot query a missing field): those
are the backfill command's job.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from mailer import delivery
from mailer.events import DocumentState
from mailer.handler import Handler, Target
from mailer.settings import Settings, SettingsError

log = logging.getLogger("mailer.sweep")

PAGE_SIZE = 50
STATE = "delivery.state"
NEXT_ATTEMPT = "delivery.nextAttemptTime"
LEASE = "delivery.leaseExpireTime"
WAITING = [delivery.PENDING, delivery.RETRY]


@dataclass(frozen=True)
class SweepQuery:
    """One of the sweep's queries, built for a collection and the moment of the sweep; each orders by
    the field its cursor pages on. The composite index each needs is declared in infra/sweep.py; a test
    runs the sweep against the emulator and checks every query it sent against those indexes."""

    name: str
    build: Callable[[firestore.CollectionReference, datetime], firestore.Query]


def _due(collection: firestore.CollectionReference, now: datetime) -> firestore.Query:
    return (collection.where(filter=FieldFilter(STATE, "in", WAITING))
            .where(filter=FieldFilter(NEXT_ATTEMPT, "<=", now))
            .order_by(NEXT_ATTEMPT))


def _asked(collection: firestore.CollectionReference, now: datetime) -> firestore.Query:
    return (collection.where(filter=FieldFilter(STATE, "in", WAITING))
            .where(filter=FieldFilter(NEXT_ATTEMPT, "==", None))
            .order_by("__name__"))


def _lapsed(collection: firestore.CollectionReference, now: datetime) -> firestore.Query:
    return (collection.where(filter=FieldFilter(STATE, "==", delivery.PROCESSING))
            .where(filter=FieldFilter(LEASE, "<=", now))
            .order_by(LEASE))


QUERIES = (SweepQuery("due", _due), SweepQuery("asked", _asked), SweepQuery("lapsed", _lapsed))


@dataclass
class SweepReport:
    found: int = 0  # documents the queries returned
    outcomes: Counter[str] = field(default_factory=Counter)  # state left (or "skipped", "failed") per attempt
    queries: int = 0
    out_of_time: bool = False
    seconds: float = 0.0

    def as_fields(self) -> dict[str, Any]:
        return {"found": self.found, "outcomes": dict(self.outcomes), "queries": self.queries,
                "outOfTime": self.out_of_time, "seconds": round(self.seconds, 3)}


def _pages(query: firestore.Query, page_size: int, counter: SweepReport) -> Iterator[list[Any]]:
    """The query's results a page at a time, each page starting after the last document of the one before
    (documents the sweep changes meanwhile keep the cursor valid: it holds values, not positions)."""
    cursor = None
    while True:
        page_query = query.limit(page_size) if cursor is None else query.start_after(cursor).limit(page_size)
        counter.queries += 1
        page = list(page_query.stream())
        if page:
            yield page
        if len(page) < page_size:
            return
        cursor = page[-1]


class Sweeper:
    def __init__(
        self,
        handler: Handler,
        client_for: Callable[[str, str], firestore.Client],
        monotonic: Callable[[], float] = time.monotonic,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.handler = handler
        self.client_for = client_for
        self.monotonic = monotonic
        self.page_size = page_size

    def run(self, now: datetime | None = None) -> SweepReport:
        """One sweep over everything due at `now` (default: the handler's clock)."""
        started = self.monotonic()
        report = SweepReport()
        try:
            settings = self.handler.deps.settings()
        except SettingsError as exc:
            log.error("sweep skipped: function configuration: %s", exc)
            return report
        if not settings.project:
            log.error("sweep skipped: function configuration: GOOGLE_CLOUD_PROJECT is not set")
            return report
        now = now or self.handler.deps.clock()
        deadline = started + settings.sweep_budget.total_seconds()
        collection = self.client_for(settings.project, settings.database).collection(settings.mail_collection)
        with ThreadPoolExecutor(max_workers=settings.sweep_workers, thread_name_prefix="sweep") as workers:
            for query in QUERIES:
                if not self._sweep_query(query, collection, now, settings, deadline, workers, report):
                    break
        report.seconds = self.monotonic() - started
        log.info("sweep done", extra={"fields": report.as_fields()})
        return report

    def _sweep_query(
        self,
        query: SweepQuery,
        collection: firestore.CollectionReference,
        now: datetime,
        settings: Settings,
        deadline: float,
        workers: ThreadPoolExecutor,
        report: SweepReport,
    ) -> bool:
        """Attempt every document one query finds; False once the budget is spent."""
        try:
            for page in _pages(query.build(collection, now), self.page_size, report):
                report.found += len(page)
                # A page at a time: the next query page is read only once these attempts are done, so
                # a document is never attempted by two workers of one sweep.
                outcomes = workers.map(lambda snapshot: self._attempt(snapshot, query.name, settings), page)
                report.outcomes.update(outcomes)
                if self.monotonic() >= deadline:
                    report.out_of_time = True
                    log.warning("sweep budget spent; the rest waits for the next sweep",
                                extra={"fields": report.as_fields()})
                    return False
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            # Firestore failed the query itself: nothing was claimed, the next sweep asks again.
            log.error("sweep query %s failed: %s", query.name, type(exc).__name__)
            report.outcomes["query failed"] += 1
        return True

    def _attempt(self, snapshot: Any, query: str, settings: Settings) -> str:
        fields = snapshot.to_dict() or {}
        # The query saw the document a moment ago; whether it is still due is decided on what it holds.
        if not delivery.is_claimable(fields, self.handler.deps.clock()):
            return "skipped"
        reference = snapshot.reference
        target = Target(settings.project or "", settings.database, reference.path)
        ctx = {"document": reference.path, "sweep": query}
        try:
            return self.handler.process(target, DocumentState(fields, snapshot.update_time), ctx)
        except Exception as exc:  # one document's Firestore failure must not end the sweep for the others
            log.error("sweep attempt failed: %s", type(exc).__name__, extra={"fields": ctx})
            return "failed"

