"""`make backfill` / `python -m ops.backfill`: hand mail documents that were never processed to the sweep.

A document written into the mail collection before the first deploy, or while the trigger was missing,
has no `delivery` record. Firestore cannot query a missing field, so the periodic sweep never sees it;
only a scan of the whole collection finds it. This command scans (pages ordered by document name,
`start_after` cursors, only the `delivery` field fetched) and, with --apply, marks each such document

    delivery = {state: "PENDING", attempts: 0, nextAttemptTime: <now>}

with an update whose precondition is the update_time the scan read: a document that the trigger or an
app changed meanwhile is skipped, never overwritten. The sweep's due query (delivery.state IN [PENDING,
RETRY] AND delivery.nextAttemptTime <= now) then sends it through the same attempt path as every other
email. The command itself never sends email and needs no SMTP credentials.

Exit codes: 0 done, 1 Firestore failed (one line on stderr), 2 bad arguments, 130 stopped by Ctrl-C.
"""

from __future__ import annotations

import os

# Before grpc loads (through the Firestore client): its C core logs INFO lines on shutdown.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import FrameType
from typing import Any, TextIO

from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors
from google.cloud import firestore

# mailer.delivery's names (ops/ runs without functions/ on sys.path; tests/ops ties the two together).
PENDING = "PENDING"
RETRY = "RETRY"
PROCESSING = "PROCESSING"

EMULATOR_HOST_VAR = "FIRESTORE_EMULATOR_HOST"
DEFAULT_PAGE_SIZE = 300
MAX_PAGE_SIZE = 10_000
SAMPLE_IDS = 5
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report it
# What the sweep spends on each email it sends (README "What one email costs"): its due query returns
# the document once (1 read), the attempt writes the claim and the outcome (2 writes).
SEND_READS_PER_EMAIL = 1
SEND_WRITES_PER_EMAIL = 2

MARKED = "marked"
SKIPPED = "skipped"  # changed or deleted since the scan: the precondition refused the write


def pending_record(now: datetime) -> dict[str, Any]:
    """The record that hands a document to the sweep: waiting, never attempted, due now."""
    return {"state": PENDING, "attempts": 0, "nextAttemptTime": now}


def has_no_delivery(fields: dict[str, Any]) -> bool:
    """Never processed: no `delivery`, or `delivery: null` (which the function also treats as new).
    Any other value belongs to the function and the sweep, whatever its state."""
    return fields.get("delivery") is None


def invisible_to_sweep(fields: dict[str, Any]) -> bool:
    """A `delivery` record that none of the sweep's queries can match (a missing field never matches):
    no state, PENDING/RETRY without `nextAttemptTime`, PROCESSING without `leaseExpireTime`. Reported,
    never touched: such records come from elsewhere (e.g. an older extension) and need a person."""
    delivery = fields.get("delivery")
    if delivery is None:
        return False
    if not isinstance(delivery, dict) or not isinstance(delivery.get("state"), str):
        return True
    state = delivery["state"]
    if state in (PENDING, RETRY):
        return "nextAttemptTime" not in delivery
    if state == PROCESSING:
        return "leaseExpireTime" not in delivery
    return False


@dataclass
class Tally:
    """What the run has done so far; printed at the end, also after a failure or Ctrl-C."""

    pages: int = 0
    reads: int = 0  # billed: one per document a query returns, one for a query that returns none
    scanned: int = 0  # documents looked at (fewer than reads only when --limit stopped mid-page)
    found: int = 0  # without delivery
    marked: int = 0
    skipped: int = 0
    writes: int = 0
    found_ids: list[str] = field(default_factory=list)
    invisible: int = 0
    invisible_ids: list[str] = field(default_factory=list)

    @property
    def with_delivery(self) -> int:
        return self.scanned - self.found


