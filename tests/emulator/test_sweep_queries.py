"""The sweep's three queries (plan: due, asked, lapsed) return what real Firestore returns: an
`in` on delivery.state with a range on a nested timestamp, ordered by that timestamp with ties
by __name__; `== None` on a nested field; a timestamp range matches only timestamps (never
null, a missing field, a string or a number)."""

from __future__ import annotations

import datetime

import pytest
from google.cloud import firestore
from google.cloud.firestore import FieldFilter

NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)


def at(seconds: float) -> datetime.datetime:
    return NOW + datetime.timedelta(seconds=seconds)


# id -> delivery; ids are chosen so that __name__ order differs from write order and time order.
DELIVERIES = {
    "p-past": {"state": "PENDING", "nextAttemptTime": at(-60)},
    "r-past": {"state": "RETRY", "nextAttemptTime": at(-120)},
    "r-now": {"state": "RETRY", "nextAttemptTime": NOW},
    "a-tie": {"state": "PENDING", "nextAttemptTime": at(-60)},
    "z-tie": {"state": "RETRY", "nextAttemptTime": at(-60)},
    "p-future": {"state": "PENDING", "nextAttemptTime": at(1)},
    "r-micro-late": {"state": "RETRY", "nextAttemptTime": at(0.000001)},
    "p-null": {"state": "PENDING", "nextAttemptTime": None},
    "r-null": {"state": "RETRY", "nextAttemptTime": None},
    "p-missing": {"state": "PENDING"},
    "p-string": {"state": "PENDING", "nextAttemptTime": "2000-01-01T00:00:00Z"},
    "p-number": {"state": "PENDING", "nextAttemptTime": 0},
    "s-past": {"state": "SUCCESS", "nextAttemptTime": at(-60)},
    "e-null": {"state": "ERROR", "nextAttemptTime": None},
    "w-past": {"state": "PROCESSING", "nextAttemptTime": at(-60), "leaseExpireTime": at(-5)},
    "w-early": {"state": "PROCESSING", "nextAttemptTime": None, "leaseExpireTime": at(-500)},
    "w-future": {"state": "PROCESSING", "nextAttemptTime": None, "leaseExpireTime": at(30)},
    "w-null": {"state": "PROCESSING", "leaseExpireTime": None},
    "w-string": {"state": "PROCESSING", "leaseExpireTime": "soon"},
}

WAITING = ["PENDING", "RETRY"]


@pytest.fixture
def mail(firestore_client: firestore.Client, unique_collection: str) -> firestore.CollectionReference:
    collection = firestore_client.collection(unique_collection)
    for doc_id, delivery in DELIVERIES.items():
        collection.document(doc_id).set({"to": "a@example.com", "delivery": delivery})
    collection.document("no-delivery").set({"to": "a@example.com"})
    return collection


def ids(query) -> list[str]:
    return [snapshot.id for snapshot in query.stream()]


def due(mail, now=NOW, limit=50):
    return (
        mail.where(filter=FieldFilter("delivery.state", "in", WAITING))
        .where(filter=FieldFilter("delivery.nextAttemptTime", "<=", now))
        .order_by("delivery.nextAttemptTime")
        .limit(limit)
    )


def test_due_returns_waiting_documents_whose_time_has_come_in_time_then_name_order(mail):
    assert ids(due(mail)) == ["r-past", "a-tie", "p-past", "z-tie", "r-now"]


def test_due_applies_the_limit_after_filtering_and_ordering(mail):
    assert ids(due(mail, limit=2)) == ["r-past", "a-tie"]


def test_due_is_exact_to_the_microsecond(mail):
    assert "r-micro-late" not in ids(due(mail))
    assert ids(due(mail, now=at(0.000001)))[-1] == "r-micro-late"


def test_due_pages_with_a_snapshot_cursor(mail):
    first = list(due(mail, limit=2).stream())
    rest = ids(due(mail, limit=50).start_after(first[-1]))

    assert [s.id for s in first] + rest == ["r-past", "a-tie", "p-past", "z-tie", "r-now"]


def test_a_timestamp_range_matches_only_timestamps(mail):
    everything_before = at(10**6)
    found = ids(mail.where(filter=FieldFilter("delivery.nextAttemptTime", "<=", everything_before)))

    assert sorted(found) == sorted(
        doc_id for doc_id, delivery in DELIVERIES.items()
        if isinstance(delivery.get("nextAttemptTime"), datetime.datetime)
    )
    for excluded in ("p-null", "p-missing", "p-string", "p-number", "no-delivery"):
        assert excluded not in found


def test_asked_matches_null_next_attempt_time_only(mail):
    asked = (
        mail.where(filter=FieldFilter("delivery.state", "in", WAITING))
        .where(filter=FieldFilter("delivery.nextAttemptTime", "==", None))
        .limit(50)
    )

    assert ids(asked) == ["p-null", "r-null"]


def test_equal_to_none_on_a_nested_field_alone(mail):
    found = ids(mail.where(filter=FieldFilter("delivery.nextAttemptTime", "==", None)))

    assert found == ["e-null", "p-null", "r-null", "w-early", "w-future"]


def test_lapsed_returns_processing_documents_whose_lease_expired_oldest_first(mail):
    lapsed = (
        mail.where(filter=FieldFilter("delivery.state", "==", "PROCESSING"))
        .where(filter=FieldFilter("delivery.leaseExpireTime", "<=", NOW))
        .order_by("delivery.leaseExpireTime")
        .limit(50)
    )

    assert ids(lapsed) == ["w-early", "w-past"]
