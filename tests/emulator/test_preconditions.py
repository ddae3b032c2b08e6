"""Preconditions and atomic commits behave as in real Firestore (the mail function's claim and
status writes rely on them)."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import firestore


@pytest.fixture
def mail(firestore_client: firestore.Client, unique_collection: str) -> firestore.CollectionReference:
    return firestore_client.collection(unique_collection)


def test_stale_update_time_is_refused_and_changes_nothing(firestore_client, mail):
    ref = mail.document("m1")
    ref.set({"delivery": {"state": "PENDING"}})
    stale = ref.get().update_time
    ref.update({"delivery.state": "PROCESSING"})
    current = ref.get()

    with pytest.raises(exceptions.FailedPrecondition):
        ref.update({"delivery.state": "SUCCESS"}, option=firestore_client.write_option(last_update_time=stale))

    after = ref.get()
    assert after.to_dict() == {"delivery": {"state": "PROCESSING"}}
    assert after.update_time == current.update_time


def test_matching_update_time_lets_the_write_through(firestore_client, mail):
    ref = mail.document("m1")
    ref.set({"delivery": {"state": "PENDING"}})
    seen = ref.get().update_time

    result = ref.update({"delivery.state": "PROCESSING"}, option=firestore_client.write_option(last_update_time=seen))

    after = ref.get()
    assert after.get("delivery.state") == "PROCESSING"
    assert after.update_time == result.update_time
    assert after.update_time > seen


def test_stale_update_time_also_guards_deletes(firestore_client, mail):
    ref = mail.document("m1")
    ref.set({"n": 1})
    stale = ref.get().update_time
    ref.set({"n": 2})

    with pytest.raises(exceptions.FailedPrecondition):
        ref.delete(option=firestore_client.write_option(last_update_time=stale))

    assert ref.get().to_dict() == {"n": 2}


def test_quick_successive_commits_get_distinct_increasing_update_times(mail):
    ref = mail.document("m1")
    times = [ref.set({"n": n}).update_time for n in range(5)]

    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert ref.get().update_time == times[-1]


def test_create_on_an_existing_document_raises_already_exists(mail):
    ref = mail.document("m1")
    ref.create({"to": "first@example.com"})

    with pytest.raises(exceptions.AlreadyExists):
        ref.create({"to": "second@example.com"})

    assert ref.get().to_dict() == {"to": "first@example.com"}


def test_update_on_a_missing_document_raises_not_found(mail):
    ref = mail.document("missing")

    with pytest.raises(exceptions.NotFound):
        ref.update({"delivery.state": "PROCESSING"})

    assert not ref.get().exists


def test_a_batch_with_one_failing_precondition_applies_none_of_its_writes(mail):
    kept = mail.document("kept")
    kept.set({"n": 1})
    batch = mail._client.batch()
    batch.set(mail.document("new"), {"n": 1})
    batch.update(kept, {"n": 2})
    batch.update(mail.document("missing"), {"n": 3})

    with pytest.raises(exceptions.NotFound):
        batch.commit()

    assert not mail.document("new").get().exists
    assert kept.get().to_dict() == {"n": 1}


def test_a_batch_with_a_stale_update_time_applies_none_of_its_writes(firestore_client, mail):
    guarded = mail.document("guarded")
    guarded.set({"n": 1})
    stale = guarded.get().update_time
    guarded.set({"n": 2})
    batch = firestore_client.batch()
    batch.set(mail.document("new"), {"n": 1})
    batch.update(guarded, {"n": 3}, option=firestore_client.write_option(last_update_time=stale))

    with pytest.raises(exceptions.FailedPrecondition):
        batch.commit()

    assert not mail.document("new").get().exists
    assert guarded.get().to_dict() == {"n": 2}
