"""__name__ in queries behaves as in real Firestore: filters compare document keys (a
DocumentReference, never a string), order_by("__name__") orders by key with ids in UTF-8 byte
order, and equal order_by values are ordered by __name__ in the direction of the last order_by.
The unpatched emulator returned nothing for `__name__ >=` and ids in insertion order."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import firestore
from google.cloud.firestore import FieldFilter

# Ids written out of order. Code point (= UTF-8 byte) order differs from JavaScript's UTF-16
# order for the last two: U+E000 sorts before the astral U+1F600 in UTF-8, after it in UTF-16.
IDS = ["m", "b", "B", "a1", "ab", "a", "z", "é", "\U0001F600", "\ue000"]
SORTED_IDS = sorted(IDS)  # Python orders str by code point, which is UTF-8 byte order


@pytest.fixture
def mail(firestore_client: firestore.Client, unique_collection: str) -> firestore.CollectionReference:
    collection = firestore_client.collection(unique_collection)
    for index, doc_id in enumerate(IDS):
        collection.document(doc_id).set({"n": index % 3})
    return collection


def ids(query) -> list[str]:
    return [snapshot.id for snapshot in query.stream()]


def test_the_fixture_ids_are_out_of_order_and_the_utf16_order_differs():
    assert IDS != SORTED_IDS
    utf16 = sorted(IDS, key=lambda s: s.encode("utf-16-be"))
    assert utf16 != SORTED_IDS


def test_order_by_name_ascending_orders_ids_by_utf8_bytes(mail):
    assert ids(mail.order_by("__name__")) == SORTED_IDS


def test_order_by_name_descending(mail):
    assert ids(mail.order_by("__name__", direction=firestore.Query.DESCENDING)) == SORTED_IDS[::-1]


def test_a_query_without_order_by_returns_documents_in_name_order(mail):
    assert ids(mail) == SORTED_IDS


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("==", lambda pivot: [i for i in SORTED_IDS if i == pivot]),
        ("!=", lambda pivot: [i for i in SORTED_IDS if i != pivot]),
        ("<", lambda pivot: [i for i in SORTED_IDS if i < pivot]),
        ("<=", lambda pivot: [i for i in SORTED_IDS if i <= pivot]),
        (">", lambda pivot: [i for i in SORTED_IDS if i > pivot]),
        (">=", lambda pivot: [i for i in SORTED_IDS if i >= pivot]),
    ],
)
def test_comparison_filters_on_name_compare_document_keys(mail, op, expected):
    pivot = "ab"

    found = ids(mail.where(filter=FieldFilter("__name__", op, mail.document(pivot))))

    assert found == expected(pivot)
    assert found  # every operator selects something here, so an empty result is a failure


def test_name_range_filter_on_an_id_that_does_not_exist(mail):
    found = ids(mail.where(filter=FieldFilter("__name__", ">=", mail.document("aa"))).where(
        filter=FieldFilter("__name__", "<", mail.document("m"))))

    assert found == ["ab", "b"]


def test_in_and_not_in_on_name(mail):
    wanted = [mail.document("z"), mail.document("a"), mail.document("missing")]

    assert ids(mail.where(filter=FieldFilter("__name__", "in", wanted))) == ["a", "z"]
    assert ids(mail.where(filter=FieldFilter("__name__", "not-in", wanted))) == [i for i in SORTED_IDS if i not in ("a", "z")]


def test_a_name_filter_with_a_string_is_refused_as_firestore_does(mail):
    # Real Firestore: "400 __key__ filter value must be a Key", also for a full document path.
    for value in ("ab", mail.document("ab")._document_path):
        with pytest.raises(exceptions.InvalidArgument, match="__key__ filter value must be a Key"):
            ids(mail.where(filter=FieldFilter("__name__", ">=", value)))
    with pytest.raises(exceptions.InvalidArgument, match="__key__ filter value must be a Key"):
        ids(mail.where(filter=FieldFilter("__name__", "in", ["ab"])))


def test_equal_values_are_ordered_by_name_ascending(mail):
    found = [(s.get("n"), s.id) for s in mail.order_by("n").stream()]

    assert found == sorted((index % 3, doc_id) for index, doc_id in enumerate(IDS))


def test_equal_values_are_ordered_by_name_in_the_direction_of_the_last_order_by(mail):
    found = [(s.get("n"), s.id) for s in mail.order_by("n", direction=firestore.Query.DESCENDING).stream()]

    assert found == sorted(((index % 3, doc_id) for index, doc_id in enumerate(IDS)), reverse=True)


def test_an_inequality_filter_orders_by_its_field_then_name(mail):
    found = [(s.get("n"), s.id) for s in mail.where(filter=FieldFilter("n", ">", 0)).stream()]

    assert found == sorted((index % 3, doc_id) for index, doc_id in enumerate(IDS) if index % 3 > 0)


def test_order_by_a_string_field_uses_utf8_byte_order(firestore_client, unique_collection):
    mail = firestore_client.collection(unique_collection)
    for index, text in enumerate(IDS):
        mail.document(f"d{index}").set({"s": text})

    assert [s.get("s") for s in mail.order_by("s").stream()] == SORTED_IDS
