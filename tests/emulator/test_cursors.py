"""Query cursors behave as in real Firestore: start_at / start_after / end_at / end_before with
values or a snapshot, on field orders and on __name__, ascending and descending, with limit;
a pagination loop visits every document exactly once. The unpatched emulator refused cursors."""

from __future__ import annotations

import pytest
from google.cloud import firestore
from google.cloud.firestore import FieldFilter

ASC = firestore.Query.ASCENDING
DESC = firestore.Query.DESCENDING

# (id, n): ties on n, so snapshot cursors must fall back on __name__ to be exact.
ROWS = [("a", 1), ("b", 2), ("c", 2), ("d", 2), ("e", 3), ("f", 4), ("g", 4)]


@pytest.fixture
def mail(firestore_client: firestore.Client, unique_collection: str) -> firestore.CollectionReference:
    collection = firestore_client.collection(unique_collection)
    for doc_id, n in reversed(ROWS):
        collection.document(doc_id).set({"n": n, "state": "PENDING" if n % 2 == 0 else "SUCCESS"})
    return collection


def ids(query) -> list[str]:
    return [snapshot.id for snapshot in query.stream()]


@pytest.mark.parametrize(
    ("cursor", "expected"),
    [
        (lambda q: q.start_at({"n": 2}), "bcdefg"),
        (lambda q: q.start_after({"n": 2}), "efg"),
        (lambda q: q.end_at({"n": 2}), "abcd"),
        (lambda q: q.end_before({"n": 2}), "a"),
        (lambda q: q.start_after({"n": 1}).end_before({"n": 4}), "bcde"),
        (lambda q: q.start_at({"n": 2.5}), "efg"),  # a value between documents; doubles and integers compare
    ],
)
def test_value_cursors_on_an_ascending_field(mail, cursor, expected):
    assert ids(cursor(mail.order_by("n"))) == list(expected)


@pytest.mark.parametrize(
    ("cursor", "expected"),
    [
        (lambda q: q.start_at({"n": 2}), "dcba"),
        (lambda q: q.start_after({"n": 2}), "a"),
        (lambda q: q.end_at({"n": 2}), "gfedcb"),
        (lambda q: q.end_before({"n": 2}), "gfe"),
    ],
)
def test_value_cursors_on_a_descending_field(mail, cursor, expected):
    # Descending on n; the implicit __name__ order is descending too.
    assert ids(cursor(mail.order_by("n", direction=DESC))) == list(expected)


def test_snapshot_cursors_are_exact_on_ties(mail):
    c = mail.document("c").get()

    assert ids(mail.order_by("n").start_after(c)) == list("defg")
    assert ids(mail.order_by("n").start_at(c)) == list("cdefg")
    assert ids(mail.order_by("n").end_before(c)) == list("ab")
    assert ids(mail.order_by("n").end_at(c)) == list("abc")
    assert ids(mail.order_by("n", direction=DESC).start_after(c)) == list("ba")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (lambda m: m.order_by("__name__").start_after({"__name__": "c"}), "defg"),
        (lambda m: m.order_by("__name__").start_at({"__name__": m.document("c")}), "cdefg"),
        (lambda m: m.order_by("__name__").end_before({"__name__": "c"}), "ab"),
        (lambda m: m.order_by("__name__").end_at({"__name__": "c"}), "abc"),
        (lambda m: m.order_by("__name__", direction=DESC).start_after({"__name__": "c"}), "ba"),
        (lambda m: m.order_by("__name__", direction=DESC).end_at({"__name__": "c"}), "gfedc"),
        (lambda m: m.order_by("__name__").start_after(m.document("b").get()).limit(2), "cd"),
        (lambda m: m.order_by("__name__").start_after({"__name__": "bb"}), "cdefg"),  # no such document
    ],
)
def test_cursors_on_name(mail, query, expected):
    assert ids(query(mail)) == list(expected)


def test_cursor_with_two_orders_and_limit(mail):
    query = mail.order_by("n").order_by("__name__", direction=DESC)

    assert ids(query) == list("adcbegf")
    assert ids(query.start_after({"n": 2, "__name__": "c"}).limit(3)) == list("beg")


def test_a_snapshot_cursor_on_a_filtered_query_orders_by_the_inequality_field(mail):
    # The client adds order_by n (the inequality field) and __name__ for a snapshot cursor.
    query = mail.where(filter=FieldFilter("n", ">=", 2))
    d = mail.document("d").get()

    assert ids(query.start_after(d)) == list("efg")


def test_cursors_combine_with_equality_filters_and_limit(mail):
    pending = mail.where(filter=FieldFilter("state", "==", "PENDING")).order_by("n")

    assert ids(pending) == list("bcdfg")
    assert ids(pending.start_after(mail.document("c").get()).limit(2)) == list("df")


def test_limit_to_last(mail):
    # The client runs the query with its orders reversed and flips the result back. (It does not
    # swap cursors, so limit_to_last with a cursor misbehaves against real Firestore too.)
    assert [s.id for s in mail.order_by("n").limit_to_last(3).get()] == list("efg")


def paginate(query, page_size: int) -> tuple[list[str], int]:
    """The backfill's loop: pages of `page_size`, each starting after the last snapshot."""
    seen: list[str] = []
    pages = 0
    page_query = query.limit(page_size)
    while True:
        page = list(page_query.stream())
        if not page:
            return seen, pages
        pages += 1
        seen.extend(snapshot.id for snapshot in page)
        page_query = query.limit(page_size).start_after(page[-1])


@pytest.fixture
def many(firestore_client: firestore.Client, unique_collection: str) -> firestore.CollectionReference:
    collection = firestore_client.collection(unique_collection)
    batch = firestore_client.batch()
    for index in range(1234):
        batch.set(collection.document(f"doc{index}"), {"n": index % 7})
        if index % 400 == 399:
            batch.commit()
            batch = firestore_client.batch()
    batch.commit()
    return collection


def test_pagination_by_name_visits_every_document_exactly_once(many):
    seen, pages = paginate(many.order_by("__name__"), 100)

    assert len(seen) == 1234
    assert seen == sorted(f"doc{index}" for index in range(1234))
    assert pages == 13


def test_pagination_by_a_field_with_ties_visits_every_document_exactly_once(many):
    seen, _ = paginate(many.order_by("n", direction=DESC), 100)

    assert len(seen) == len(set(seen)) == 1234
