"""The local SMTP inbox: aiosmtpd on 127.0.0.1 that insists on STARTTLS and AUTH, as a real provider does,
and keeps every message it accepts as an .eml file.

Each file is the message as received, preceded by the headers a delivering MTA adds: Return-Path (the
envelope sender) and one Delivered-To per envelope recipient, so Bcc recipients stay visible.

One scripted fault, so the demo can show a retry: when any envelope recipient's local part ends with
`+tempfail` (e.g. `ada+tempfail@example.com`), the first copy of a message is refused after DATA with

    451 4.3.0 Temporary local failure (demo: fails once)

and the next copy with the same Message-ID header is accepted (and stored) as usual. Copies are told
apart by Message-ID only, which the mailer keeps the same on every attempt of one delivery; a message
without a Message-ID is never refused. The inbox remembers the IDs it refused until it stops.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import hmac
import itertools
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from local.errors import StartError
from local.mailbox import STORED_STAMP
from local.tls import LocalTls

LISTEN_HOST = "127.0.0.1"
SERVER_NAME = "inbox.mailer.local"  # spares aiosmtpd a getfqdn() DNS lookup
MAX_MESSAGE_BYTES = 80 * 2**20  # above the largest mailer:maxMessageBytes (64 MiB) plus encoding
START_TIMEOUT_SECONDS = 10.0
TEMPFAIL_SUFFIX = "+tempfail"
TEMPFAIL_REPLY = "451 4.3.0 Temporary local failure (demo: fails once)"


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    # aiosmtpd 1.4 warns about its own legacy attribute on every successful AUTH; it says nothing to us.
    return "login_data is deprecated" not in record.getMessage()


class SmtpInbox:
    """Accepts mail for any recipient from one user/password, over STARTTLS only; stores .eml files in
    `folder`. Use as a context manager or call start()/stop()."""

    def __init__(self, folder: Path, tls: LocalTls, user: str, password: str, port: int = 0) -> None:
        self.folder = folder
        self.host = LISTEN_HOST
        self.port = port
        self._tls = tls
        self._user = user
        self._password = password
        self._sequence = itertools.count(1)
        self.tempfailed: set[str] = set()  # Message-IDs refused once by the +tempfail rule
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="smtp-inbox", daemon=True)

    def __enter__(self) -> SmtpInbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        aiosmtpd_log = logging.getLogger("mail.log")
        if _not_login_data_notice not in aiosmtpd_log.filters:
            aiosmtpd_log.addFilter(_not_login_data_notice)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS) or self._error is not None:
            self.stop()
            error = self._error
            # asyncio rewords bind errors; the errno says it plainly.
            reason = os.strerror(error.errno) if isinstance(error, OSError) and error.errno else str(error or "no answer")
            raise StartError(f"SMTP inbox: cannot listen on {self.host}:{self.port} ({reason})")

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(loop.create_server(self._session, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as error:
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            # Open sessions (the function pools its connections) end with the loop.
            sessions = asyncio.all_tasks(loop)
            for task in sessions:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*sessions, return_exceptions=True))
            loop.close()

    def _session(self) -> SMTP:
        return SMTP(
            self,
            hostname=SERVER_NAME,
            tls_context=self._tls.server_context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=self._authenticate,
            enable_SMTPUTF8=True,
            data_size_limit=MAX_MESSAGE_BYTES,
            loop=self._loop,
        )

    # -- aiosmtpd hooks ----------------------------------------------------------------------------

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user_ok = hmac.compare_digest(auth_data.login, self._user.encode())
        password_ok = hmac.compare_digest(auth_data.password, self._password.encode())
        if user_ok and password_ok:
            return AuthResult(success=True, auth_data=self._user)
        # handled=False makes aiosmtpd answer 535 itself; True would leave the client waiting.
        return AuthResult(success=False, handled=False)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        # Providers advertise PIPELINING (RFC 2920) and the function uses it: so does the inbox, so local
        # runs take the same path. aiosmtpd reads pipelined commands in order without advertising it.
        session.host_name = hostname  # the 5-argument hook must do this itself
        return [responses[0], "250-PIPELINING", *responses[1:]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if self._fails_once(envelope.rcpt_tos, content):
            return TEMPFAIL_REPLY
        trace = [f"Return-Path: <{envelope.mail_from or ''}>"]
        trace += [f"Delivered-To: {recipient}" for recipient in envelope.rcpt_tos]
        message_id = self._store("\r\n".join(trace).encode() + b"\r\n" + content)
        return f"250 2.0.0 Ok: stored as {message_id}"

    def _fails_once(self, recipients: list[str], content: bytes) -> bool:
        """The +tempfail rule: refuse the first copy of a Message-ID sent to a `...+tempfail@` recipient."""
        if not any(recipient.rsplit("@", 1)[0].lower().endswith(TEMPFAIL_SUFFIX) for recipient in recipients):
            return False
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)
        message_id = str(headers.get("Message-ID") or "").strip()
        if not message_id or message_id in self.tempfailed:
            return False
        self.tempfailed.add(message_id)
        return True

    def _store(self, data: bytes) -> str:
        # Names sort in arrival order and are safe in URLs (see local.mailbox.MESSAGE_ID).
        stamp = datetime.now(timezone.utc).strftime(STORED_STAMP)
        message_id = f"{stamp}-{next(self._sequence):04d}"
        partial = self.folder / f".{message_id}.part"
        partial.write_bytes(data)
        os.replace(partial, self.folder / f"{message_id}.eml")  # readers never see half a file
        return message_id
