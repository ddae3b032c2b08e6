"""Every query the sweep sends is served by an index the Pulumi program declares.

The emulator answers any query; real Firestore fails one that needs a missing composite index with
FAILED_PRECONDITION, on the first sweep in the cloud. So the sweep runs against the emulator with
work in each of its queries (and more than a page, so cursor pages are sent too), the emulator's query
log gives what it actually asked, and each is checked against infra.sweep.SWEEP_INDEXES, the data the
program builds its gcp.firestore.Index resources from (tests/infra prove that side)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from infra.sweep import SWEEP_INDEXES
from mailer.handler import Handler
from mailer.status_store import client_for
from mailer.sweep import Sweeper
from tests.support.indexes import missing_index, needs_composite_index

from .test_sweep import MAIL, _processing, quiet, server  # noqa: F401 (fixtures)


def _seed(line) -> None:
    past = datetime.now(timezone.utc) - timedelta(seconds=5)
    for n in range(4):  # due retries, client requests, lapsed leases: more than a page of each
        line.doc(f"due-{n}").set({**MAIL, "delivery": {"state": "RETRY", "attempts": 1, "nextAttemptTime": past,
                                                         "messageId": None, "error": "SMTP 451"}})
        line.doc(f"asked-{n}").set({**MAIL, "delivery": {"state": "RETRY", "attempts": 1, "nextAttemptTime": None,
                                                           "error": "SMTP 554", "messageId": None}})
        _processing(line, f"lapsed-{n}", lease=timedelta(seconds=-5))


def _sweep_queries(line) -> list[dict]:
    line.emulator.reset_queries()
    report = Sweeper(Handler(), client_for, page_size=3).run()
    assert report.found == 12, report
    collection_id = line.collection
    return [q for q in line.emulator.queries() if q["collection"].rsplit("/", 1)[-1] == collection_id]


def test_every_query_the_sweep_runs_has_its_index(quiet):
    _seed(quiet)
    queries = _sweep_queries(quiet)
    shapes = {(tuple((f["field"], f["op"]) for f in q["filters"]), tuple((o["field"], o["direction"]) for o in q["orderBy"]))
              for q in queries}
    assert len(shapes) >= 3, shapes  # due, asked, lapsed (cursor pages share their query's shape)
    assert sum(needs_composite_index(q) for q in queries) >= 2  # the rule is exercised, not vacuous
    problems = [missing_index(q, SWEEP_INDEXES) for q in queries]
    assert [p for p in problems if p] == []


def test_the_check_fails_when_an_index_is_missing(quiet):
    _seed(quiet)
    queries = _sweep_queries(quiet)
    for dropped in range(len(SWEEP_INDEXES)):
        remaining = SWEEP_INDEXES[:dropped] + SWEEP_INDEXES[dropped + 1:]
        assert any(missing_index(q, remaining) for q in queries), f"index {dropped} is not needed by any query"
