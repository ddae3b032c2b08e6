"""Field-level writes behave as in real Firestore: nested server timestamps, dotted-path updates
that keep sibling fields, DELETE_FIELD, and set() replacing the whole document."""

from __future__ import annotations

import datetime

import pytest
from google.cloud import firestore


@pytest.fixture
def ref(firestore_client: firestore.Client, unique_collection: str) -> firestore.DocumentReference:
    return firestore_client.collection(unique_collection).document("m1")


def test_nested_server_timestamp_in_update_is_the_commit_time(ref):
    ref.set({"delivery": {"state": "PENDING"}})

    result = ref.update({"delivery.state": "PROCESSING", "delivery.startTime": firestore.SERVER_TIMESTAMP})

    delivery = ref.get().get("delivery")
    assert isinstance(delivery["startTime"], datetime.datetime)
    assert delivery["startTime"] == result.update_time
    assert delivery["state"] == "PROCESSING"


def test_nested_server_timestamp_in_set_is_a_real_timestamp(ref):
    result = ref.set({"to": "a@example.com", "delivery": {"state": "PENDING", "startTime": firestore.SERVER_TIMESTAMP}})

    data = ref.get().to_dict()
    assert data["delivery"] == {"state": "PENDING", "startTime": result.update_time}
    assert data["to"] == "a@example.com"


def test_dotted_update_changes_only_the_masked_fields(ref):
    ref.set({
        "to": "a@example.com",
        "delivery": {"state": "PENDING", "attempts": 2, "info": {"messageId": "<id@x>"}, "error": "old"},
    })

    ref.update({"delivery.state": "SUCCESS", "delivery.info.response": "250 OK"})

    assert ref.get().to_dict() == {
        "to": "a@example.com",
        "delivery": {"state": "SUCCESS", "attempts": 2, "info": {"messageId": "<id@x>", "response": "250 OK"}, "error": "old"},
    }


def test_delete_field_removes_only_that_field(ref):
    ref.set({"delivery": {"state": "ERROR", "error": "boom", "attempts": 1}})

    ref.update({"delivery.error": firestore.DELETE_FIELD, "delivery.state": "RETRY"})

    assert ref.get().to_dict() == {"delivery": {"state": "RETRY", "attempts": 1}}


def test_set_without_merge_replaces_the_whole_document(ref):
    ref.set({"to": "a@example.com", "delivery": {"state": "PENDING"}})

    ref.set({"to": "b@example.com"})

    assert ref.get().to_dict() == {"to": "b@example.com"}


def test_set_with_merge_keeps_unmentioned_fields(ref):
    ref.set({"to": "a@example.com", "delivery": {"state": "PENDING", "attempts": 0}})

    ref.set({"delivery": {"state": "PROCESSING"}}, merge=True)

    assert ref.get().to_dict() == {"to": "a@example.com", "delivery": {"state": "PROCESSING", "attempts": 0}}


def test_increment_on_a_nested_path(ref):
    ref.set({"delivery": {"attempts": 1}})

    ref.update({"delivery.attempts": firestore.Increment(1)})

    assert ref.get().get("delivery.attempts") == 2
