"""`python -m ops.backfill` against the project's emulator (a real gRPC Firestore, tests/support/firestore.py):
what a dry run counts and costs, what --apply writes and never writes, and how it stops."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as google_errors
from google.cloud import firestore

from mailer import delivery as mailer_delivery
from ops import backfill

ROOT = Path(__file__).resolve().parents[2]
STATES = ("PENDING", "PROCESSING", "RETRY", "SUCCESS", "ERROR")
LATER = datetime.now(timezone.utc) + timedelta(days=1)


def delivered_record(state: str) -> dict[str, Any]:
    """A delivery record as the function leaves it, visible to the sweep's queries but not due now."""
    record: dict[str, Any] = {"state": state, "attempts": 1, "nextAttemptTime": None, "leaseExpireTime": None}
    if state in ("PENDING", "RETRY"):
        record["nextAttemptTime"] = LATER
    if state == "PROCESSING":
        record["leaseExpireTime"] = LATER
    return record


def mail_fields(index: int) -> dict[str, Any]:
    return {"to": f"person{index}@example.com", "message": {"subject": f"Secret subject {index}", "text": "body"}}


def write_all(client: firestore.Client, collection: str, documents: dict[str, dict[str, Any]]) -> None:
    items = list(documents.items())
    for start in range(0, len(items), 500):
        batch = client.batch()
        for doc_id, fields in items[start:start + 500]:
            batch.set(client.collection(collection).document(doc_id), fields)
        batch.commit()


def seed(client: firestore.Client, collection: str, count: int) -> list[str]:
    """`count` mail documents with ids 0000, 0001, ...: two in five never processed (every third of those
    with `delivery: null`, the rest with no field), the others with a delivery record in each state in turn.
    Returns the ids without delivery, in name order."""
    documents: dict[str, dict[str, Any]] = {}
    undelivered = []
    for index in range(count):
        doc_id = f"{index:04d}"
        fields = mail_fields(index)
        if index % 5 in (0, 2):
            undelivered.append(doc_id)
            if len(undelivered) % 3 == 0:
                fields["delivery"] = None
        else:
            fields["delivery"] = delivered_record(STATES[index % len(STATES)])
        documents[doc_id] = fields
    write_all(client, collection, documents)
    return undelivered


def contents(client: firestore.Client, collection: str) -> dict[str, tuple[dict[str, Any], datetime]]:
    return {snap.id: (snap.to_dict(), snap.update_time) for snap in client.collection(collection).stream()}


def run_backfill(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = backfill.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in output:\n{text}"
    return int(match.group(1))


def printed_reads(out: str) -> int:
    return number(r"(?:This dry run cost|Firestore billed) (\d+) reads?", out)


def progress_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("backfill: page ")]


@pytest.fixture
def project(firestore_emulator) -> str:
    return firestore_emulator.project


# ---- dry run -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "pages", "reads"), [
    (750, 8, 750),  # the last page is short, so the scan knows it is done
    (700, 8, 701),  # the 8th query returns nothing, which Firestore bills as one read
])
def test_dry_run_counts_across_pages_and_writes_nothing(
    firestore_emulator, firestore_client, unique_collection, project, capsys, count, pages, reads
):
    undelivered = seed(firestore_client, unique_collection, count)
    before = contents(firestore_client, unique_collection)
    firestore_emulator.reset_stats()

    code, out, err = run_backfill(capsys, "--project", project, "--collection", unique_collection, "--page-size", "100")

    stats = firestore_emulator.stats()
    assert code == 0, err
    assert (stats["commits"], stats["writes"]) == (0, 0)
    assert contents(firestore_client, unique_collection) == before
    assert f"Scanned {count} documents in {pages} pages: {len(undelivered)} without a delivery record, " \
           f"{count - len(undelivered)} with one" in out
    assert f"ids without delivery: {', '.join(undelivered[:5])} (and {len(undelivered) - 5} more)" in out
    assert printed_reads(out) == stats["reads"] == reads
    assert f"mark each PENDING           {len(undelivered)} writes" in out
    assert f"{len(undelivered)} reads and {2 * len(undelivered)} writes (1 read, 2 writes per email)" in out
    assert f"FIRESTORE_EMULATOR_HOST={firestore_emulator.host} python -m ops.backfill --project {project} " \
           f"--collection {unique_collection} --page-size 100 --apply" in out
    assert len(progress_lines(err)) == pages
    assert progress_lines(err)[-1] == f"backfill: page {pages}, scanned {count}, without delivery {len(undelivered)}"
    # ids only: never an address or a message
    assert "@example.com" not in out + err and "Secret subject" not in out + err


