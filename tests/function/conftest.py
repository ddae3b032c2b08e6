"""The deployed function's whole path on one machine: Firestore emulator -> trigger bridge (Eventarc's
event type, filter and protobuf wire format) -> functions-framework -> a real SMTP server."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from local.bridge import TriggerBridge
from local.eventarc import pubsub_event
from local.documents import FINAL_STATES, wait_for_delivery
from mailer.logs import configure_logging

ROOT = Path(__file__).resolve().parents[2]
CREATED = "google.cloud.firestore.document.v1.created"
WRITTEN = "google.cloud.firestore.document.v1.written"
SMTP_USER, SMTP_PASSWORD = "mailer", "s3cret-Pa55-not-in-logs"


@pytest.fixture(scope="session")
def function_app():
    """The function exactly as deployed: main.py's `process_mail`, loaded by functions-framework."""
    return functions_framework.create_app("process_mail", str(ROOT / "functions" / "main.py"), "cloudevent")


@pytest.fixture(scope="session")
def sweep_app():
    """The sweep exactly as deployed: main.py's `sweep_mail`, fed Pub/Sub CloudEvents."""
    return functions_framework.create_app("sweep_mail", str(ROOT / "functions" / "main.py"), "cloudevent")


def post_event(app, headers: dict[str, str], body: bytes) -> int:
    return app.test_client().post("/", headers=headers, data=body).status_code


class Pipeline:
    def __init__(self, emulator, app, collection: str, monkeypatch, sweep_app=None) -> None:
        self.emulator = emulator
        self.app = app
        self.sweep_app = sweep_app
        self.collection = collection
        self.client = emulator.client()
        self._monkeypatch = monkeypatch
        self.bridge: TriggerBridge | None = None

    def configure(self, **env: str | None) -> None:
        for name, value in env.items():
            if value is None:
                self._monkeypatch.delenv(name, raising=False)
            else:
                self._monkeypatch.setenv(name, value)

    def start_bridge(self, event_type: str = CREATED) -> TriggerBridge:
        self.bridge = TriggerBridge(
            f"{self.emulator.admin_url}/changes",
            lambda headers, body: post_event(self.app, headers, body),
            event_type=event_type,
            document=f"{self.collection}/{{docId}}",
        )
        self.bridge.start()
        return self.bridge

    def sweep(self) -> int:
        """One tick of the sweep's schedule, posted to `sweep_mail` as Eventarc posts a Pub/Sub message;
        returns when that sweep is done."""
        headers, body = pubsub_event(project=self.emulator.project, topic="mailer-sweep", subscription="eventarc-sweep")
        return post_event(self.sweep_app, headers, body)

    def doc(self, doc_id: str):
        return self.client.collection(self.collection).document(doc_id)

    def wait_for(self, doc_id: str, states=FINAL_STATES, timeout: float = 15.0) -> dict[str, Any]:
        """Poll until the document's delivery.state is one of `states`; returns the delivery map."""
        return wait_for_delivery(self.doc(doc_id), timeout, states)

    def wait_seen(self, doc_id: str, changes: int, timeout: float = 10.0) -> None:
        """Wait until the bridge has read `changes` changes of the document (delivered or filtered)."""
        path = f"{self.collection}/{doc_id}"
        deadline = time.monotonic() + timeout
        while self.bridge.seen[path] < changes:
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge saw {self.bridge.seen[path]} changes of {path}, expected {changes}")
            time.sleep(0.02)

    def send(self, doc_id: str, data: dict[str, Any]) -> dict[str, Any]:
        self.doc(doc_id).create(data)
        return self.wait_for(doc_id)


@pytest.fixture
def pipeline(firestore_emulator, function_app, sweep_app, unique_collection, monkeypatch) -> Iterator[Pipeline]:
    for name in ("SMTP_CONNECTION_URI", "SMTP_PASSWORD", "DEFAULT_FROM", "DEFAULT_REPLY_TO", "TTL_EXPIRE_TYPE",
                 "TTL_EXPIRE_VALUE", "USERS_COLLECTION", "TEMPLATES_COLLECTION", "MAX_MESSAGE_BYTES", "MAX_ATTEMPTS",
                 "RETRY_BACKOFF_SECONDS", "RETRY_BACKOFF_MAX_SECONDS", "DELIVERY_GUARANTEE", "SWEEP_BUDGET_SECONDS",
                 "SWEEP_WORKERS", "LEASE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAIL_COLLECTION", unique_collection)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", firestore_emulator.project)
    monkeypatch.setenv("DEFAULT_FROM", "Mailer <noreply@example.com>")
    line = Pipeline(firestore_emulator, function_app, unique_collection, monkeypatch, sweep_app)
    yield line
    if line.bridge is not None:
        line.bridge.stop()


@pytest.fixture
def log_stream():
    """The function's structured log lines, written to a string for the test to read."""
    stream = io.StringIO()
    configure_logging(stream=stream)
    yield stream
    configure_logging()
