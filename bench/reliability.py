"""Benchmark: retries under load, the sweep's drain rate, and what retries and idle sweeps cost.

    .venv/bin/python -m bench.reliability [--emails 1000] [--fail-fraction 0.05] [--backlog 2000]

Runs the local stack (emulator, trigger bridge, process_mail and sweep_mail under functions-framework,
the scheduler ticking every --sweep-seconds, the SMTP inbox) and measures three things:

1. A burst of --emails documents of which --fail-fraction go to a `+tempfail` recipient: the inbox
   refuses the first copy of each with 451 after DATA (local/inbox.py), so each must be retried by the
   sweep. Prints lost, stuck and duplicate counts (all should be 0) and the time until every document
   was final, watched through the emulator's change feed (no reads).
2. A backlog of --backlog documents that only the sweep may send (each is RETRY, due a moment after it is
   written, so the created trigger leaves it alone): how fast the sweep drains it.
3. Billing per the emulator: one idle sweep, and the extra operations of a retried email.

Figures are this machine's (loopback SMTP, one process per function): compare runs and ratios, not
clouds. Nothing here asserts; it prints.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import urllib.parse
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from google.cloud.firestore_v1.types import Document

from bench.pipeline import EXTENSION, bench_stack_file
from local.mailbox import list_messages
from local.bridge import http_deliverer
from local.eventarc import pubsub_event
from local.stack import SWEEP_MESSAGE, LocalStack
from local.stackfile import sweep_event_source

FINAL = ("SUCCESS", "ERROR")


class StateWatcher:
    """The latest delivery state and attempts of every mail document, read from the change feed."""

    def __init__(self, stack: LocalStack) -> None:
        self.prefix = stack.settings.mail_collection + "/"
        self.states: dict[str, tuple[str | None, int]] = {}
        self._url = f"{stack.emulator.admin_url}/changes"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> StateWatcher:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        url = urllib.parse.urlsplit(self._url)
        connection = http.client.HTTPConnection(url.hostname, url.port)
        connection.request("GET", url.path)
        response = connection.getresponse()
        self._ready.set()
        for line in response:  # NDJSON, one change per line (emulator/README.md)
            if self._stop.is_set():
                return
            if not line.strip():
                continue
            change = json.loads(line)
            if not change["path"].startswith(self.prefix) or not change.get("new"):
                continue
            fields = Document.deserialize(base64.b64decode(change["new"])).fields
            record = fields["delivery"].map_value.fields if "delivery" in fields else {}
            state = record["state"].string_value if "state" in record else None
            attempts = int(record["attempts"].integer_value) if "attempts" in record else 0
            self.states[change["path"][len(self.prefix):]] = (state, attempts)

    def final(self, ids: list[str]) -> int:
        return sum(1 for doc_id in ids if self.states.get(doc_id, (None, 0))[0] in FINAL)


def _progress(label: str, done: int, total: int, started: float) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    sys.stderr.write(f"  {label}: {done}/{total} final after {time.monotonic() - started:.0f} s{end}")
    sys.stderr.flush()


def _wait_final(watcher: StateWatcher, ids: list[str], label: str, timeout: float) -> float | None:
    started = time.monotonic()
    last_report = 0.0
    while True:
        done = watcher.final(ids)
        now = time.monotonic()
        if done == len(ids):
            _progress(label, done, len(ids), started)
            sys.stderr.write("\n" if sys.stderr.isatty() else "")
            return now - started
        if now - started > timeout:
            _progress(label, done, len(ids), started)
            return None
        if now - last_report >= (0.5 if sys.stderr.isatty() else 5.0):
            _progress(label, done, len(ids), started)
            last_report = now
        time.sleep(0.05)


def fault_burst(stack: LocalStack, watcher: StateWatcher, emails: int, fraction: float, concurrency: int) -> dict:
    every = max(1, round(1 / fraction)) if fraction > 0 else 0
    ids = [f"burst-{n:05d}" for n in range(emails)]
    flaky = {doc_id for n, doc_id in enumerate(ids) if every and n % every == 0}

    def document(doc_id: str) -> dict:
        local = f"{doc_id}+tempfail" if doc_id in flaky else doc_id
        return {"to": f"{local}@example.com", "message": {"subject": f"Burst {doc_id}", "text": "Hello"}}

    stack.emulator.reset_stats()
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as writers:
        list(writers.map(lambda doc_id: stack.mail(doc_id).create(document(doc_id)), ids))
    seconds = _wait_final(watcher, ids, "fault burst", timeout=120 + emails / 5)
    stats = stack.emulator.stats()
    elapsed = time.monotonic() - started if seconds is not None else None
    states = {doc_id: watcher.states.get(doc_id, (None, 0)) for doc_id in ids}
    received = Counter(message.recipients for message in list_messages(stack.inbox_dir)
                       if message.subject.startswith("Burst "))
    per_doc = Counter(message.subject.removeprefix("Burst ") for message in list_messages(stack.inbox_dir)
                      if message.subject.startswith("Burst "))
    prefix = stack.settings.mail_collection + "/"
    writes = {path[len(prefix):]: n for path, n in stats["writesByDocument"].items() if path.startswith(prefix)}
    reads = {path[len(prefix):]: n for path, n in stats["readsByDocument"].items() if path.startswith(prefix)}
    return {
        "ids": ids, "flaky": flaky, "states": states, "elapsed": elapsed, "copies": per_doc,
        "received": sum(received.values()), "writes": writes, "reads": reads,
    }


def backlog_drain(stack: LocalStack, watcher: StateWatcher, documents: int) -> tuple[int, float | None]:
    ids = [f"backlog-{n:05d}" for n in range(documents)]
    due = datetime.now(timezone.utc) + timedelta(seconds=3)
    for start in range(0, documents, 400):  # a batch commits at most 500 writes
        batch = stack.client.batch()
        for doc_id in ids[start:start + 400]:
            batch.set(stack.mail(doc_id), {
                "to": f"{doc_id}@example.com", "message": {"subject": f"Backlog {doc_id}", "text": "Hello"},
                "delivery": {"state": "RETRY", "attempts": 1, "nextAttemptTime": due, "error": "SMTP 451 earlier",
                             "messageId": None, "leaseExpireTime": None, "info": None},
            })
        batch.commit()
    time.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))
    return documents, _wait_final(watcher, ids, "backlog", timeout=120 + documents / 2)


def idle_sweep_cost(stack: LocalStack, sweeps: int = 3) -> dict:
    """Billing of sweeps that find nothing: with the scheduler paused, `sweeps` ticks are posted to
    sweep_mail one after another, so the counters hold exactly those sweeps."""
    if stack.scheduler is None or stack.sweep_url is None:
        return {"sweeps": 0, "reads": 0, "writes": 0}
    deliver = http_deliverer(stack.sweep_url)
    with stack.scheduler.paused():
        stack.emulator.reset_stats()
        for _ in range(sweeps):
            deliver(*pubsub_event(data=SWEEP_MESSAGE, **sweep_event_source(stack.settings)))
        stats = stack.emulator.stats()
    return {"sweeps": sweeps, "reads": stats["reads"], "writes": stats["writes"]}


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="mailer-bench-") as folder, \
            LocalStack(Path(folder) / "state", stack_file=bench_stack_file(Path(folder)),
                       sweep_seconds=args.sweep_seconds) as stack, StateWatcher(stack) as watcher:
        settings = stack.settings
        print(f"mailer reliability benchmark: sweep every {args.sweep_seconds:g} s, retry backoff "
              f"{settings.retry_backoff_seconds}-{settings.retry_backoff_max_seconds} s, {settings.max_attempts} attempts, "
              f"{settings.sweep_workers} sweep workers")
        # Idle first: later, the bridge may still be delivering the backlog's stale created events, whose
        # claims lose (each re-reads its document) and would be billed to the idle sweeps.
        idle = idle_sweep_cost(stack)
        burst = fault_burst(stack, watcher, args.emails, args.fail_fraction, args.concurrency)
        backlog, drained = backlog_drain(stack, watcher, args.backlog) if args.backlog else (0, None)

    states = burst["states"]
    final = Counter(state for state, _ in states.values())
    stuck = sum(1 for state, _ in states.values() if state not in FINAL)
    lost = sum(1 for doc_id, (state, _) in states.items() if state == "SUCCESS" and burst["copies"][doc_id] == 0)
    duplicates = sum(n - 1 for n in burst["copies"].values() if n > 1)
    attempts = Counter(attempts for _, attempts in states.values())
    print()
    print(f"  fault burst: {args.emails} emails, {len(burst['flaky'])} ({len(burst['flaky']) / args.emails:.1%}) "
          "refused once with 451 after DATA")
    print(f"    final: {final.get('SUCCESS', 0)} SUCCESS, {final.get('ERROR', 0)} ERROR; "
          f"lost {lost}, stuck {stuck}, duplicates {duplicates}")
    print("    attempts: " + ", ".join(f"{count} x {n}" for n, count in sorted(attempts.items())))
    if burst["elapsed"] is not None:
        print(f"    time until every document was final: {burst['elapsed']:.1f} s "
              f"({args.emails / burst['elapsed']:.1f} emails/s including retries)")
    else:
        print("    not every document was final in time")
    flaky, plain = burst["flaky"], [d for d in burst["ids"] if d not in burst["flaky"]]

    def mean(values: list[int]) -> float:
        return sum(values) / len(values) if values else 0.0

    writes_flaky = mean([burst["writes"].get(d, 0) - 1 for d in flaky])
    writes_plain = mean([burst["writes"].get(d, 0) - 1 for d in plain])
    reads_flaky = mean([burst["reads"].get(d, 0) for d in flaky])
    reads_plain = mean([burst["reads"].get(d, 0) for d in plain])
    print()
    print(f"  {'per email':<40}{'first try':>10}{'retried once':>14}{'extension 0.2.8':>18}")
    print(f"  {'function writes':<40}{writes_plain:>10.2f}{writes_flaky:>14.2f}{EXTENSION['writes']:>18}")
    print(f"  {'mail document reads':<40}{reads_plain:>10.2f}{reads_flaky:>14.2f}{EXTENSION['reads']:>18}")
    print("  (the extension never retries: its 451 is a final ERROR; its figures are for one delivered email)")
    if backlog:
        print()
        if drained is not None:
            print(f"  backlog: {backlog} due documents drained by the sweep in {drained:.1f} s "
                  f"({backlog / drained:.1f} emails/s with {settings.sweep_workers} workers, one sweep process)")
        else:
            print(f"  backlog: {backlog} due documents not drained in time")
    if idle["sweeps"]:
        per_sweep = idle["reads"] / idle["sweeps"]
        print()
        print(f"  idle sweep: {per_sweep:.1f} reads and {idle['writes'] / idle['sweeps']:.1f} writes per sweep "
              f"(one empty query each); at one sweep a minute: {per_sweep * 1440:,.0f} reads, 0 writes and 1,440 "
              "invocations a day")
    ok = lost == 0 and stuck == 0 and duplicates == 0 and (not backlog or drained is not None)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=1000, help="documents in the fault burst (default 1000)")
    parser.add_argument("--fail-fraction", type=float, default=0.05,
                        help="share of them refused once with 451 (default 0.05)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent writers (default 8)")
    parser.add_argument("--backlog", type=int, default=2000,
                        help="due documents for the sweep's drain measurement (default 2000; 0 skips it)")
    parser.add_argument("--sweep-seconds", type=float, default=2.0, help="the local scheduler's period (default 2)")
    args = parser.parse_args(argv)
    if args.emails < 1 or not 0 <= args.fail_fraction <= 1 or args.backlog < 0 or args.sweep_seconds <= 0:
        parser.error("--emails must be at least 1, --fail-fraction within 0..1, --backlog >= 0, --sweep-seconds > 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
