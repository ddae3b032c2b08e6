"""`make demo`: start the local stack, write the sample documents, wait for each, print what happened.

    python -m local.demo            run the samples, print a table, stop everything (exit 1 if a sample
                                    did not end as expected)
    python -m local.demo --serve    the same, then keep running for `make send` and the inbox page
    --sweep-seconds N               how often the local scheduler calls sweep_mail (default 2), which sends
                                    retries and scheduled (sendAt) mail
    --inbox-fault SPEC              make the SMTP inbox misbehave (refuse, rcpt:451, data:554,
                                    stall:data:40, ...; see local.inbox); `make send ARGS="--inbox-fault
                                    SPEC"` changes it while serving
    --xoauth2                       the inbox takes SASL XOAUTH2 only, with bearer tokens from a local
                                    OAuth2 token endpoint; the function gets a client secret and a
                                    refresh token instead of a password (SMTP_OAUTH2_*)

While serving, a watchdog checks every part a few times a second; when one dies (a process exits, the
trigger bridge loses the change feed), it prints one line naming it and its log, stops everything and
exits 1.
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
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from google.api_core.exceptions import GoogleAPICallError

from local.documents import FINAL_STATES, SETTLED_STATES, wait_for_delivery
from local.errors import StartError
from local.inbox import FAULT_HELP, InboxFault, parse_faults
from local.mailbox import StoredMessage, list_messages
from local.samples import Sample, demo_samples
from local.stack import DEFAULT_SWEEP_SECONDS, DeadPart, LocalStack, Ports
from local.stackfile import LOCAL_STACK_FILE, LocalStackError
from local.state import DEFAULT_STATE_DIR, StateError, remove_state, write_state
from local.template_seed import TEMPLATES_DIR

# One attempt's allowance (functions warm, TLS, send); settle_timeout adds backoff, sendAt and sweep waits.
SETTLE_TIMEOUT_SECONDS = 20.0
ERROR_COLUMN_CHARS = 100  # the whole error is in the document's delivery.error


def settle_timeout(samples: Sequence[Sample], *, backoff_seconds: float, backoff_max_seconds: float,
                   sweep_seconds: float | None) -> float:
    """How long to wait for the slowest sample: one attempt, plus before each retry its backoff (the
    schedule's upper bound, attempt k waits min(max, base * 2^(k-1))) and a sweep period to be picked
    up, plus any sendAt delay and a sweep period."""
    sweep = sweep_seconds or 0.0
    longest = 0.0
    for sample in samples:
        retries = max(0, (sample.expected_attempts or 1) - 1)
        wait = sum(min(backoff_max_seconds, backoff_seconds * 2**k) + sweep for k in range(retries))
        if sample.send_after_seconds is not None:
            wait += sample.send_after_seconds + sweep
        longest = max(longest, wait)
    return SETTLE_TIMEOUT_SECONDS + longest


@dataclass(frozen=True)
class SampleResult:
    sample: Sample
    state: str
    error: str | None
    received: StoredMessage | None  # the inbox message with the delivery's Message-ID
    attempts: int | None = None  # delivery.attempts
    written_at: datetime | None = None  # when the demo wrote the document (UTC)
    send_at: datetime | None = None  # the sendAt it was written with
    first_failure: str | None = None  # the reason of the first failed attempt (delivery.attemptHistory)

    @property
    def received_at(self) -> datetime | None:
        return self.received.stored_at if self.received else None

    @property
    def as_expected(self) -> bool:
        sample = self.sample
        if self.state != sample.expected_state:
            return False
        if sample.expected_error is not None and sample.expected_error not in (self.error or ""):
            return False
        if sample.expected_attempts is not None and self.attempts != sample.expected_attempts:
            return False
        if sample.expected_state == "SUCCESS":
            if self.received is None:
                return False
            if sample.expected_subject is not None and self.received.subject != sample.expected_subject:
                return False
        if sample.send_after_seconds is not None:
            # Not before its time: the inbox stored it at or after sendAt (same clock as the function's).
            if self.send_at is None or self.received_at is None or self.received_at < self.send_at:
                return False
        return True


def _received(stack: LocalStack, delivery: dict[str, Any]) -> StoredMessage | None:
    message_id = (delivery.get("info") or {}).get("messageId")
    if not message_id:
        return None
    return next((m for m in list_messages(stack.inbox_dir) if m.message_id == message_id), None)


def _first_failure(delivery: dict[str, Any]) -> str | None:
    history = delivery.get("attemptHistory")
    if not isinstance(history, list) or not history or not isinstance(history[0], dict):
        return None
    first = history[0]
    return f"attempt {first.get('attempt', 1)}: {first.get('error') or '?'}"


def run_samples(stack: LocalStack, samples: Sequence[Sample], timeout: float | None = None) -> list[SampleResult]:
    """Create every sample document (as an app would), then wait for each to settle: SUCCESS or ERROR
    while the sweep runs (a RETRY is tried again), the first attempt's outcome when it does not."""
    settings = stack.settings
    if timeout is None:
        timeout = settle_timeout(samples, backoff_seconds=settings.retry_backoff_seconds,
                                 backoff_max_seconds=settings.retry_backoff_max_seconds,
                                 sweep_seconds=stack.sweep_seconds if stack.scheduler else None)
    states = SETTLED_STATES if stack.scheduler else FINAL_STATES
    written: dict[str, tuple[datetime, dict[str, Any]]] = {}
    for sample in samples:
        moment = datetime.now(timezone.utc)
        document = sample.document_at(moment)
        stack.mail(sample.doc_id).create(document)
        written[sample.doc_id] = (moment, document)
    results = []
    for sample in samples:
        moment, document = written[sample.doc_id]
        timing = {"written_at": moment, "send_at": document.get("sendAt")}
        try:
            delivery = wait_for_delivery(stack.mail(sample.doc_id), timeout, states)
        except TimeoutError as error:
            results.append(SampleResult(sample, "TIMEOUT", str(error), None, **timing))
            continue
        attempts = delivery.get("attempts")
        results.append(SampleResult(
            sample, delivery.get("state", ""), delivery.get("error"), _received(stack, delivery),
            attempts=attempts if isinstance(attempts, int) else None, first_failure=_first_failure(delivery),
            **timing,
        ))
    return results


def _seconds_after(moment: datetime, start: datetime) -> str:
    return f"+{(moment - start).total_seconds():.1f} s"


def _received_column(result: SampleResult) -> str:
    """When the inbox got it, counted from the document's write; with the sendAt it had to wait for."""
    if result.received_at is None or result.written_at is None:
        return "-"
    text = _seconds_after(result.received_at, result.written_at)
    if result.send_at is not None:
        text += f" (sendAt {_seconds_after(result.send_at, result.written_at)})"
    return text


def format_table(results: Sequence[SampleResult]) -> str:
    rows = [("document", "sample", "state", "attempts", "arrived", "received subject", "error")]
    for result in results:
        mark = "" if result.as_expected else " (unexpected)"
        subject = result.received.subject if result.received else "-"
        # A sent document that needed retries shows why the first attempt failed.
        error = result.error or (f"({result.first_failure})" if result.first_failure else "-")
        if len(error) > ERROR_COLUMN_CHARS:
            error = error[: ERROR_COLUMN_CHARS - 3] + "..."
        attempts = "-" if result.attempts is None else str(result.attempts)
        rows.append((result.sample.doc_id, result.sample.what, result.state + mark, attempts,
                     _received_column(result), subject, error))
    last = len(rows[0]) - 1
    widths = [max(len(row[column]) for row in rows) for column in range(last)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:last], widths)) + "  " + row[last] for row in rows
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
        f"\n{expected} of {len(results)} documents ended as expected; {invocations} process_mail invocations "
        f"(one per document: its own status writes trigger nothing), {_sweeps(stack)}; "
        f"{received} messages in {_shown(stack.inbox_dir)}",
        file=out,
    )
    if stack.token_endpoint is not None:  # XOAUTH2 mode (issue 11)
        print(_xoauth2_line(stack), file=out)


