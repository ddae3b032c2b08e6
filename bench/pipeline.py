"""Benchmark: what one email costs and how fast the local pipeline delivers, against the extension.

    .venv/bin/python -m bench.pipeline [--emails 100] [--concurrency 8] [--template]
                                      [--rtt 50] [--function-concurrency 1,16]

Runs the whole local stack (emulator, trigger bridge, the function under functions-framework, an
SMTP inbox with STARTTLS and AUTH), writes N mail documents from N-way concurrent writers, and prints
per-email Firestore operations and invocations (counted by the emulator and the bridge, as Firestore
bills and Eventarc invokes) and delivery latency and throughput on this machine. Latency figures are
this machine's, loopback SMTP included: compare runs, not clouds. Nothing here asserts; it prints.

--rtt puts a latency proxy (half the RTT each way; it counts SMTP round trips) between the function and
the inbox; --function-concurrency runs the stack once per value with the trigger bridge delivering that
many events at a time and the function serving that many requests (THREADS), as an instance with that
concurrency would (bench/stackhooks.py says how).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from bench.stackhooks import hooked_stack
from local.stack import LocalStack
from local.stackfile import LOCAL_STACK_FILE

# Measured on firestore-send-email 0.2.8 (DESIGN.md section 4), per delivered email.
EXTENSION = {"invocations": 4, "reads": 4, "writes": 3}
CHANGES_PER_EMAIL = 3  # the app's create, the function's claim and its outcome


def bench_stack_file(folder: Path) -> Path:
    """The local stack as deployed by default: templates cached for 60 s (the demo turns caching off)."""
    stack = yaml.safe_load(LOCAL_STACK_FILE.read_text())
    stack["config"]["mailer:templateCacheSeconds"] = 60
    path = folder / "Pulumi.bench.yaml"
    path.write_text(yaml.safe_dump(stack))
    return path


def document(index: int, template: bool) -> dict:
    if template:
        return {"to": f"user{index}@example.com", "template": {"name": "Generic", "data": {"code": f"{index:06d}"}}}
    return {"to": f"user{index}@example.com",
            "message": {"subject": f"Benchmark {index}", "text": "Hello", "html": "<p>Hello</p>"}}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def run(emails: int, concurrency: int, template: bool, rtt: float = 0.0, function_concurrency: int = 1) -> int:
    hooked = rtt > 0 or function_concurrency > 1
    with tempfile.TemporaryDirectory(prefix="mailer-bench-") as folder, \
            (hooked_stack(rtt, function_concurrency) if hooked else contextlib.nullcontext()) as hooks, \
            LocalStack(Path(folder) / "state", stack_file=bench_stack_file(Path(folder))) as stack:
        ids = [f"bench-{index:05d}" for index in range(emails)]
        paths = [f"{stack.settings.mail_collection}/{doc_id}" for doc_id in ids]
        stack.emulator.reset_stats()
        turns = hooks.proxy.turns if hooks and hooks.proxy else 0

        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as writers:
            list(writers.map(lambda pair: stack.mail(pair[1]).create(document(pair[0], template)), enumerate(ids)))
        # Settle through the change feed, not by polling the documents (polling would count as reads).
        deadline = time.monotonic() + 60 + emails
        while sum(stack.bridge.seen[path] for path in paths) < CHANGES_PER_EMAIL * emails:
            if time.monotonic() > deadline:
                print("did not settle in time", file=sys.stderr)
                return 1
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        turns = hooks.proxy.turns - turns if hooks and hooks.proxy else None
        stats = stack.emulator.stats()

        snapshots = [stack.mail(doc_id).get() for doc_id in ids]
        states = [(snap.to_dict() or {}).get("delivery", {}).get("state") for snap in snapshots]
        latencies = [
            (snap.get("delivery.endTime") - snap.create_time).total_seconds() * 1000
            for snap in snapshots
            if snap.get("delivery.state") == "SUCCESS"
        ]
        template_reads = sum(n for path, n in stats["readsByDocument"].items() if not path.startswith(stack.settings.mail_collection + "/"))
        mail_reads = sum(stats["readsByDocument"].get(path, 0) for path in paths)
        mail_writes = sum(stats["writesByDocument"].get(path, 0) for path in paths) - emails  # less the app's creates
        invocations = sum(stack.bridge.invocations[path] for path in paths)
        received = len(list(stack.inbox_dir.glob("*.eml")))

    kind = "template (Generic, cached 60 s)" if template else "inline message"
    print(f"mailer pipeline benchmark: {emails} emails, {kind}, {concurrency} concurrent writers")
    if hooked:
        print(f"  SMTP round trip {rtt:g} ms (latency proxy between the function and the inbox), "
              f"function concurrency {function_concurrency}")
    print(f"  settled: {states.count('SUCCESS')} SUCCESS of {emails}, {received} messages in the inbox")
    print()
    print(f"  {'per email':<34}{'mailer':>10}{'extension 0.2.8':>18}")
    print(f"  {'function invocations':<34}{invocations / emails:>10.2f}{EXTENSION['invocations']:>18}")
    print(f"  {'mail document reads':<34}{mail_reads / emails:>10.2f}{EXTENSION['reads']:>18}")
    print(f"  {'template/partial reads':<34}{template_reads / emails:>10.2f}{'-':>18}")
    print(f"  {'function writes':<34}{mail_writes / emails:>10.2f}{EXTENSION['writes']:>18}")
    print()
    if latencies:
        print(f"  latency, document created -> SUCCESS recorded (ms): p50 {statistics.median(latencies):.0f}, "
              f"p95 {percentile(latencies, 0.95):.0f}, p99 {percentile(latencies, 0.99):.0f}, max {max(latencies):.0f}")
    print(f"  throughput: {emails / elapsed:.1f} emails/s over {elapsed:.1f} s (one local function process)")
    if turns is not None:
        print(f"  SMTP round trips per email (turns counted at the proxy): {turns / emails:.2f}")
    if hooks and hooks.failed_deliveries:
        print(f"  {len(hooks.failed_deliveries)} deliveries to the function failed: {hooks.failed_deliveries[0]}")
    if function_concurrency == 1:
        print("  (the local bridge delivers one event at a time, so latency here is mostly queueing behind the burst)")
    return 0 if states.count("SUCCESS") == emails else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--template", action="store_true", help="send through the Generic template")
    parser.add_argument("--rtt", type=float, default=0.0,
                        help="SMTP round trip in ms through a latency proxy between the function and the inbox")
    parser.add_argument("--function-concurrency", default="1",
                        help="events delivered to the function at a time; a comma list runs the stack once per value")
    args = parser.parse_args(argv)
    levels = [int(value) for value in args.function_concurrency.split(",") if value.strip()]
    if not levels or min(levels) < 1 or args.rtt < 0:
        parser.error("--function-concurrency takes positive integers, --rtt a non-negative number")
    status = 0
    for number, level in enumerate(levels):
        if number:
            print()
        status = run(args.emails, args.concurrency, args.template, args.rtt, level) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
