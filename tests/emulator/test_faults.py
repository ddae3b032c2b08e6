"""POST /faults makes the next N calls of one gRPC method fail with a chosen status, before the
handler runs (nothing changes, nothing is billed or logged). These tests also pin down what
google-cloud-firestore does with each failure by itself: it retries Commit on UNAVAILABLE (and
RESOURCE_EXHAUSTED), RunQuery/BatchGetDocuments/BeginTransaction on UNAVAILABLE, INTERNAL and
DEADLINE_EXCEEDED, and a @transactional function on ABORTED; everything else reaches the caller."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import firestore


@pytest.fixture
def faults(firestore_faults):
    return firestore_faults


@pytest.fixture
def ref(firestore_client: firestore.Client, unique_collection: str) -> firestore.DocumentReference:
    doc = firestore_client.collection(unique_collection).document("m1")
    doc.set({"n": 1})
    return doc


def test_an_unavailable_commit_is_retried_by_the_client_and_succeeds(faults, ref):
    faults.inject_fault("Commit", "UNAVAILABLE", count=1)

    ref.set({"n": 2})

    assert faults.faults() == []  # the fault fired: the first Commit failed, the retry went through
    assert ref.get().get("n") == 2


def test_without_retry_the_client_sees_unavailable_and_nothing_was_written(faults, ref):
    faults.inject_fault("Commit", "UNAVAILABLE")

    with pytest.raises(exceptions.ServiceUnavailable, match="injected fault"):
        ref.set({"n": 2}, retry=None)

    assert ref.get().get("n") == 1


def test_a_commit_that_fails_with_a_code_the_client_does_not_retry_reaches_the_caller(faults, ref):
    faults.inject_fault("Commit", "ABORTED")

    with pytest.raises(exceptions.Aborted, match="injected fault"):
        ref.update({"n": 2})

    assert ref.get().get("n") == 1


def test_count_fails_exactly_that_many_calls_then_lets_them_through(faults, ref):
    faults.inject_fault("Commit", "PERMISSION_DENIED", count=2)

    for _ in range(2):
        with pytest.raises(exceptions.PermissionDenied):
            ref.update({"n": 2})
    ref.update({"n": 3})

    assert ref.get().get("n") == 3


def test_a_code_may_be_given_as_its_number(faults, ref):
    faults.inject_fault("Commit", 14)

    assert faults.faults() == [{"method": "Commit", "code": "UNAVAILABLE", "remaining": 1}]
    with pytest.raises(exceptions.ServiceUnavailable):
        ref.set({"n": 2}, retry=None)


def test_run_query_faults(faults, ref):
    query = ref.parent.where(filter=firestore.FieldFilter("n", "==", 1))

    faults.inject_fault("RunQuery", "UNAVAILABLE")
    assert [s.id for s in query.stream()] == ["m1"]  # retried by the client
    assert faults.faults() == []

    faults.inject_fault("RunQuery", "UNAVAILABLE")
    with pytest.raises(exceptions.ServiceUnavailable, match="injected fault"):
        list(query.stream(retry=None))

    faults.inject_fault("RunQuery", "PERMISSION_DENIED")
    with pytest.raises(exceptions.PermissionDenied, match="injected fault"):
        list(query.stream())


def test_batch_get_documents_faults(faults, ref):
    faults.inject_fault("BatchGetDocuments", "UNAVAILABLE")
    assert ref.get().get("n") == 1  # retried by the client
    assert faults.faults() == []

    faults.inject_fault("BatchGetDocuments", "FAILED_PRECONDITION")
    with pytest.raises(exceptions.FailedPrecondition, match="injected fault"):
        ref.get()


def test_an_aborted_transaction_commit_reruns_the_whole_transaction(faults, firestore_client, ref):
    attempts = []

    @firestore.transactional
    def add_one(transaction: firestore.Transaction) -> None:
        attempts.append(1)
        n = ref.get(transaction=transaction).get("n")
        transaction.update(ref, {"n": n + 1})

    faults.inject_fault("Commit", "ABORTED")
    add_one(firestore_client.transaction())

    assert len(attempts) == 2
    assert ref.get().get("n") == 2


def test_a_transaction_aborted_on_every_attempt_gives_up_after_max_attempts(faults, firestore_client, ref):
    @firestore.transactional
    def add_one(transaction: firestore.Transaction) -> None:
        n = ref.get(transaction=transaction).get("n")
        transaction.update(ref, {"n": n + 1})

    faults.inject_fault("Commit", "ABORTED", count=5)
    with pytest.raises(ValueError, match="5 attempts") as raised:
        add_one(firestore_client.transaction(max_attempts=5))

    assert isinstance(raised.value.__cause__, exceptions.Aborted)
    assert ref.get().get("n") == 1


def test_a_begin_transaction_fault_that_is_not_retried_reaches_the_caller(faults, firestore_client, ref):
    @firestore.transactional
    def read(transaction: firestore.Transaction) -> int:
        return ref.get(transaction=transaction).get("n")

    faults.inject_fault("BeginTransaction", "UNAVAILABLE")
    assert read(firestore_client.transaction()) == 1  # retried by the client

    # google-cloud-firestore then tries to roll back a transaction that never began and raises
    # ValueError; the gRPC error is its __context__.
    faults.inject_fault("BeginTransaction", "PERMISSION_DENIED")
    with pytest.raises(ValueError, match="no transaction ID") as raised:
        read(firestore_client.transaction())

    assert isinstance(raised.value.__context__, exceptions.PermissionDenied)
    assert "injected fault" in str(raised.value.__context__)


def test_methods_the_package_still_serves_can_fail_too(faults, ref):
    faults.inject_fault("RunAggregationQuery", "PERMISSION_DENIED")

    with pytest.raises(exceptions.PermissionDenied, match="injected fault"):
        ref.parent.count().get()


def test_a_faulted_call_is_neither_billed_nor_logged(faults, ref):
    faults.reset_stats()
    faults.inject_fault("RunQuery", "PERMISSION_DENIED")
    faults.inject_fault("Commit", "PERMISSION_DENIED")

    with pytest.raises(exceptions.PermissionDenied):
        list(ref.parent.stream())
    with pytest.raises(exceptions.PermissionDenied):
        ref.set({"n": 5})

    assert [q for q in faults.queries() if q["collection"] == ref.parent.id] == []
    stats = faults.stats()
    assert ref.path not in stats["readsByDocument"]
    assert ref.path not in stats["writesByDocument"]


def test_a_fault_touches_only_its_method(faults, ref):
    faults.inject_fault("Commit", "PERMISSION_DENIED")

    assert ref.get().get("n") == 1
    assert [s.id for s in ref.parent.stream()] == ["m1"]
    assert faults.faults() == [{"method": "Commit", "code": "PERMISSION_DENIED", "remaining": 1}]


def test_faults_of_one_method_fire_in_the_order_they_were_armed(faults, ref):
    faults.inject_fault("Commit", "PERMISSION_DENIED")
    faults.inject_fault("Commit", "NOT_FOUND")

    with pytest.raises(exceptions.PermissionDenied):
        ref.update({"n": 2})
    with pytest.raises(exceptions.NotFound):
        ref.update({"n": 2})
    ref.update({"n": 2})


def test_delete_faults_disarms_everything(faults, ref):
    faults.inject_fault("Commit", "PERMISSION_DENIED", count=5)
    faults.inject_fault("RunQuery", "PERMISSION_DENIED")

    faults.clear_faults()

    assert faults.faults() == []
    ref.update({"n": 2})
    assert [s.id for s in ref.parent.stream()] == ["m1"]


@pytest.mark.parametrize(
    ("method", "code", "count", "complaint"),
    [
        ("Comit", "UNAVAILABLE", 1, "method must be one of"),
        ("Commit", "OK", 1, "code must be"),
        ("Commit", "NOT_A_CODE", 1, "code must be"),
        ("Commit", 99, 1, "code must be"),
        ("Commit", "UNAVAILABLE", 0, "count must be"),
    ],
)
def test_bad_fault_requests_are_refused(faults, method, code, count, complaint):
    with pytest.raises(ValueError, match=complaint):
        faults.inject_fault(method, code, count)

    assert faults.faults() == []