def _xoauth2_line(stack: LocalStack) -> str:
    endpoint = stack.token_endpoint
    assert endpoint is not None
    return (f"XOAUTH2: {endpoint.grants} access token(s) issued by the local token endpoint {endpoint.url} "
            "(each function process refreshes once per token lifetime, not per email)")


def _sweeps(stack: LocalStack) -> str:
    scheduler = stack.scheduler
    if scheduler is None:
        return "no sweep"
    failed = f", {scheduler.failed} failed" if scheduler.failed else ""
    return f"{scheduler.sweeps} sweep_mail calls (every {scheduler.period:g} s{failed})"


def _state_dir_flag(state_dir: Path) -> str:
    return "" if state_dir == DEFAULT_STATE_DIR.resolve() else f" --state-dir {_shown(state_dir)}"


def _print_serving(stack: LocalStack, state_file: Path, out: TextIO) -> None:
    settings = stack.settings
    print(
        "\nThe local stack is running (Ctrl-C stops everything):\n"
        f"  inbox     {stack.web.url}\n"
        f"  emulator  FIRESTORE_EMULATOR_HOST={stack.emulator.host}  project {settings.project}, "
        f"collection {settings.mail_collection}\n"
        f"  function  {stack.function_url}  process_mail, once per new document (log: {_shown(stack.function_log)})\n"
        f"  sweep     {stack.sweep_url}  sweep_mail, every {stack.sweep_seconds:g} s: retries, sendAt "
        f"(log: {_shown(stack.sweep_log)})\n"
        f"  smtp      {stack.inbox.host}:{stack.inbox.port}  STARTTLS + AUTH"
        f"{' XOAUTH2 (tokens from ' + stack.token_endpoint.url + ')' if stack.token_endpoint else ''}, "
        f"CA {_shown(stack.state_dir / 'tls' / 'ca.pem')}\n"
        f"  state     {_shown(state_file)}\n"
        f'  send      make send ARGS="--to you@example.com --subject Hi --text Hello{_state_dir_flag(stack.state_dir)}"\n'
        f'  faults    make send ARGS="--inbox-fault data:451{_state_dir_flag(stack.state_dir)}"  (now: '
        f'{", ".join(map(str, stack.inbox_faults)) or "none"}; --inbox-fault none clears)',
        file=out,
        flush=True,
    )


