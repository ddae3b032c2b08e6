"""Fixtures for the local stack's tests: the inbox (SMTP + web page) on free loopback ports, a real SMTP
client for it, headless Chromium to look at its pages, and a server that records remote loads."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from local.inbox import SmtpInbox
from local.inbox_web import InboxWeb
from local.tls import LocalTls, create_local_tls

from .dom import Element, parse_dom

INBOX_USER, INBOX_PASSWORD = "mailer", "inbox-Pa55-not-in-logs"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_TIMEOUT_SECONDS = 90


@dataclass
class InboxUnderTest:
    smtp: SmtpInbox
    web: InboxWeb
    tls: LocalTls
    folder: Path

    def send(self, message: EmailMessage, to_addrs: list[str] | None = None, *, user: str = INBOX_USER,
             password: str = INBOX_PASSWORD) -> dict:
        """Deliver as a careful client does: STARTTLS with verification, then AUTH."""
        with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=10) as client:
            client.starttls(context=self.tls.client_context())
            client.login(user, password)
            return client.send_message(message, to_addrs=to_addrs)


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[InboxUnderTest]:
    tls = create_local_tls(tmp_path / "tls")
    folder = tmp_path / "inbox"
    with SmtpInbox(folder, tls, INBOX_USER, INBOX_PASSWORD) as smtp, InboxWeb(folder) as web:
        yield InboxUnderTest(smtp, web, tls, folder)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium is not installed; run `apt-get install -y chromium` (.ci/run does this)", pytrace=False)


@pytest.fixture
def browser(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Element]:
    """browser(url) -> the DOM headless Chromium has once the page (frames included) has loaded."""

    def load(url: str) -> Element:
        profile = tmp_path_factory.mktemp("chromium-profile")
        completed = subprocess.run(
            [chromium_path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_SECONDS,
        )
        assert completed.returncode == 0, f"chromium exited with {completed.returncode}: {completed.stderr[-500:]}"
        assert "<html" in completed.stdout, f"chromium printed no DOM for {url}: {completed.stderr[-500:]}"
        return parse_dom(completed.stdout)

    return load


@dataclass
class RecordingServer:
    """An HTTP server standing in for 'the internet': every request it gets is a remote load."""

    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def remote_server() -> Iterator[RecordingServer]:
    recorder = RecordingServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            recorder.requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/gif")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
