"""Transactions isolate as in real Firestore: a transaction whose reads changed before it
committed is ABORTED and the client retries it. The threads meet at a barrier after reading,
so every transaction has read the same state before any of them commits."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.cloud import firestore

WORKERS = 3
BARRIER_TIMEOUT_S = 20


def run_concurrently(firestore_emulator, body: Callable[[firestore.Transaction, Any, int], Any], ref_path: str) -> list[Any]:
    """Run `body` in WORKERS threads, each in its own transaction on its own client.

    On each thread's first attempt the transaction waits, after its reads, until all threads
    have read; retries (after ABORTED) run straight through.
    """
    barrier = threading.Barrier(WORKERS, timeout=BARRIER_TIMEOUT_S)

    def worker(index: int) -> Any:
        client = firestore_emulator.client()
        try:
            ref = client.document(ref_path)
            attempts = 0

            @firestore.transactional
            def attempt(transaction: firestore.Transaction) -> Any:
                nonlocal attempts
                attempts += 1
                return body(transaction, ref, index, barrier if attempts == 1 else None)

            return attempt(client.transaction())
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(worker, range(WORKERS)))


def claim_if_unclaimed(transaction, ref, index, barrier) -> bool:
    snapshot = ref.get(transaction=transaction)
    if barrier is not None:
        barrier.wait()
    if snapshot.get("delivery.state") != "PENDING":
        return False
    transaction.update(ref, {"delivery.state": "PROCESSING", "delivery.owner": index})
    return True


def increment(transaction, ref, index, barrier) -> None:
    count = ref.get(transaction=transaction).get("count")
    if barrier is not None:
        barrier.wait()
    transaction.update(ref, {"count": count + 1})


@pytest.fixture
def doc_path(unique_collection: str) -> str:
    return f"{unique_collection}/contended"


def test_concurrent_claims_have_exactly_one_winner(firestore_emulator, firestore_client, doc_path):
    firestore_client.document(doc_path).set({"delivery": {"state": "PENDING"}})

    wins = run_concurrently(firestore_emulator, claim_if_unclaimed, doc_path)

    assert sorted(wins) == [False, False, True]
    delivery = firestore_client.document(doc_path).get().get("delivery")
    assert delivery == {"state": "PROCESSING", "owner": wins.index(True)}


def test_concurrent_increments_lose_no_update(firestore_emulator, firestore_client, doc_path):
    firestore_client.document(doc_path).set({"count": 0})

    run_concurrently(firestore_emulator, increment, doc_path)

    assert firestore_client.document(doc_path).get().get("count") == WORKERS


def test_a_write_between_read_and_commit_aborts_and_the_retry_sees_it(firestore_client, doc_path):
    ref = firestore_client.document(doc_path)
    ref.set({"count": 10})
    seen: list[int] = []

    @firestore.transactional
    def add_one(transaction: firestore.Transaction) -> None:
        count = ref.get(transaction=transaction).get("count")
        seen.append(count)
        if len(seen) == 1:
            ref.update({"count": 100})  # a concurrent writer outside the transaction
        transaction.update(ref, {"count": count + 1})

    add_one(firestore_client.transaction())

    assert seen == [10, 100]
    assert ref.get().get("count") == 101


def test_a_query_whose_result_changes_aborts_the_transaction(firestore_client, unique_collection):
    mail = firestore_client.collection(unique_collection)
    mail.document("a").set({"state": "PENDING"})
    pending = mail.where(filter=firestore.FieldFilter("state", "==", "PENDING"))
    counts: list[int] = []

    @firestore.transactional
    def count_pending(transaction: firestore.Transaction) -> None:
        counts.append(len(list(transaction.get(pending))))
        if len(counts) == 1:
            mail.document("b").set({"state": "PENDING"})  # a phantom appears
        transaction.set(mail.document("summary"), {"pending": counts[-1]})

    count_pending(firestore_client.transaction())

    assert counts == [1, 2]
    assert mail.document("summary").get().get("pending") == 2
