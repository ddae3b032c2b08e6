"""GET /changes streams one record per changed document in commit order, with the Document
protobufs before and after exactly as a later read returns them."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1.types import Document


def next_change_for(feed, path: str) -> dict[str, Any]:
    """The next record about `path` (the emulator is shared; other documents may change too)."""
    for change in feed:
        if change["path"] == path:
            return change
    raise AssertionError("change feed ended")


def decode(document_bytes: bytes) -> Document:
    return Document.deserialize(document_bytes)


@pytest.fixture
def ref(firestore_client: firestore.Client, unique_collection: str) -> firestore.DocumentReference:
    return firestore_client.collection(unique_collection).document("m1")


def test_create_update_delete_carry_exact_documents(firestore_emulator, ref):
    path = f"{ref.parent.id}/m1"
    with firestore_emulator.changes() as feed:
        ref.set({"to": "a@example.com", "delivery": {"state": "PENDING"}})
        created_snapshot = ref.get()
        created = next_change_for(feed, path)
        ref.update({"delivery.state": "SUCCESS"})
        updated_snapshot = ref.get()
        updated = next_change_for(feed, path)
        ref.delete()
        deleted = next_change_for(feed, path)

    assert created["kind"] == "created"
    assert created["old"] is None
    assert created["document"] == ref._document_path
    assert created["database"] == "(default)"
    new = decode(created["new"])
    assert new.name == ref._document_path
    assert new.update_time == created_snapshot.update_time
    assert new.create_time == created_snapshot.create_time
    assert new.fields["delivery"].map_value.fields["state"].string_value == "PENDING"

    assert updated["kind"] == "updated"
    assert updated["old"] == created["new"]
    after = decode(updated["new"])
    assert after.update_time == updated_snapshot.update_time
    assert after.create_time == created_snapshot.create_time
    assert after.fields["delivery"].map_value.fields["state"].string_value == "SUCCESS"
    assert after.fields["to"].string_value == "a@example.com"

    assert deleted["kind"] == "deleted"
    assert deleted["old"] == updated["new"]
    assert deleted["new"] is None


def test_the_update_time_in_the_feed_satisfies_a_precondition(firestore_emulator, firestore_client, ref):
    path = f"{ref.parent.id}/m1"
    with firestore_emulator.changes() as feed:
        ref.set({"delivery": {"state": "PENDING"}})
        seen = decode(next_change_for(feed, path)["new"]).update_time

    ref.update({"delivery.state": "PROCESSING"}, option=firestore_client.write_option(last_update_time=seen))

    assert ref.get().get("delivery.state") == "PROCESSING"


def test_change_time_is_the_commit_time(firestore_emulator, ref):
    path = f"{ref.parent.id}/m1"
    with firestore_emulator.changes() as feed:
        result = ref.set({"n": 1})
        change = next_change_for(feed, path)

    assert change["time"] == result.update_time.isoformat().replace("+00:00", "Z")


def test_one_record_per_document_of_a_batch_in_commit_order(firestore_emulator, firestore_client, unique_collection):
    mail = firestore_client.collection(unique_collection)
    with firestore_emulator.changes() as feed:
        batch = firestore_client.batch()
        batch.set(mail.document("b"), {"n": 1})
        batch.set(mail.document("a"), {"n": 1})
        batch.commit()
        mail.document("a").update({"n": 2})
        records = [next(feed) for _ in range(3)]

    assert [(r["path"].split("/")[1], r["kind"]) for r in records] == [("b", "created"), ("a", "created"), ("a", "updated")]
    assert records[0]["time"] == records[1]["time"] < records[2]["time"]


def test_a_write_that_changes_nothing_emits_nothing(firestore_emulator, ref):
    path = f"{ref.parent.id}/m1"
    ref.set({"n": 1})
    first = ref.get().update_time
    with firestore_emulator.changes(timeout=10) as feed:
        ref.set({"n": 1})  # no-op, as in real Firestore: no event, update_time kept
        ref.set({"n": 2})
        change = next_change_for(feed, path)

    assert decode(change["old"]).update_time == first
    assert decode(change["new"]).fields["n"].integer_value == 2


def test_every_subscriber_sees_every_change(firestore_emulator, ref):
    path = f"{ref.parent.id}/m1"
    with firestore_emulator.changes() as first, firestore_emulator.changes() as second:
        ref.set({"n": 1})
        ref.set({"n": 2})
        seen_first = [next_change_for(first, path) for _ in range(2)]
        seen_second = [next_change_for(second, path) for _ in range(2)]

    assert seen_first == seen_second
    assert [r["kind"] for r in seen_first] == ["created", "updated"]


def test_records_name_their_database(firestore_emulator, unique_collection):
    client = firestore_emulator.client(database="other-db")
    try:
        ref = client.collection(unique_collection).document("m1")
        with firestore_emulator.changes() as feed:
            ref.set({"n": 1})
            change = next_change_for(feed, f"{unique_collection}/m1")
    finally:
        client.close()

    assert change["database"] == "other-db"
    assert change["document"] == f"projects/{firestore_emulator.project}/databases/other-db/documents/{unique_collection}/m1"
    assert decode(change["new"]).name == change["document"]