def test_empty_collection_costs_one_read_and_offers_nothing(firestore_emulator, unique_collection, project, capsys):
    firestore_emulator.reset_stats()

    code, out, _ = run_backfill(capsys, "--project", project, "--collection", unique_collection)

    assert code == 0
    assert "Nothing to backfill." in out and "--apply" not in out
    assert printed_reads(out) == firestore_emulator.stats()["reads"] == 1


# ---- apply ---------------------------------------------------------------------------------------------

def test_apply_marks_exactly_the_documents_without_delivery(
    firestore_emulator, firestore_client, unique_collection, project, capsys
):
    undelivered = seed(firestore_client, unique_collection, 250)
    before = contents(firestore_client, unique_collection)
    firestore_emulator.reset_stats()
    started = datetime.now(timezone.utc)

    code, out, err = run_backfill(
        capsys, "--project", project, "--collection", unique_collection, "--page-size", "40", "--apply"
    )

    finished = datetime.now(timezone.utc)
    stats = firestore_emulator.stats()
    after = contents(firestore_client, unique_collection)
    assert code == 0, err
    assert stats["writesByDocument"] == {f"{unique_collection}/{doc_id}": 1 for doc_id in undelivered}
    for doc_id, (fields, update_time) in after.items():
        old_fields, old_update_time = before[doc_id]
        if doc_id not in undelivered:
            assert (fields, update_time) == (old_fields, old_update_time), doc_id
            continue
        record = fields.pop("delivery")
        assert fields == {key: value for key, value in old_fields.items() if key != "delivery"}
        assert set(record) == {"state", "attempts", "nextAttemptTime"}
        assert (record["state"], record["attempts"]) == ("PENDING", 0)
        assert started <= record["nextAttemptTime"] <= finished
    assert f"Marked {len(undelivered)} PENDING" in out and "skipped 0" in out
    assert f"Firestore billed {stats['reads']} reads and {stats['writes']} writes." in out
    assert progress_lines(err)[-1].endswith(f"marked {len(undelivered)}, skipped 0")

    # Nothing is left to do, and a second run writes nothing.
    firestore_emulator.reset_stats()
    code, out, _ = run_backfill(capsys, "--project", project, "--collection", unique_collection, "--apply")
    assert code == 0
    assert "0 without a delivery record, 250 with one" in out
    assert firestore_emulator.stats()["writes"] == 0


def test_marked_documents_are_what_the_sweep_finds_due(firestore_client, unique_collection, project, capsys):
    undelivered = seed(firestore_client, unique_collection, 60)

    code, _, err = run_backfill(capsys, "--project", project, "--collection", unique_collection, "--apply")

    assert code == 0, err
    # The sweep's due query (plans/issue 8): the delivered PENDING/RETRY documents are due tomorrow.
    due = (
        firestore_client.collection(unique_collection)
        .where(filter=firestore.FieldFilter("delivery.state", "in", ["PENDING", "RETRY"]))
        .where(filter=firestore.FieldFilter("delivery.nextAttemptTime", "<=", datetime.now(timezone.utc)))
        .stream()
    )
    due_ids = [snapshot.id for snapshot in due]
    assert sorted(due_ids) == undelivered
    fields = firestore_client.collection(unique_collection).document(undelivered[0]).get().to_dict()
    assert backfill.PENDING == mailer_delivery.PENDING
    assert mailer_delivery.is_claimable(fields, datetime.now(timezone.utc))


def test_a_delivery_record_of_any_shape_is_never_touched(
    firestore_emulator, firestore_client, unique_collection, project, capsys
):
    documents = {f"state-{state}": {"delivery": delivered_record(state)} for state in STATES}
    documents |= {
        "empty-map": {"delivery": {}},
        "not-a-map": {"delivery": "sent"},
        "extension-pending": {"delivery": {"state": "PENDING", "attempts": 0}},  # no nextAttemptTime
        "null": {"delivery": None, "to": "a@example.com"},
        "missing": {"to": "b@example.com"},
    }
    write_all(firestore_client, unique_collection, documents)
    firestore_emulator.reset_stats()

    code, out, _ = run_backfill(capsys, "--project", project, "--collection", unique_collection, "--apply")

    assert code == 0
    assert firestore_emulator.stats()["writesByDocument"] == {
        f"{unique_collection}/missing": 1,
        f"{unique_collection}/null": 1,
    }
    assert "3 have a delivery record that no sweep query matches" in out
    assert "empty-map, extension-pending, not-a-map" in out


