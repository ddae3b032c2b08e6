"""The function served over HTTP by the functions-framework command, as Cloud Run runs it, with events
posted by the local trigger bridge."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local.bridge import TriggerBridge, http_deliverer

from .conftest import CREATED, ROOT, SMTP_PASSWORD, SMTP_USER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served_function(pipeline, smtp_server):
    server = smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})
    port = free_port()
    env = {**os.environ, "SMTP_CONNECTION_URI": server.uri(SMTP_USER), "SMTP_PASSWORD": SMTP_PASSWORD,
           "FIRESTORE_EMULATOR_HOST": pipeline.emulator.host}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "functions-framework"), "--target", "process_mail", "--source",
         str(ROOT / "functions" / "main.py"), "--signature-type", "cloudevent", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode(errors="replace") if process.poll() is not None else ""
                    raise RuntimeError(f"functions-framework did not start: {output[-2000:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/", server, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_served_function_sends_and_logs_json(pipeline, served_function):
    url, server, process = served_function
    with TriggerBridge(f"{pipeline.emulator.admin_url}/changes", http_deliverer(url), event_type=CREATED,
                       document=f"{pipeline.collection}/{{docId}}") as bridge:
        pipeline.bridge = None
        pipeline.doc("served").create({"to": "ada@example.com", "message": {"subject": "Served", "text": "hi"}})
        delivery = pipeline.wait_for("served")["delivery"]
        assert bridge.failures == []
    assert delivery["state"] == "SUCCESS", delivery
    assert len(server.messages) == 1
