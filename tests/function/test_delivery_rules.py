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


# -- retries, schedules and deliveries ----------------------------------------------------------------

def test_waiting_documents_are_claimable_only_once_due():
    assert not delivery.is_claimable(doc("RETRY", nextAttemptTime=NOW + timedelta(seconds=1)), NOW)
    assert delivery.is_claimable(doc("RETRY", nextAttemptTime=NOW), NOW)
    assert not delivery.is_claimable(doc("PENDING", nextAttemptTime=NOW + timedelta(days=1)), NOW)
    assert delivery.is_claimable(doc("PENDING", nextAttemptTime=None), NOW)  # a client's request


@pytest.mark.parametrize("attempt", range(1, 12))
def test_backoff_never_exceeds_the_schedule_and_jitter_only_shortens(attempt):
    base, cap = timedelta(seconds=60), timedelta(seconds=3600)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert delivery.backoff_delay(attempt, base, cap, rng=lambda: 0.0) == ceiling
    shortest = delivery.backoff_delay(attempt, base, cap, rng=lambda: 0.999999)
    assert ceiling / 2 <= shortest < ceiling


def _failed(claimed, reason="SMTP 451 4.3.0 later", **kwargs):
    kwargs.setdefault("transient", True)
    return delivery.failed(claimed, NOW, reason, info=None, max_attempts=3,
                           backoff=lambda k: timedelta(seconds=10 * k), **kwargs)


def test_a_transient_failure_is_retried_until_the_attempts_run_out():
    record = {}
    for attempt in (1, 2):
        claimed = delivery.claim(record, NOW, timedelta(minutes=2), message_id="<m@x>")
        record = _failed(claimed)
        assert record["state"] == "RETRY" and record["attempts"] == attempt
        assert record["nextAttemptTime"] == NOW + timedelta(seconds=10 * attempt)
        assert record["error"] == "SMTP 451 4.3.0 later"
    claimed = delivery.claim(record, NOW, timedelta(minutes=2), message_id="<m@x>")
    record = _failed(claimed)
    assert record["state"] == "ERROR" and record["attempts"] == 3 and record["nextAttemptTime"] is None
    assert record["error"] == "gave up after 3 attempts; last: SMTP 451 4.3.0 later"
    assert [entry["attempt"] for entry in record["attemptHistory"]] == [1, 2, 3]
    assert all(entry["time"] == NOW and entry["error"] == "SMTP 451 4.3.0 later" for entry in record["attemptHistory"])


def test_a_permanent_failure_ends_at_once():
    record = _failed(delivery.claim({}, NOW, timedelta(minutes=2)), "SMTP 550 5.1.1 no such user", transient=False)
    assert record["state"] == "ERROR" and record["error"] == "SMTP 550 5.1.1 no such user"
    assert record["nextAttemptTime"] is None and len(record["attemptHistory"]) == 1


def test_the_history_is_bounded_in_entries_and_length():
    record = {"attempts": 40, "attemptHistory": [delivery.history_entry(n, NOW, "x") for n in range(1, 41)]}
    claimed = delivery.claim(record, NOW, timedelta(minutes=2))
    after = delivery.failed(claimed, NOW, "y" * 5000, transient=True, info=None, max_attempts=100,
                            backoff=lambda k: timedelta(seconds=1))
    assert len(after["attemptHistory"]) == delivery.HISTORY_LIMIT
    assert after["attemptHistory"][-1]["attempt"] == 41
    assert len(after["attemptHistory"][-1]["error"]) == delivery.HISTORY_REASON_CHARS


def _finished(state, **extra):
    claimed = delivery.claim({}, NOW, timedelta(minutes=2), message_id="<first@x>")
    info = delivery.Info("<first@x>", accepted=["a@example.com"], rejected=["gone@example.com"])
    return {**delivery.finish(claimed, state, NOW, info=info, error="x" if state == "ERROR" else None), **extra}


def test_retries_and_takeovers_continue_the_delivery():
    retry = _failed(delivery.claim({}, NOW, timedelta(minutes=2), message_id="<first@x>"))
    assert delivery.continues_delivery(retry)
    processing = delivery.claim(retry, NOW, timedelta(minutes=2), message_id="<first@x>")
    assert delivery.continues_delivery(processing)


def test_a_clients_retry_after_error_continues_and_after_success_starts_anew():
    after_error = {**_finished("ERROR"), "state": "RETRY"}
    assert delivery.is_client_request(after_error) and delivery.continues_delivery(after_error)
    carried = delivery.carried_info(after_error)
    assert list(carried.accepted.listed) == ["a@example.com"] and not carried.rejected  # refused ones are asked again
    after_success = {**_finished("SUCCESS"), "state": "PENDING"}
    assert delivery.is_client_request(after_success) and not delivery.continues_delivery(after_success)
    claimed = delivery.claim(after_success, NOW, timedelta(minutes=2), message_id="<second@x>")
    assert claimed["info"] is None and claimed["attempts"] == 2 and claimed["messageId"] == "<second@x>"


def test_scheduled_and_backfilled_documents_are_not_client_requests():
    assert not delivery.is_client_request({"state": "PENDING", "nextAttemptTime": NOW, "attempts": 0})
    assert not delivery.is_client_request({"state": "PENDING", "nextAttemptTime": None, "attempts": 0})
    assert not delivery.continues_delivery(delivery.scheduled({}, NOW))


def test_recipients_who_accepted_or_refused_for_good_are_not_owed():
    carried = delivery.Info("<m@x>", accepted=["a@example.com"], rejected=["b@example.com"], pending=["c@example.com"])
    owed = delivery.owed_recipients(["a@example.com", "b@example.com", "c@example.com", "d@example.com"], carried)
    assert owed == ["c@example.com", "d@example.com"]
    merged = delivery.merged_info(carried, "<m@x>", accepted=["c@example.com"], pending=["d@example.com"], response="250 ok")
    assert list(merged.accepted.listed) == ["a@example.com", "c@example.com"]
    assert list(merged.rejected.listed) == ["b@example.com"] and list(merged.pending.listed) == ["d@example.com"]
    assert merged.response == "250 ok"


def test_every_record_carries_next_attempt_time_so_the_sweep_can_query_it():
    claimed = delivery.claim({}, NOW, timedelta(minutes=2))
    assert "nextAttemptTime" in claimed and claimed["nextAttemptTime"] is None
    for state in ("SUCCESS", "ERROR"):
        assert delivery.finish(claimed, state, NOW)["nextAttemptTime"] is None
    assert delivery.scheduled({}, NOW + timedelta(hours=1))["nextAttemptTime"] == NOW + timedelta(hours=1)