def test_a_document_changed_between_scan_and_mark_is_skipped_not_overwritten(
    firestore_emulator, firestore_client, unique_collection, project, capsys, monkeypatch
):
    undelivered = seed(firestore_client, unique_collection, 100)
    by_trigger, by_app, deleted = undelivered[3], undelivered[17], undelivered[30]
    mail = firestore_client.collection(unique_collection)
    real_mark = backfill.mark_pending

    def mark_after_someone_else(client, snapshot, now):
        # Between the scan's read and the backfill's write: the trigger claims one document, an app edits
        # another (it still has no delivery), a third is deleted.
        if snapshot.id == by_trigger:
            mail.document(by_trigger).update({"delivery": {"state": "SUCCESS", "attempts": 1}})
        elif snapshot.id == by_app:
            mail.document(by_app).update({"message.subject": "edited"})
        elif snapshot.id == deleted:
            mail.document(deleted).delete()
        return real_mark(client, snapshot, now)

    monkeypatch.setattr(backfill, "mark_pending", mark_after_someone_else)
    firestore_emulator.reset_stats()

    code, out, err = run_backfill(
        capsys, "--project", project, "--collection", unique_collection, "--page-size", "25", "--apply"
    )

    assert code == 0, err
    assert mail.document(by_trigger).get().to_dict()["delivery"] == {"state": "SUCCESS", "attempts": 1}
    edited = mail.document(by_app).get().to_dict()
    assert edited["message"]["subject"] == "edited" and edited.get("delivery") is None
    assert not mail.document(deleted).get().exists
    marked = set(undelivered) - {by_trigger, by_app, deleted}
    expected_writes = {f"{unique_collection}/{doc_id}": 1 for doc_id in undelivered}  # the 3 by someone else
    assert firestore_emulator.stats()["writesByDocument"] == expected_writes
    assert all(mail.document(doc_id).get().to_dict()["delivery"]["state"] == "PENDING" for doc_id in marked)
    assert f"Marked {len(marked)} PENDING (nextAttemptTime: when marked); skipped 3 that changed" in out
    assert f"and {len(marked)} writes." in out


def test_the_projected_scan_keeps_the_version_the_precondition_needs(
    firestore_emulator, firestore_client, unique_collection
):
    seed(firestore_client, unique_collection, 30)
    firestore_emulator.reset_queries()
    tally = backfill.Tally()

    scanned = [snap for page in backfill.scan(firestore_client.collection(unique_collection), 7, tally) for snap in page]

    queries = [query for query in firestore_emulator.queries() if query["collection"] == unique_collection]
    full = {snap.id: snap for snap in firestore_client.collection(unique_collection).stream()}
    assert [snap.id for snap in scanned] == sorted(full)
    for snap in scanned:
        assert set(snap.to_dict()) <= {"delivery"}  # bodies and addresses are not fetched
        assert snap.update_time == full[snap.id].update_time
    assert (tally.pages, tally.reads) == (5, 30)
    assert queries == [{
        "collection": unique_collection,
        "parent": f"projects/{firestore_emulator.project}/databases/(default)/documents",
        "filters": [],
        "orderBy": [{"field": "__name__", "direction": "ASCENDING"}],
        "limit": 7,
    }] * 5


def test_limit_marks_only_the_first_n_in_name_order(firestore_client, unique_collection, project, capsys):
    undelivered = seed(firestore_client, unique_collection, 80)

    code, out, _ = run_backfill(
        capsys, "--project", project, "--collection", unique_collection, "--page-size", "10", "--limit", "7"
    )
    assert code == 0
    assert "(stopped at --limit): 7 without a delivery record" in out
    assert "--page-size 10 --limit 7 --apply" in out

    code, out, _ = run_backfill(
        capsys, "--project", project, "--collection", unique_collection, "--page-size", "10", "--limit", "7", "--apply"
    )

    assert code == 0
    marked = [snap.id for snap in firestore_client.collection(unique_collection).stream()
              if ((snap.to_dict().get("delivery") or {}).get("attempts")) == 0]
    assert sorted(marked) == undelivered[:7]
    assert "Marked 7 PENDING" in out


# ---- progress, failures, interruption ------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_rewritten_in_place_on_a_terminal():
    terminal = Terminal()
    progress = backfill.Progress(terminal, apply=True)
    tally = backfill.Tally(pages=1, scanned=40, found=12, marked=11, skipped=1)

    progress.page_done(tally)
    tally.pages = 2
    progress.page_done(tally)
    progress.close()

    text = terminal.getvalue()
    assert text.count("\r") == 2 and text.count("\n") == 1 and text.endswith("\n")
    assert "\rbackfill: page 2, scanned 40, without delivery 12, marked 11, skipped 1\x1b[K" in text