class StopRequest:
    """Ctrl-C sets a flag that the loop checks after every write; a second Ctrl-C aborts at once."""

    def __init__(self, err: TextIO) -> None:
        self.requested = False
        self._err = err
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        print("\nbackfill: stopping after the current write (Ctrl-C again to abort at once)", file=self._err, flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C stays Python's KeyboardInterrupt
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Progress:
    """One status line on stderr: rewritten in place on a terminal, one line per page otherwise."""

    def __init__(self, err: TextIO, apply: bool) -> None:
        self._err = err
        self._apply = apply
        self._tty = err.isatty()
        self._shown = False
        self._last = 0.0

    def _line(self, tally: Tally) -> str:
        line = f"backfill: page {tally.pages}, scanned {tally.scanned}, without delivery {tally.found}"
        if self._apply:
            line += f", marked {tally.marked}, skipped {tally.skipped}"
        return line

    def page_done(self, tally: Tally) -> None:
        self._show(tally, force=True)

    def wrote(self, tally: Tally) -> None:
        if self._tty:
            self._show(tally, force=False)

    def _show(self, tally: Tally, force: bool) -> None:
        if self._tty:
            now = time.monotonic()
            if not force and now - self._last < 0.1:
                return
            self._last = now
            self._err.write(f"\r{self._line(tally)}\x1b[K")
        else:
            self._err.write(f"{self._line(tally)}\n")
        self._err.flush()
        self._shown = True

    def close(self) -> None:
        if self._tty and self._shown:
            self._err.write("\n")
            self._err.flush()
        self._shown = False


def scan(collection: firestore.CollectionReference, page_size: int, tally: Tally) -> Iterator[list[Any]]:
    """Every document of the collection, a page at a time, in document-name order. Only `delivery` is
    fetched (a projection bills the same one read per document but transfers no bodies or attachments;
    its snapshots still carry update_time, which the precondition needs)."""
    query = (
        collection.select(["delivery"])
        .order_by("__name__")  # the document name (FieldPath.document_id()): a total, stable order for cursors
        .limit(page_size)
    )
    cursor = None
    while True:
        page_query = query if cursor is None else query.start_after(cursor)
        page = list(page_query.stream())
        tally.pages += 1
        tally.reads += max(1, len(page))  # Firestore bills a query that returns nothing as one read
        yield page
        if len(page) < page_size:
            return
        cursor = page[-1]


def mark_pending(client: firestore.Client, snapshot: Any, now: datetime) -> str:
    """Write the PENDING record if the document is still the version the scan read."""
    seen = snapshot.update_time
    if not isinstance(seen, datetime) or seen.timestamp() <= 0:
        # Without the version there is no safe write; real Firestore and the emulator always send it.
        raise google_errors.FailedPrecondition(f"the scan returned {snapshot.reference.path} without an update_time")
    option = client.write_option(last_update_time=seen)
    try:
        snapshot.reference.update({"delivery": pending_record(now)}, option=option)
    except (google_errors.FailedPrecondition, google_errors.NotFound):
        return SKIPPED
    return MARKED


def run(
    client: firestore.Client,
    args: argparse.Namespace,
    tally: Tally,
    progress: Progress,
    stop: StopRequest,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> None:
    collection = client.collection(args.collection)
    for page in scan(collection, args.page_size, tally):
        for snapshot in page:
            if stop.requested or (args.limit is not None and tally.found >= args.limit):
                break
            tally.scanned += 1
            fields = snapshot.to_dict() or {}
            if not has_no_delivery(fields):
                if invisible_to_sweep(fields):
                    tally.invisible += 1
                    if len(tally.invisible_ids) < SAMPLE_IDS:
                        tally.invisible_ids.append(snapshot.id)
                continue
            tally.found += 1
            if len(tally.found_ids) < SAMPLE_IDS:
                tally.found_ids.append(snapshot.id)
            if args.apply:
                outcome = mark_pending(client, snapshot, clock())
                if outcome == MARKED:
                    tally.marked += 1
                    tally.writes += 1
                else:
                    tally.skipped += 1
                progress.wrote(tally)
        progress.page_done(tally)
        if stop.requested or (args.limit is not None and tally.found >= args.limit):
            return


# ---- command line -------------------------------------------------------------------------------------

def _page_size(text: str) -> int:
    value = _positive(text)
    if value > MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"at most {MAX_PAGE_SIZE}, got {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _collection(text: str) -> str:
    segments = text.split("/")
    if not text or any(not segment for segment in segments) or len(segments) % 2 == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a collection path (an id such as mail, or parent/doc/collection)"
        )
    return text


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


DESCRIPTION = """\
Find mail documents that were never processed (no `delivery` record, or `delivery: null`) and hand
them to the periodic sweep, which sends them through the same attempt path as every other email.
Firestore cannot query a missing field, so this scans the whole collection.

Without --apply (the default) it is a dry run: it scans, prints how many documents have no delivery
record and a few of their ids (ids only), what the scan cost, what applying and then sending would
cost, and the exact command to apply. It writes nothing.

With --apply it sets, on each such document,
    delivery = {state: PENDING, attempts: 0, nextAttemptTime: <now, UTC>}
with an update_time precondition equal to what the scan read: a document that the trigger or an app
changed (or deleted) since the scan is skipped and counted, never overwritten. A document that has a
delivery record is never touched, whatever its state. It sends no email and needs no SMTP
credentials; the sweep sends the marked documents from its next call on.
"""

EPILOG = """\
cost (as Firestore bills it):
  scan      one read per document the scan returns (one more if the last page comes back empty);
            only `delivery` is fetched, which transfers less but bills the same
  mark      one write per document marked (a refused precondition writes nothing)
  send      by the sweep, per email: 1 read (its due query returns it), 2 writes (claim, outcome),
            and a share of a sweep call (one call handles every document due)

connection:
  Credentials are Application Default Credentials (gcloud auth application-default login), with
  read/write access to the database. FIRESTORE_EMULATOR_HOST=host:port points the command at an
  emulator instead (e.g. the one `make demo ARGS=--serve` runs; any --project works there).

progress and exit codes:
  A progress line goes to stderr (rewritten in place on a terminal, one line per page otherwise);
  the summary goes to stdout. Ctrl-C stops after the current write and prints what was done;
  running the same command again continues (marked documents have a delivery record by then).
  Exit 0 done, 1 Firestore failed (one-line message), 2 bad arguments, 130 stopped by Ctrl-C.

examples:
  python -m ops.backfill --project my-project                       dry run on `mail`
  python -m ops.backfill --project my-project --limit 10 --apply    mark the first 10 only
  make backfill ARGS="--project my-project --apply"
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ops.backfill",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project", required=True, type=_non_empty, help="Google Cloud project id (required)")
    parser.add_argument("--database", default="(default)", type=_non_empty,
                        help="Firestore database id, as the stack's mailer:database (default: \"(default)\")")
    parser.add_argument("--collection", default="mail", type=_collection,
                        help="the mail collection, as the stack's mailer:mailCollection; a nested path such as "
                             "tenants/acme/mail works too (default: %(default)s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="scan and report, write nothing (the default; the flag only says so)")
    mode.add_argument("--apply", action="store_true", help="mark the documents found")
    parser.add_argument("--limit", type=_positive, metavar="N",
                        help="stop after N documents without a delivery record (default: no limit); "
                             "try a small batch first")
    parser.add_argument("--page-size", type=_page_size, default=DEFAULT_PAGE_SIZE, metavar="N",
                        help=f"documents per scan query, 1 to {MAX_PAGE_SIZE} (default: %(default)s); "
                             "cost does not depend on it")
    return parser.parse_args(argv)


def apply_command(args: argparse.Namespace) -> str:
    """The exact command that applies what this dry run found (same target, same limits)."""
    words = ["python", "-m", "ops.backfill", "--project", args.project]
    if args.database != "(default)":
        words += ["--database", args.database]
    if args.collection != "mail":
        words += ["--collection", args.collection]
    if args.page_size != DEFAULT_PAGE_SIZE:
        words += ["--page-size", str(args.page_size)]
    if args.limit is not None:
        words += ["--limit", str(args.limit)]
    words.append("--apply")
    command = shlex.join(words)
    emulator = os.environ.get(EMULATOR_HOST_VAR)
    return f"{EMULATOR_HOST_VAR}={shlex.quote(emulator)} {command}" if emulator else command


def _target(args: argparse.Namespace) -> str:
    emulator = os.environ.get(EMULATOR_HOST_VAR)
    where = f"emulator {emulator}" if emulator else "Google Cloud"
    return f"project {args.project}, database {args.database}, collection {args.collection} ({where})"


def _ids(ids: list[str], total: int) -> str:
    more = total - len(ids)
    return ", ".join(ids) + (f" (and {more} more)" if more > 0 else "")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def report(args: argparse.Namespace, tally: Tally, out: TextIO, *, interrupted: bool, failed: bool) -> None:
    limited = args.limit is not None and tally.found >= args.limit
    print(f"Backfill {'(apply)' if args.apply else 'dry run'}: {_target(args)}", file=out)
    scope = " (stopped at --limit)" if limited else (" (stopped early)" if interrupted or failed else "")
    print(
        f"Scanned {_plural(tally.scanned, 'document')} in {_plural(tally.pages, 'page')}{scope}: "
        f"{tally.found} without a delivery record, {tally.with_delivery} with one (left to the sweep).",
        file=out,
    )
    if tally.found:
        print(f"  ids without delivery: {_ids(tally.found_ids, tally.found)}", file=out)
    if tally.invisible:
        print(
            f"  {tally.invisible} {'has' if tally.invisible == 1 else 'have'} a delivery record that no sweep query matches (no state, or PENDING/RETRY "
            f"without nextAttemptTime, or PROCESSING without leaseExpireTime); left alone, look at them: "
            f"{_ids(tally.invisible_ids, tally.invisible)}",
            file=out,
        )
    send_reads = SEND_READS_PER_EMAIL * tally.found
    send_writes = SEND_WRITES_PER_EMAIL * tally.found
    if not args.apply:
        print(f"This dry run cost {_plural(tally.reads, 'read')} and wrote nothing.", file=out)
        if interrupted or failed or not tally.found:
            if not tally.found and not (interrupted or failed):
                print("Nothing to backfill.", file=out)
            return
        print("Applying would cost:", file=out)
        print(f"  scan again                  {_plural(tally.reads, 'read')}", file=out)
        print(f"  mark each PENDING           {_plural(tally.found, 'write')}", file=out)
        print(
            f"  then the sweep sends each   {_plural(send_reads, 'read')} and {_plural(send_writes, 'write')} "
            f"({SEND_READS_PER_EMAIL} read, {SEND_WRITES_PER_EMAIL} writes per email) plus a share of its calls",
            file=out,
        )
        print("To apply:", file=out)
        print(f"  {apply_command(args)}", file=out)
        return
    print(
        f"Marked {tally.marked} PENDING (nextAttemptTime: when marked); skipped {tally.skipped} that changed or "
        f"were deleted since the scan (left as they are; run again to pick up any still without delivery).",
        file=out,
    )
    print(f"Firestore billed {_plural(tally.reads, 'read')} and {_plural(tally.writes, 'write')}.", file=out)
    if tally.marked:
        print(
            f"The sweep sends them from its next call on (a large backlog over several calls): "
            f"{_plural(SEND_READS_PER_EMAIL * tally.marked, 'read')} and "
            f"{_plural(SEND_WRITES_PER_EMAIL * tally.marked, 'write')} more, plus a share of its calls.",
            file=out,
        )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)  # exits 2 on bad arguments, 0 on --help
    out, err = sys.stdout, sys.stderr
    tally = Tally()
    progress = Progress(err, args.apply)
    failure: str | None = None
    with StopRequest(err) as stop:
        client = None
        try:
            client = firestore.Client(project=args.project, database=args.database)
            run(client, args, tally, progress, stop)
        except auth_errors.GoogleAuthError as error:
            failure = (f"no usable Google credentials ({_one_line(error)}); run `gcloud auth application-default "
                       f"login`, or set {EMULATOR_HOST_VAR} to use an emulator")
        except google_errors.GoogleAPIError as error:
            failure = f"Firestore failed: {_one_line(error)}"
        except KeyboardInterrupt:  # the second Ctrl-C: abort now, still say what was done
            stop.requested = True
        finally:
            progress.close()
            if client is not None:
                client.close()
    report(args, tally, out, interrupted=stop.requested, failed=failure is not None)
    if failure is not None:
        print(f"backfill: {failure}", file=err)
        return 1
    if stop.requested:
        done = f"{tally.marked} marked" if args.apply else f"{tally.scanned} scanned"
        print(f"Interrupted: stopped after {done}; run the same command again to continue.", file=out)
        return INTERRUPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