# Ctrl-C, kill and a closed terminal all leave through the finally blocks. SIGINT is set explicitly too:
# a shell starts background jobs with it ignored, and Python then never raises KeyboardInterrupt.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


WATCH_SECONDS = 0.2


def serve_until_dead(stack: LocalStack) -> DeadPart:
    """Keep the stack running until a signal (KeyboardInterrupt) or until one of its parts dies. Short
    waits: a signal may land on another thread, and Python runs handlers only when the main thread wakes."""
    while True:
        time.sleep(WATCH_SECONDS)
        dead = stack.check()
        if dead is not None:
            return dead


def describe_dead(dead: DeadPart) -> str:
    log = f" (log: {_shown(dead.log)})" if dead.log else ""
    return f"{dead}; stopping{log}"


def _fault_list(text: str) -> list[InboxFault]:
    try:
        return parse_faults(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give 0.1 to 3600 seconds")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description="Run the mailer pipeline on this machine.")
    parser.add_argument("--serve", action="store_true", help="keep the stack running after the samples")
    parser.add_argument("--no-samples", action="store_true", help="with --serve: start with an empty inbox")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="logs, inbox, state.json (default .demo)")
    parser.add_argument("--stack-file", type=Path, default=LOCAL_STACK_FILE, help="settings (default stacks/Pulumi.local.yaml)")
    parser.add_argument("--templates-dir", type=Path, default=TEMPLATES_DIR, help="template files (default templates/)")
    parser.add_argument("--sweep-seconds", type=_positive_seconds, default=DEFAULT_SWEEP_SECONDS, metavar="SECONDS",
                        help=f"how often the local scheduler calls sweep_mail (default {DEFAULT_SWEEP_SECONDS:g}; "
                             "deployed: mailer:sweepSchedule)")
    parser.add_argument("--inbox-fault", type=_fault_list, action="append", default=[], metavar="SPEC",
                        help=f"inject a fault in the SMTP inbox (repeatable): {FAULT_HELP}; refuse = connection "
                             "refused. While serving, change it with make send ARGS=\"--inbox-fault SPEC\"")
    parser.add_argument("--xoauth2", action="store_true",
                        help="authenticate with SASL XOAUTH2: a local OAuth2 token endpoint issues the access tokens "
                             "the inbox accepts; the function refreshes them from a refresh token (issue 11)")
    for name in ("smtp", "inbox-web", "function", "sweep"):
        parser.add_argument(f"--{name}-port", type=int, default=0, metavar="PORT", help=f"{name} port (default: a free one)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    ports = Ports(smtp=args.smtp_port, inbox_web=args.inbox_web_port, function=args.function_port,
                  sweep=args.sweep_port)
    stack = LocalStack(args.state_dir.resolve(), stack_file=args.stack_file, ports=ports,
                       templates_dir=args.templates_dir.resolve(), sweep_seconds=args.sweep_seconds,
                       inbox_faults=[fault for faults in args.inbox_fault for fault in faults], xoauth2=args.xoauth2)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS} if in_main_thread else {}
    started = time.monotonic()
    try:
        print(f"Starting the local stack from {_shown(args.stack_file)} ...", file=out, flush=True)
        stack.start()
        dead: DeadPart | None = None
        try:
            results: list[SampleResult] = []
            if not args.no_samples:
                results = run_samples(stack, demo_samples(stack.templates))
                _print_summary(stack, results, out)
            if args.serve:
                _print_serving(stack, write_state(stack.state_dir, stack.state()), out)
                dead = serve_until_dead(stack)  # or a signal
                print(f"make demo: {describe_dead(dead)}", file=sys.stderr, flush=True)
        finally:
            remove_state(stack.state_dir)
            stack.stop()
        print(f"Done in {time.monotonic() - started:.1f} s; everything is stopped.", file=out)
        return 0 if dead is None and all(result.as_expected for result in results) else 1
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
