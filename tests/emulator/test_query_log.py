"""GET /queries lists every RunQuery as its shape (collection, parent, filter fields and
operators, order_by as sent, limit), so a test can check each query against the composite
indexes real Firestore would demand. POST /reset empties it with the stats, DELETE /queries alone."""

from __future__ import annotations

import datetime

import pytest
from google.api_core import exceptions
from google.cloud import firestore
from google.cloud.firestore import FieldFilter, Or

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture
def log(firestore_emulator):
    firestore_emulator.reset_queries()
    return firestore_emulator


@pytest.fixture
def mail(firestore_client: firestore.Client, unique_collection: str) -> firestore.CollectionReference:
    collection = firestore_client.collection(unique_collection)
    collection.document("a").set({"delivery": {"state": "PENDING", "nextAttemptTime": NOW}})
    return collection


def mine(log, collection: str) -> list[dict]:
    """This test's entries (the emulator is shared by every test of the session)."""
    return [entry for entry in log.queries() if entry["collection"] == collection]


def test_the_sweep_queries_are_logged_as_their_shape(log, firestore_client, mail):
    waiting = FieldFilter("delivery.state", "in", ["PENDING", "RETRY"])
    list(mail.where(filter=waiting).where(filter=FieldFilter("delivery.nextAttemptTime", "<=", NOW))
         .order_by("delivery.nextAttemptTime").limit(50).stream())
    list(mail.where(filter=waiting).where(filter=FieldFilter("delivery.nextAttemptTime", "==", None)).limit(50).stream())
    list(mail.where(filter=FieldFilter("delivery.state", "==", "PROCESSING"))
         .where(filter=FieldFilter("delivery.leaseExpireTime", "<=", NOW))
         .order_by("delivery.leaseExpireTime").limit(25).stream())

    parent = f"projects/{log.project}/databases/(default)/documents"
    assert mine(log, mail.id) == [
        {
            "collection": mail.id,
            "parent": parent,
            "filters": [{"field": "delivery.state", "op": "IN"}, {"field": "delivery.nextAttemptTime", "op": "LESS_THAN_OR_EQUAL"}],
            "orderBy": [{"field": "delivery.nextAttemptTime", "direction": "ASCENDING"}],
            "limit": 50,
        },
        {
            "collection": mail.id,
            "parent": parent,
            "filters": [{"field": "delivery.state", "op": "IN"}, {"field": "delivery.nextAttemptTime", "op": "IS_NULL"}],
            "orderBy": [],
            "limit": 50,
        },
        {
            "collection": mail.id,
            "parent": parent,
            "filters": [{"field": "delivery.state", "op": "EQUAL"}, {"field": "delivery.leaseExpireTime", "op": "LESS_THAN_OR_EQUAL"}],
            "orderBy": [{"field": "delivery.leaseExpireTime", "direction": "ASCENDING"}],
            "limit": 25,
        },
    ]


def test_the_backfill_scan_is_logged_with_the_orders_the_client_sends(log, mail):
    first = list(mail.order_by("__name__").limit(100).stream())
    list(mail.order_by("__name__").limit(100).start_after(first[-1]).stream())
    list(mail.order_by("delivery.state", direction=firestore.Query.DESCENDING).start_after(first[-1]).stream())

    entries = mine(log, mail.id)

    assert [e["orderBy"] for e in entries] == [
        [{"field": "__name__", "direction": "ASCENDING"}],
        [{"field": "__name__", "direction": "ASCENDING"}],
        # A snapshot cursor makes the client send __name__ itself, in the last order's direction.
        [{"field": "delivery.state", "direction": "DESCENDING"}, {"field": "__name__", "direction": "DESCENDING"}],
    ]
    assert [e["filters"] for e in entries] == [[], [], []]
    assert [e["limit"] for e in entries] == [100, 100, None]


def test_or_filters_stay_nested_and_subcollection_parents_are_named(log, firestore_client, unique_collection):
    parent_doc = firestore_client.collection(unique_collection).document("p")
    sub = parent_doc.collection("attempts")
    either = Or([FieldFilter("n", ">", 1), FieldFilter("tag", "!=", "x")])
    list(sub.where(filter=FieldFilter("kind", "==", "k")).where(filter=either).stream())

    [entry] = [e for e in log.queries() if e["parent"] == parent_doc._document_path]
    assert entry == {
        "collection": "attempts",
        "parent": parent_doc._document_path,
        "filters": [
            {"field": "kind", "op": "EQUAL"},
            {"op": "OR", "filters": [{"field": "n", "op": "GREATER_THAN"}, {"field": "tag", "op": "NOT_EQUAL"}]},
        ],
        "orderBy": [],
        "limit": None,
    }


def test_queries_in_transactions_are_logged_once_and_failing_queries_too(log, firestore_client, mail):
    pending = mail.where(filter=FieldFilter("delivery.state", "==", "PENDING"))

    @firestore.transactional
    def touch(transaction):
        list(transaction.get(pending))
        transaction.set(mail.document("summary"), {"seen": True})

    touch(firestore_client.transaction())
    with pytest.raises(exceptions.InvalidArgument):
        list(mail.where(filter=FieldFilter("__name__", "==", "a")).stream())

    # The commit re-checks the transaction's query for conflicts; that is not a second RunQuery.
    assert [e["filters"] for e in mine(log, mail.id)] == [
        [{"field": "delivery.state", "op": "EQUAL"}],
        [{"field": "__name__", "op": "EQUAL"}],
    ]


def test_reset_empties_the_log_with_the_stats_and_delete_empties_only_the_log(log, mail):
    list(mail.stream())
    assert len(mine(log, mail.id)) == 1

    log.reset_stats()
    assert mine(log, mail.id) == []

    list(mail.stream())
    reads = log.stats()["reads"]
    log.reset_queries()
    assert mine(log, mail.id) == []
    assert log.stats()["reads"] == reads
