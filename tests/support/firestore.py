"""Firestore emulator fixtures: emulator/start.mjs, a real gRPC Firestore on 127.0.0.1.

`firestore_emulator` (session) starts it once and points FIRESTORE_EMULATOR_HOST at it;
`firestore_client` gives a test a client; `unique_collection` keeps tests' data apart
(the emulator is shared and never wiped); `firestore_faults` is the emulator for a test that
injects gRPC faults, with every fault disarmed before and after it.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from local.emulator import EMULATOR_DIR, EmulatorAddress, start_emulator
from local.errors import StartError

PROJECT = "demo-mailer"
EMULATOR_HOST_VAR = "FIRESTORE_EMULATOR_HOST"


class ChangeStream:
    """Iterator over the emulator's change feed; each item is one changed document.

    Items are dicts as the feed sends them, with `old`/`new` decoded to the bytes of a
    google.firestore.v1.Document (or None). `next()` raises TimeoutError when nothing
    arrives within the stream's timeout, so a test never hangs.
    """

    def __init__(self, response: http.client.HTTPResponse, timeout: float) -> None:
        self._response = response
        self._timeout = timeout

    def __iter__(self) -> ChangeStream:
        return self

    def __next__(self) -> dict[str, Any]:
        try:
            line = self._response.readline()
        except (TimeoutError, socket.timeout):
            raise TimeoutError(f"no change arrived from the emulator within {self._timeout} s") from None
        if not line:
            raise StopIteration
        change = json.loads(line)
        for key in ("old", "new"):
            if change[key] is not None:
                change[key] = base64.b64decode(change[key])
        return change


@dataclass(frozen=True)
class FirestoreEmulator(EmulatorAddress):
    """The running emulator. Its admin calls (stats(), reset_stats(), queries(), reset_queries(),
    inject_fault(), faults(), clear_faults()) come from local.emulator.EmulatorAddress."""

    project: str = PROJECT

    @contextmanager
    def changes(self, timeout: float = 10.0) -> Iterator[ChangeStream]:
        """Subscribe to the change feed; every commit after entry is seen, in commit order."""
        admin = self.admin_url.removeprefix("http://")
        admin_host, admin_port = admin.rsplit(":", 1)
        connection = http.client.HTTPConnection(admin_host, int(admin_port), timeout=timeout)
        try:
            connection.request("GET", "/changes")
            # The emulator sends headers only once the subscription is registered.
            response = connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"emulator change feed answered HTTP {response.status}")
            yield ChangeStream(response, timeout)
        finally:
            connection.close()

    def client(self, database: str = "(default)") -> firestore.Client:
        """A google-cloud-firestore client on the emulator (needs the fixture's environment)."""
        if os.environ.get(EMULATOR_HOST_VAR) != self.host:
            raise RuntimeError(f"{EMULATOR_HOST_VAR} must be {self.host} to reach the emulator")
        return firestore.Client(project=self.project, database=database)


@contextmanager
def launched_emulator() -> Iterator[tuple[subprocess.Popen[bytes], FirestoreEmulator]]:
    """Start `node emulator/start.mjs` on free loopback ports, exactly as the local stack does (stdin kept
    an open pipe, so the emulator exits if this process dies); stop it on exit, also on failure."""
    with tempfile.TemporaryDirectory(prefix="mailer-emulator-") as folder:
        try:
            managed, address = start_emulator(Path(folder) / "emulator.log")
        except StartError as error:
            pytest.fail(str(error), pytrace=False)
        try:
            yield managed.process, FirestoreEmulator(host=address.host, admin_url=address.admin_url)
        finally:
            managed.stop()


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[FirestoreEmulator]:
    previous_host = os.environ.get(EMULATOR_HOST_VAR)
    with launched_emulator() as (_, emulator):
        os.environ[EMULATOR_HOST_VAR] = emulator.host
        try:
            yield emulator
        finally:
            if previous_host is None:
                os.environ.pop(EMULATOR_HOST_VAR, None)
            else:
                os.environ[EMULATOR_HOST_VAR] = previous_host


@pytest.fixture
def firestore_client(firestore_emulator: FirestoreEmulator) -> Iterator[firestore.Client]:
    client = firestore_emulator.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def firestore_faults(firestore_emulator: FirestoreEmulator) -> Iterator[FirestoreEmulator]:
    # Faults are global to the shared emulator: one left armed by a failed test would break the next.
    firestore_emulator.clear_faults()
    try:
        yield firestore_emulator
    finally:
        firestore_emulator.clear_faults()


@pytest.fixture
def unique_collection() -> str:
    return f"mail_{uuid.uuid4().hex[:12]}"
