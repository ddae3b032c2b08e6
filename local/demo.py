"""`make demo`: start the local stack, write the sample documents, wait for each, print what happened.

    python -m local.demo            run the samples, print a table, stop everything (exit 1 if a sample
                                    did not end as expected)
    python -m local.demo --serve    the same, then keep running for `make send` and the inbox page
"""

from __future__ import annotations

import os

# Before grpc loads (through the Firestore client): its C core logs INFO lines when the emulator stops.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from google.api_core.exceptions import GoogleAPICallError

from local.documents import wait_for_delivery
from local.errors import StartError
from local.mailbox import StoredMessage, list_messages
from local.samples import Sample, demo_samples
from local.stack import LocalStack, Ports
from local.stackfile import LOCAL_STACK_FILE, LocalStackError
from local.state import DEFAULT_STATE_DIR, StateError, remove_state, write_state
from local.template_seed import TEMPLATES_DIR

SETTLE_TIMEOUT_SECONDS = 20.0
ERROR_COLUMN_CHARS = 100  # the whole error is in the document's delivery.error


@dataclass(frozen=True)
class SampleResult:
    sample: Sample
    state: str
    error: str | None
    received: StoredMessage | None  # the inbox message with the delivery's Message-ID

    @property
    def as_expected(self) -> bool:
        sample = self.sample
        if self.state != sample.expected_state:
            return False
        if sample.expected_error is not None and sample.expected_error not in (self.error or ""):
            return False
        if sample.expected_state == "SUCCESS":
            if self.received is None:
                return False
            if sample.expected_subject is not None and self.received.subject != sample.expected_subject:
                return False
        return True


def _received(stack: LocalStack, delivery: dict[str, Any]) -> StoredMessage | None:
    message_id = (delivery.get("info") or {}).get("messageId")
    if not message_id:
        return None
    return next((m for m in list_messages(stack.inbox_dir) if m.message_id == message_id), None)


def run_samples(stack: LocalStack, samples: Sequence[Sample], timeout: float = SETTLE_TIMEOUT_SECONDS) -> list[SampleResult]:
    """Create every sample document (as an app would), then wait for each to settle."""
    for sample in samples:
        stack.mail(sample.doc_id).create(sample.document)
    results = []
    for sample in samples:
        try:
            delivery = wait_for_delivery(stack.mail(sample.doc_id), timeout)
        except TimeoutError as error:
            results.append(SampleResult(sample, "TIMEOUT", str(error), None))
            continue
        results.append(SampleResult(sample, delivery.get("state", ""), delivery.get("error"), _received(stack, delivery)))
    return results


def format_table(results: Sequence[SampleResult]) -> str:
    rows = [("document", "sample", "state", "received subject", "error")]
    for result in results:
        mark = "" if result.as_expected else " (unexpected)"
        subject = result.received.subject if result.received else "-"
        error = result.error or "-"
        if len(error) > ERROR_COLUMN_CHARS:
            error = error[: ERROR_COLUMN_CHARS - 3] + "..."
        rows.append((result.sample.doc_id, result.sample.what, result.state + mark, subject, error))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4] for row in rows
    )


def _shown(path: Path) -> str:
    """A path as short as it can be said from here."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else str(path)


def _print_summary(stack: LocalStack, results: Sequence[SampleResult], out: TextIO) -> None:
    print(format_table(results), file=out)
    expected = sum(result.as_expected for result in results)
    invocations = sum(stack.bridge.invocations.values())
    received = len(list_messages(stack.inbox_dir))
    print(
        f"\n{expected} of {len(results)} documents ended as expected; {invocations} function invocations "
        f"(the function's own status writes trigger nothing); {received} messages in {_shown(stack.inbox_dir)}",
        file=out,
    )


def _state_dir_flag(state_dir: Path) -> str:
    return "" if state_dir == DEFAULT_STATE_DIR.resolve() else f" --state-dir {_shown(state_dir)}"


def _print_serving(stack: LocalStack, state_file: Path, out: TextIO) -> None:
    settings = stack.settings
    print(
        "\nThe local stack is running (Ctrl-C stops everything):\n"
        f"  inbox     {stack.web.url}\n"
        f"  emulator  FIRESTORE_EMULATOR_HOST={stack.emulator.host}  project {settings.project}, "
        f"collection {settings.mail_collection}\n"
        f"  function  {stack.function_url}  (log: {_shown(stack.function_log)})\n"
        f"  smtp      {stack.inbox.host}:{stack.inbox.port}  STARTTLS + AUTH, CA {_shown(stack.state_dir / 'tls' / 'ca.pem')}\n"
        f"  state     {_shown(state_file)}\n"
        f'  send      make send ARGS="--to you@example.com --subject Hi --text Hello{_state_dir_flag(stack.state_dir)}"',
        file=out,
        flush=True,
    )


# Ctrl-C, kill and a closed terminal all leave through the finally blocks. SIGINT is set explicitly too:
# a shell starts background jobs with it ignored, and Python then never raises KeyboardInterrupt.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description="Run the mailer pipeline on this machine.")
    parser.add_argument("--serve", action="store_true", help="keep the stack running after the samples")
    parser.add_argument("--no-samples", action="store_true", help="with --serve: start with an empty inbox")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="logs, inbox, state.json (default .demo)")
    parser.add_argument("--stack-file", type=Path, default=LOCAL_STACK_FILE, help="settings (default stacks/Pulumi.local.yaml)")
    parser.add_argument("--templates-dir", type=Path, default=TEMPLATES_DIR, help="template files (default templates/)")
    for name in ("smtp", "inbox-web", "function"):
        parser.add_argument(f"--{name}-port", type=int, default=0, metavar="PORT", help=f"{name} port (default: a free one)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    ports = Ports(smtp=args.smtp_port, inbox_web=args.inbox_web_port, function=args.function_port)
    stack = LocalStack(args.state_dir.resolve(), stack_file=args.stack_file, ports=ports,
                       templates_dir=args.templates_dir.resolve())
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS} if in_main_thread else {}
    started = time.monotonic()
    try:
        print(f"Starting the local stack from {_shown(args.stack_file)} ...", file=out, flush=True)
        stack.start()
        try:
            results: list[SampleResult] = []
            if not args.no_samples:
                results = run_samples(stack, demo_samples(stack.templates))
                _print_summary(stack, results, out)
            if args.serve:
                _print_serving(stack, write_state(stack.state_dir, stack.state()), out)
                while True:  # until a signal; short waits, because the signal may land on another thread
                    time.sleep(0.2)  # and Python runs handlers only when the main thread wakes
        finally:
            remove_state(stack.state_dir)
            stack.stop()
        print(f"Done in {time.monotonic() - started:.1f} s; everything is stopped.", file=out)
        return 0 if all(result.as_expected for result in results) else 1
    except (LocalStackError, StartError, StateError) as error:
        print(f"make demo: {error}", file=sys.stderr)
        return 2
    except GoogleAPICallError as error:
        print(f"make demo: the Firestore emulator refused a request ({error.code}); see {_shown(stack.emulator_log)}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopped.", file=out)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
