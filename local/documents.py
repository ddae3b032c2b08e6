"""Talking to the emulator as an app would: a Firestore client, and waiting for a document's delivery."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection
from typing import Any

from google.cloud import firestore

# What one attempt leaves a document in (RETRY waits for a later sweep): the end when no sweep runs.
FINAL_STATES = frozenset({"SUCCESS", "ERROR", "RETRY"})
# Where a document ends once the sweep runs: sent, or given up on. RETRY and PENDING only wait.
SETTLED_STATES = frozenset({"SUCCESS", "ERROR"})
EMULATOR_HOST_VAR = "FIRESTORE_EMULATOR_HOST"
_environment_lock = threading.Lock()


def emulator_client(host: str, project: str, database: str = "(default)") -> firestore.Client:
    """A client on the emulator at `host`. The library reads the host from the environment only while
    it is constructed, so the variable is set for that moment and then restored."""
    with _environment_lock:
        previous = os.environ.get(EMULATOR_HOST_VAR)
        os.environ[EMULATOR_HOST_VAR] = host
        try:
            return firestore.Client(project=project, database=database)
        finally:
            if previous is None:
                os.environ.pop(EMULATOR_HOST_VAR, None)
            else:
                os.environ[EMULATOR_HOST_VAR] = previous


def wait_for_delivery(
    document: firestore.DocumentReference, timeout: float = 20.0, states: Collection[str] = FINAL_STATES
) -> dict[str, Any]:
    """Poll until the document's delivery.state is one of `states` (by default: final); returns the
    delivery map. TimeoutError names the document and the last state seen."""
    deadline = time.monotonic() + timeout
    delivery: dict[str, Any] = {}
    while True:
        snapshot = document.get()
        delivery = (snapshot.to_dict() or {}).get("delivery") or {}
        if delivery.get("state") in states:
            return delivery
        if time.monotonic() > deadline:
            state = delivery.get("state") or ("no delivery field" if snapshot.exists else "no document")
            raise TimeoutError(
                f"{document.path} did not reach {sorted(states)} within {timeout:.0f} s (last seen: {state})"
            )
        time.sleep(0.05)