def test_a_firestore_refusal_mid_run_exits_1_with_one_line_and_what_was_done(
    firestore_faults, firestore_client, unique_collection, project, capsys, monkeypatch
):
    seed(firestore_client, unique_collection, 40)
    real_mark = backfill.mark_pending
    calls = []

    def refuse_the_fourth(client, snapshot, now):
        calls.append(snapshot.id)
        if len(calls) == 4:
            firestore_faults.inject_fault("Commit", "PERMISSION_DENIED")
        return real_mark(client, snapshot, now)

    monkeypatch.setattr(backfill, "mark_pending", refuse_the_fourth)

    code, out, err = run_backfill(capsys, "--project", project, "--collection", unique_collection, "--apply")

    assert code == 1
    messages = [line for line in err.splitlines() if not line.startswith("backfill: page ")]
    assert messages == ["backfill: Firestore failed: 403 injected fault"]
    assert "Marked 3 PENDING" in out and "(stopped early)" in out
    marked = [snap.id for snap in firestore_client.collection(unique_collection).stream()
              if (snap.to_dict().get("delivery") or {}).get("attempts") == 0]
    assert marked == calls[:3]


def test_a_refused_scan_exits_1_from_the_command_line(firestore_faults, firestore_client, unique_collection, project):
    seed(firestore_client, unique_collection, 5)
    firestore_faults.inject_fault("RunQuery", "PERMISSION_DENIED")

    result = subprocess.run(
        [sys.executable, "-m", "ops.backfill", "--project", project, "--collection", unique_collection],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == ["backfill: Firestore failed: 403 injected fault"]
    assert "Scanned 0 documents in 0 pages (stopped early)" in result.stdout
    assert "To apply" not in result.stdout


def test_a_transient_commit_failure_is_retried_and_the_run_completes(
    firestore_faults, firestore_client, unique_collection, project, capsys
):
    undelivered = seed(firestore_client, unique_collection, 20)
    firestore_faults.inject_fault("Commit", "UNAVAILABLE", count=2)

    code, out, err = run_backfill(capsys, "--project", project, "--collection", unique_collection, "--apply")

    assert code == 0, err
    assert firestore_faults.faults() == []  # both fired; the client's own retry carried the writes through
    assert f"Marked {len(undelivered)} PENDING" in out and "skipped 0" in out


def test_ctrl_c_stops_after_the_current_write_and_says_what_was_done(
    firestore_emulator, firestore_client, unique_collection, project
):
    total = 1500
    write_all(firestore_client, unique_collection, {f"{index:04d}": mail_fields(index) for index in range(total)})
    firestore_emulator.reset_stats()
    # One page holds every document, so only the check after each write can stop the run early.
    process = subprocess.Popen(
        [sys.executable, "-m", "ops.backfill", "--project", project, "--collection", unique_collection,
         "--page-size", "2000", "--apply"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while firestore_emulator.stats()["writes"] < 20 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == backfill.INTERRUPTED_EXIT, err
    assert "Traceback" not in err
    assert "stopping after the current write" in err
    reported = number(r"Interrupted: stopped after (\d+) marked", out)
    assert 20 <= reported < total
    marked_now = [snap.id for snap in firestore_client.collection(unique_collection).stream()
                  if (snap.to_dict().get("delivery") or {}).get("state") == "PENDING"]
    assert sorted(marked_now) == [f"{index:04d}" for index in range(reported)]
    assert firestore_emulator.stats()["writes"] == reported
    assert f"Marked {reported} PENDING" in out and "(stopped early)" in out


# ---- command line --------------------------------------------------------------------------------------

def test_help_explains_the_options_and_the_cost():
    result = subprocess.run(
        [sys.executable, "-m", "ops.backfill", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0
    for text in ("--project", "--database", "--collection", "--apply", "--limit", "--page-size", "dry run",
                 "update_time precondition", "FIRESTORE_EMULATOR_HOST", "one read per document", "Ctrl-C",
                 "Exit 0"):
        assert text in result.stdout, text


@pytest.mark.parametrize("argv", [
    [],  # --project is required
    ["--project", ""],
    ["--project", "p", "--page-size", "0"],
    ["--project", "p", "--page-size", "10001"],
    ["--project", "p", "--page-size", "many"],
    ["--project", "p", "--limit", "0"],
    ["--project", "p", "--collection", "tenants/acme"],  # a document path, not a collection
    ["--project", "p", "--collection", "mail//x"],
    ["--project", "p", "--dry-run", "--apply"],
    ["--project", "p", "--bogus"],
])
def test_bad_arguments_exit_2_naming_the_flag(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        backfill.main(argv)

    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_arguments_exit_2_from_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "ops.backfill", "--project", "p", "--limit", "-3"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 2
    assert "argument --limit" in result.stderr


def test_make_backfill_passes_args_through():
    result = subprocess.run(
        ["make", "-n", "backfill", "ARGS=--project p --apply"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "-m ops.backfill --project p --apply" in result.stdout
