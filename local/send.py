"""`make send`: write one mail document into the running local stack and print how its delivery ended.

    python -m local.send --to ada@example.com --subject Hi --text Hello [--html '<p>Hi</p>'] [--cc ...]
    python -m local.send --to ada@example.com --template SignIn --data '{"code": "123456"}'
    python -m local.send --json mail.json        (a whole mail document; - reads stdin)
    python -m local.send ... --send-at +30       (sendAt 30 s from now; or a time such as 2030-01-01T09:00:00+01:00)
    python -m local.send --json local/examples/mail.json     (an example document: to, cc, subject, text, html)
    python -m local.send --inbox-fault data:451  (from now on the inbox answers 451 after DATA; `none` clears;
                                                 with document flags too, sets the fault, then sends)

Templates are re-read from templates/ before every send, so an edited template shows in the next email.

Finds the stack through .demo/state.json (written by `make demo ARGS=--serve`). While its sweep runs, a
RETRY is not the end: this waits until the document is SUCCESS or ERROR (retries included, up to
--timeout seconds after its sendAt). Exit code: 0 SUCCESS (or a fault set), 1 any other outcome (ERROR,
RETRY without a sweep, no outcome in time), 2 no running stack or bad arguments. Under make, any non-zero
code makes make print `make: *** [Makefile:NN: send] Error 1` (or Error 2) and exit 2 itself.
"""

from __future__ import annotations

import os

# Before grpc loads (through the Firestore client): its C core logs INFO lines when the emulator stops.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from google.api_core import exceptions as google_errors
from google.cloud import firestore

from local.documents import FINAL_STATES, SETTLED_STATES, emulator_client, wait_for_delivery
from local.inbox import FAULT_FILE, FAULT_HELP, FAULT_POLL_SECONDS, InboxFault, parse_faults, write_fault_file
from local.mailbox import list_messages
from local.state import DEFAULT_STATE_DIR, StackState, StateError, read_state
from local.template_seed import load_template_documents, seed_templates

_MESSAGE_FLAGS = ("subject", "text", "html")
_ADDRESS_FLAGS = ("to", "cc", "bcc")


class UsageError(ValueError):
    """Arguments that do not make a document. str(e) is one line naming the flag."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make send", description="Send a mail document through the local stack.")
    for name in _ADDRESS_FLAGS:
        parser.add_argument(f"--{name}", action="append", metavar="ADDRESS", help=f"{name} recipient (repeatable)")
    parser.add_argument("--from", dest="sender", metavar="ADDRESS", help="sender (default: the stack's defaultFrom)")
    parser.add_argument("--reply-to", metavar="ADDRESS")
    parser.add_argument("--subject")
    parser.add_argument("--text", help="plain text body")
    parser.add_argument("--html", help="html body")
    parser.add_argument("--template", metavar="NAME", help="render templates/NAME.yaml (re-read on every send)")
    parser.add_argument("--data", metavar="JSON", help='with --template: its data, e.g. \'{"code": "123456"}\'')
    parser.add_argument("--json", type=Path, metavar="FILE", help="a whole mail document as JSON (- for stdin)")
    parser.add_argument("--send-at", metavar="WHEN",
                        help="sendAt: +SECONDS from now, or an ISO 8601 time with an offset (2030-01-01T09:00:00Z)")
    parser.add_argument("--id", dest="doc_id", help="document id (default: a generated one)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the outcome, counted from sendAt if later (default 30)")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="the running stack's folder (default .demo)")
    parser.add_argument("--inbox-fault", metavar="SPEC",
                        help=f"set the running inbox's faults (replacing any): {FAULT_HELP}; comma-separate "
                             "several. Alone, only sets them; with document flags, sets them and then sends")
    return parser.parse_args(argv)


def _wants_document(args: argparse.Namespace) -> bool:
    return args.json is not None or any(
        getattr(args, name) for name in (*_ADDRESS_FLAGS, *_MESSAGE_FLAGS, "sender", "reply_to", "template", "data",
                                         "send_at", "doc_id"))


def set_inbox_faults(state: StackState, faults: list[InboxFault], out: TextIO) -> None:
    """Write the running stack's fault file; the inbox polls it, so wait one poll and a little more."""
    write_fault_file(Path(state.inbox_dir).parent / FAULT_FILE, faults)
    time.sleep(3 * FAULT_POLL_SECONDS)
    print(f"inbox faults: {', '.join(map(str, faults)) or 'none'}", file=out)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        document = json.loads(text)
    except OSError as error:
        raise UsageError(f"--json: cannot read {path} ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"--json: {path} is not JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    if not isinstance(document, dict):
        raise UsageError(f"--json: {path} must hold one JSON object (a mail document), not {type(document).__name__}")
    return document


def build_document(args: argparse.Namespace) -> dict[str, Any]:
    """The mail document the flags describe. The function validates it, as it would an app's."""
    flagged = [name for name in (*_ADDRESS_FLAGS, *_MESSAGE_FLAGS, "sender", "reply_to", "template", "data")
               if getattr(args, name)]
    if args.json is not None:
        if flagged:
            raise UsageError(f"--json: give either --json or flags such as --{flagged[0].replace('_', '-')}, not both")
        return _read_json(args.json)
    if not args.to:
        raise UsageError("--to: at least one recipient is required (or pass --json FILE)")
    document: dict[str, Any] = {
        name: values if len(values) > 1 else values[0]
        for name in _ADDRESS_FLAGS
        if (values := getattr(args, name))
    }
    if args.sender:
        document["from"] = args.sender
    if args.reply_to:
        document["replyTo"] = args.reply_to
    message = {name: getattr(args, name) for name in _MESSAGE_FLAGS if getattr(args, name) is not None}
    if message or not args.template:
        document["message"] = message
    if args.data is not None and not args.template:
        raise UsageError("--data: only goes with --template NAME")
    if args.template:
        document["template"] = {"name": args.template, "data": _template_data(args.data)}
    return document


def parse_send_at(text: str, now: datetime) -> datetime:
    """--send-at: `+SECONDS` after `now`, or an ISO 8601 time with an explicit offset (as sendAt strings
    must have one)."""
    if text.startswith("+"):
        try:
            seconds = float(text[1:])
        except ValueError:
            raise UsageError(f"--send-at: {text!r} is not +SECONDS (such as +30)") from None
        return now + timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--send-at: {text!r} is neither +SECONDS nor an ISO 8601 time such as 2030-01-01T09:00:00Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"--send-at: {text!r} has no offset; add Z or one such as +01:00")
    return moment.astimezone(timezone.utc)


