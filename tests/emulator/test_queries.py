"""Queries filter as real Firestore does on what a reconciliation sweep would ask: nested fields,
null checks, ordering that leaves out documents lacking the field, limits after filters.
What the emulator does not implement (collection group queries) is refused loudly, not ignored."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import firestore
from google.cloud.firestore import FieldFilter


@pytest.fixture
def mail(firestore_client: firestore.Client, unique_collection: str) -> firestore.CollectionReference:
    collection = firestore_client.collection(unique_collection)
    collection.document("a").set({"n": 3, "delivery": {"state": "PROCESSING"}, "error": None})
    collection.document("b").set({"n": 1, "delivery": {"state": "SUCCESS"}, "error": "x"})
    collection.document("c").set({"n": 2, "delivery": {"state": "PROCESSING"}})
    collection.document("d").set({"delivery": {"state": "PROCESSING"}})
    return collection


def ids(query) -> list[str]:
    return [snapshot.id for snapshot in query.stream()]


def test_where_on_a_nested_field(mail):
    assert sorted(ids(mail.where(filter=FieldFilter("delivery.state", "==", "PROCESSING")))) == ["a", "c", "d"]


def test_where_equal_to_none_matches_only_null_fields(mail):
    assert ids(mail.where(filter=FieldFilter("error", "==", None))) == ["a"]


def test_order_by_leaves_out_documents_without_the_field_and_limit_applies_after_filtering(mail):
    query = mail.where(filter=FieldFilter("delivery.state", "==", "PROCESSING")).order_by("n").limit(2)

    assert ids(query) == ["c", "a"]


def test_collection_group_queries_are_refused_not_ignored(firestore_client, mail):
    with pytest.raises(exceptions.MethodNotImplemented, match="collection group"):
        ids(firestore_client.collection_group(mail.id))
