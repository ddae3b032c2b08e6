"""The function served over HTTP by the functions-framework command, as Cloud Run runs it, with events
posted by the local trigger bridge. It starts through local.function.start_function, the launcher
`make demo` uses, so both are proven at once."""

from __future__ import annotations

import os

import pytest

from local.bridge import TriggerBridge, http_deliverer
from local.function import start_function

from .conftest import CREATED, SMTP_PASSWORD, SMTP_USER


@pytest.fixture
def served_function(pipeline, smtp_server, tmp_path):
    server = smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})
    env = {**os.environ, "SMTP_CONNECTION_URI": server.uri(SMTP_USER), "SMTP_PASSWORD": SMTP_PASSWORD,
           "FIRESTORE_EMULATOR_HOST": pipeline.emulator.host}
    process, url = start_function(env, tmp_path / "function.log")
    try:
        yield url, server
    finally:
        process.stop()


def test_the_served_function_sends(pipeline, served_function):
    url, server = served_function
    with TriggerBridge(f"{pipeline.emulator.admin_url}/changes", http_deliverer(url), event_type=CREATED,
                       document=f"{pipeline.collection}/{{docId}}") as bridge:
        pipeline.doc("served").create({"to": "ada@example.com", "message": {"subject": "Served", "text": "hi"}})
        delivery = pipeline.wait_for("served")
        assert bridge.failures == []
    assert delivery["state"] == "SUCCESS", delivery
    assert len(server.messages) == 1
