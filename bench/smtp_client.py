"""The project's side of bench/smtp.py: one process, one SmtpPool, messages sent from several threads.

    .venv/bin/python -m bench.smtp_client CONFIG.json     (started by bench/smtp.py, not by hand)

Speaks the same line protocol as bench/node/run.js: warm the pool up (opens its connections, TLS and
AUTH included), print "ready", wait for "go" on stdin, send `messages` emails from `senders` threads
(each thread: document -> parse_mail_document -> compose -> SmtpPool.send, as the function does),
then print one JSON line: elapsed seconds, CPU seconds of this process over the measured part
(time.process_time: every thread), per-message latencies (ms) and failures. The pool is closed after
the JSON line, so the QUITs fall outside what the bench counts.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

# MAILER_FUNCTIONS: another tree's functions/ (bench.smtp --baseline REV extracts one), else this one's.
sys.path.insert(0, os.environ.get("MAILER_FUNCTIONS") or str(Path(__file__).resolve().parent.parent / "functions"))

from mailer.compose import ComposeDefaults, compose  # noqa: E402
from mailer.document import parse_mail_document  # noqa: E402
from mailer.transport import SmtpPool, parse_smtp_uri  # noqa: E402

DEFAULTS = ComposeDefaults(default_from=None, default_reply_to=None, max_message_bytes=10 * 1024 * 1024)


def document(spec: dict[str, Any], index: int) -> dict[str, Any]:
    """The mail document an app would write for this message (attachment as base64 text, as in Firestore)."""
    message: dict[str, Any] = {"subject": f"{spec['subject']} {index}", "text": spec["text"]}
    if spec.get("html"):
        message["html"] = spec["html"]
    if spec.get("attachment"):
        attachment = spec["attachment"]
        message["attachments"] = [{"filename": attachment["filename"], "content": attachment["contentBase64"],
                                   "encoding": "base64", "contentType": attachment["contentType"]}]
    return {"from": spec["from"], "to": spec["to"], "message": message}


def sender_for(pool: SmtpPool):
    """pool.send with the message serialized once: ComposedMail.payload (bytes) where compose() makes
    one, else (an older revision, see bench.smtp --baseline) the EmailMessage, serialized by send."""

    def send(mail):
        body = mail.payload if hasattr(mail, "payload") else mail.message
        return pool.send(mail.envelope_from, mail.recipients, body, mail.smtputf8)

    return send


def send_all(send, spec: dict[str, Any], first: int, count: int, senders: int) -> tuple[list[float], list[str]]:
    numbers = iter(range(first, first + count))
    take = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def worker() -> None:
        while True:
            with take:
                index = next(numbers, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                result = send(compose(parse_mail_document(document(spec, index)), DEFAULTS))
                if result.accepted:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    failures.append(f"not accepted: {result.deferred_reason}")
            except Exception as exc:  # reported, not raised: the bench prints what failed
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    spec = json.loads(Path(config["message"]).read_text())
    pool = SmtpPool(parse_smtp_uri(config["uri"]))
    send = sender_for(pool)
    _, failures = send_all(send, spec, 0, config["warmup"], config["senders"])
    if failures:
        print(json.dumps({"error": f"warm-up failed: {failures[0]}"}), flush=True)
        return 1
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    cpu, started = time.process_time(), time.perf_counter()
    latencies, failures = send_all(send, spec, config["warmup"], config["messages"], config["senders"])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"elapsed": elapsed, "cpu": cpu, "latencies": latencies, "failures": failures[:5],
                      "failed": len(failures), "runtime": f"Python {sys.version.split()[0]}"}), flush=True)
    pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
