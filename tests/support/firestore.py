"""Firestore emulator fixtures: emulator/start.mjs, a real gRPC Firestore on 127.0.0.1.

`firestore_emulator` (session) starts it once and points FIRESTORE_EMULATOR_HOST at it;
`firestore_client` gives a test a client; `unique_collection` keeps tests' data apart
(the emulator is shared and never wiped).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from google.cloud import firestore

REPO_ROOT = Path(__file__).resolve().parents[2]
EMULATOR_DIR = REPO_ROOT / "emulator"
PROJECT = "demo-mailer"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
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


@dataclass
class FirestoreEmulator:
    host: str
    admin_url: str
    project: str = PROJECT

    def _admin(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.admin_url}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def stats(self) -> dict[str, Any]:
        """Billed operations since the last reset: commits, writes, reads and per-document counts."""
        return self._admin("GET", "/stats")

    def reset_stats(self) -> None:
        self._admin("POST", "/reset")

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


def _check_installed() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the Firestore emulator needs Node.js 20+", pytrace=False)
    if not (EMULATOR_DIR / "node_modules" / "@firestore-emulator" / "server").is_dir():
        pytest.fail("emulator/node_modules is missing; run `make install` first", pytrace=False)
    return node


def _read_stdout_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Hand stdout lines to the waiting fixture; keep draining so the pipe never fills."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait_for_ready(process: subprocess.Popen[str], lines: queue.Queue[str | None], stderr: IO[str]) -> str:
    def failure(reason: str) -> None:
        stderr.seek(0)
        output = " | ".join(stderr.read().strip().splitlines()[-20:]) or "(no stderr)"
        pytest.fail(f"Firestore emulator {reason}; its stderr: {output}", pytrace=False)

    try:
        line = lines.get(timeout=READY_TIMEOUT_S)
    except queue.Empty:
        failure(f"printed no READY line within {READY_TIMEOUT_S:.0f} s")
    if line is None:
        failure(f"exited with code {process.wait()} before it was ready")
    if not line.startswith("READY "):
        failure(f"printed {line.strip()!r} instead of a READY line")
    return line.strip()


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()  # the emulator exits on EOF; terminate() is the fallback
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def launched_emulator() -> Iterator[tuple[subprocess.Popen[str], FirestoreEmulator]]:
    """Start `node emulator/start.mjs` on free loopback ports; stop it on exit, also on failure."""
    node = _check_installed()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
        # stdin stays an open pipe: if this test process dies, the emulator sees EOF and exits.
        process = subprocess.Popen(
            [node, str(EMULATOR_DIR / "start.mjs"), "--port", "0", "--admin-port", "0"],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=_read_stdout_lines, args=(process.stdout, lines), daemon=True).start()
            ready = _wait_for_ready(process, lines, stderr)
            # "READY 127.0.0.1:<grpc port> admin=127.0.0.1:<admin port>"
            _, host, admin = ready.split(" ")
            yield process, FirestoreEmulator(host=host, admin_url=f"http://{admin.removeprefix('admin=')}")
        finally:
            _stop(process)


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
def unique_collection() -> str:
    return f"mail_{uuid.uuid4().hex[:12]}"