def _template_data(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"--data: not JSON (column {error.colno}: {error.msg})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--data: must be a JSON object, not {type(data).__name__}")
    return data


def _report(path: str, delivery: dict[str, Any], state: StackState, out: TextIO) -> None:
    print(f"{path}: {delivery.get('state')}", file=out)
    if delivery.get("error"):
        print(f"  error     {delivery['error']}", file=out)
    info = delivery.get("info") or {}
    for key in ("accepted", "rejected"):
        if info.get(key):
            print(f"  {key:<9} {', '.join(info[key])}", file=out)
    attempts, history = delivery.get("attempts"), delivery.get("attemptHistory") or []
    if isinstance(attempts, int) and attempts > 1:
        failures = "; ".join(f"attempt {entry.get('attempt')}: {entry.get('error')}" for entry in history
                             if isinstance(entry, dict))
        print(f"  attempts  {attempts}" + (f" ({failures})" if failures else ""), file=out)
    message_id = info.get("messageId")
    received = next((m for m in list_messages(Path(state.inbox_dir)) if message_id and m.message_id == message_id), None)
    if received is not None:
        print(f"  inbox     {state.inbox_url}messages/{received.id}", file=out)


def _refresh_templates(client: firestore.Client, state: StackState) -> None:
    """Re-read templates/ before each send, so an edited template shows in the next email (the local
    stack sets templateCacheSeconds to 0, so the function does not keep an old copy)."""
    documents = load_template_documents(Path(state.templates_dir)) if state.templates_collection else None
    if state.templates_collection and documents:
        seed_templates(client, state.templates_collection, documents)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    if args.inbox_fault is not None:
        try:
            faults = parse_faults(args.inbox_fault)
            state = read_state(args.state_dir.resolve())
        except ValueError as error:  # StateError is not one
            print(f"make send: --inbox-fault: {error}", file=sys.stderr)
            return 2
        except StateError as error:
            print(f"make send: {error}", file=sys.stderr)
            return 2
        set_inbox_faults(state, faults, out)
        if not _wants_document(args):
            return 0
    try:
        document = build_document(args)
        wait = args.timeout
        if args.send_at is not None:
            now = datetime.now(timezone.utc)
            document["sendAt"] = parse_send_at(args.send_at, now)
            wait += max(0.0, (document["sendAt"] - now).total_seconds())
        state = read_state(args.state_dir.resolve())
    except (UsageError, StateError) as error:
        print(f"make send: {error}", file=sys.stderr)
        return 2
    # Without a sweep nothing acts on a RETRY, so the first attempt's outcome is the answer.
    states = SETTLED_STATES if state.sweep_url else FINAL_STATES
    client = emulator_client(state.emulator_host, state.project, state.database)
    collection = client.collection(state.mail_collection)
    reference = collection.document(args.doc_id) if args.doc_id else collection.document()
    try:
        _refresh_templates(client, state)
        reference.create(document)
        delivery = wait_for_delivery(reference, wait, states)
    except google_errors.AlreadyExists:
        print(f"make send: --id: {reference.path} already exists; pick another id", file=sys.stderr)
        return 2
    except ValueError as error:  # a template file with a mistake: infra.templates names the file and key
        print(f"make send: {error}", file=sys.stderr)
        return 2
    except google_errors.GoogleAPICallError as error:
        print(f"make send: the emulator at {state.emulator_host} refused the document ({error.code})", file=sys.stderr)
        return 1
    except TimeoutError as error:
        print(f"make send: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    _report(reference.path, delivery, state, out)
    return 0 if delivery.get("state") == "SUCCESS" else 1


if __name__ == "__main__":
    sys.exit(main())
