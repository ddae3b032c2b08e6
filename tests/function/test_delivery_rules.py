"""Which events start an attempt, and what the records say. The end-to-end tests prove the same rules
against Firestore; these pin down every branch cheaply."""

from datetime import datetime, timedelta, timezone

import pytest

from mailer import delivery

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def doc(state=None, **extra):
    if state is None and not extra:
        return {"to": "a@example.com"}
    return {"to": "a@example.com", "delivery": {"state": state, **extra}}


@pytest.mark.parametrize(
    ("fields", "claimable"),
    [
        (doc(), True),
        (doc("PENDING"), True),
        (doc("RETRY"), True),
        (doc("SUCCESS"), False),
        (doc("ERROR"), False),
        (doc("PROCESSING", leaseExpireTime=NOW + timedelta(seconds=1)), False),
        (doc("PROCESSING", leaseExpireTime=NOW - timedelta(seconds=1)), True),
        (doc("PROCESSING"), True),  # a claim without a lease can never lapse otherwise
        ({"to": "a@example.com", "delivery": "garbage"}, True),
    ],
)
def test_is_claimable(fields, claimable):
    assert delivery.is_claimable(fields, NOW) is claimable


@pytest.mark.parametrize(
    ("old", "new", "wanted"),
    [
        (doc("ERROR"), doc("RETRY"), True),  # a client asks for another attempt
        (doc("SUCCESS"), doc("PENDING"), True),
        (doc("ERROR"), doc(), True),  # delivery record removed by the client
        (doc(), doc("PROCESSING", leaseExpireTime=NOW + timedelta(minutes=5)), False),  # our claim
        (doc("PROCESSING"), doc("SUCCESS"), False),  # our outcome
        (doc("PROCESSING"), doc("RETRY"), False),  # our transient failure: the sweep retries it, not the write
        (doc(), doc(), False),  # an app edits another field of a waiting document
        (doc("RETRY"), doc("RETRY"), False),
    ],
)
def test_updates_start_an_attempt_only_on_a_clients_request(old, new, wanted):
    for kind in ("updated", "written"):
        assert delivery.wants_attempt(kind, new, old, NOW) is wanted


def test_created_documents_start_an_attempt_unless_already_final():
    assert delivery.wants_attempt("created", doc(), None, NOW)
    assert not delivery.wants_attempt("created", doc("SUCCESS"), None, NOW)


def test_claim_counts_attempts_and_keeps_first_start():
    first = delivery.claim({}, NOW, timedelta(minutes=10))
    assert first["state"] == "PROCESSING" and first["attempts"] == 1
    assert first["startTime"] == NOW and first["leaseExpireTime"] == NOW + timedelta(minutes=10)
    later = NOW + timedelta(hours=1)
    second = delivery.claim({**first, "state": "RETRY"}, later, timedelta(minutes=10))
    assert second["attempts"] == 2 and second["startTime"] == NOW


def test_finish_sets_expiry_only_for_final_states():
    claimed = delivery.claim({}, NOW, timedelta(minutes=10))
    done = delivery.finish(claimed, "SUCCESS", NOW, info=delivery.Info(message_id="<m@x>"), ttl=timedelta(days=1))
    assert done["expireAt"] == NOW + timedelta(days=1)
    assert done["leaseExpireTime"] is None and done["endTime"] == NOW
    assert done["info"]["messageId"] == "<m@x>"
    retry = delivery.finish(claimed, "RETRY", NOW, error="SMTP 451 later", ttl=timedelta(days=1))
    assert "expireAt" not in retry and retry["error"] == "SMTP 451 later"
    assert "expireAt" not in delivery.finish(claimed, "ERROR", NOW, error="x", ttl=None)
