"""GET /stats counts operations as Firestore bills them: one write per write of a successful
commit (transforms included), one read per document a read returns."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import firestore


@pytest.fixture
def fresh_stats(firestore_emulator):
    firestore_emulator.reset_stats()
    return firestore_emulator


def test_each_write_of_a_commit_is_one_write_and_transforms_add_none(fresh_stats, firestore_client, unique_collection):
    mail = firestore_client.collection(unique_collection)
    mail.document("a").set({"delivery": {"state": "PENDING"}})
    mail.document("a").update({"delivery.state": "PROCESSING", "delivery.startTime": firestore.SERVER_TIMESTAMP})
    batch = firestore_client.batch()
    batch.set(mail.document("b"), {"n": 1})
    batch.delete(mail.document("a"))
    batch.commit()

    stats = fresh_stats.stats()

    assert stats["commits"] == 3
    assert stats["writes"] == 4
    assert stats["reads"] == 0
    assert stats["writesByDocument"] == {f"{unique_collection}/a": 3, f"{unique_collection}/b": 1}


def test_failed_commits_bill_no_writes(fresh_stats, firestore_client, unique_collection):
    ref = firestore_client.collection(unique_collection).document("a")
    ref.create({"n": 1})
    with pytest.raises(exceptions.AlreadyExists):
        ref.create({"n": 2})

    stats = fresh_stats.stats()

    assert (stats["commits"], stats["writes"]) == (1, 1)


def test_each_returned_document_is_one_read(fresh_stats, firestore_client, unique_collection):
    mail = firestore_client.collection(unique_collection)
    for doc_id in ("a", "b", "c"):
        mail.document(doc_id).set({"state": "PENDING" if doc_id != "c" else "SUCCESS"})
    fresh_stats.reset_stats()

    mail.document("a").get()
    list(mail.where(filter=firestore.FieldFilter("state", "==", "PENDING")).stream())

    stats = fresh_stats.stats()
    assert stats["reads"] == 3
    assert stats["writes"] == 0
    assert stats["readsByDocument"] == {f"{unique_collection}/a": 2, f"{unique_collection}/b": 1}


def test_reset_zeroes_every_counter(fresh_stats, firestore_client, unique_collection):
    firestore_client.collection(unique_collection).document("a").set({"n": 1})
    firestore_client.collection(unique_collection).document("a").get()

    fresh_stats.reset_stats()

    assert fresh_stats.stats() == {"commits": 0, "writes": 0, "reads": 0, "writesByDocument": {}, "readsByDocument": {}}
