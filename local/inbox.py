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

Injected faults (`make demo ARGS="--inbox-fault SPEC"`, or at run time `make send ARGS="--inbox-fault
SPEC"`), so an app's handling of a misbehaving provider can be watched end to end; they last until
changed:

    refuse               stop listening (connection refused); open connections are closed
    STAGE:CODE           answer CODE (400-599) at STAGE: greeting, ehlo, mail, rcpt or data
                         (greeting: the reply to a new connection, which is then closed)
    stall:STAGE:SECONDS  wait SECONDS before answering at STAGE, then go on as usual
    none                 no fault (clears the others)

Several faults may be set at once (one per stage). With a `fault_file`, the inbox reads its faults from
that file (one SPEC a line; a missing file means none) and re-reads it when it changes.

Delivery status notifications (RFC 3461): the inbox advertises DSN and takes RET and ENVID on MAIL FROM,
NOTIFY and ORCPT on RCPT TO, refusing a malformed or repeated one with 501 5.5.4 (as Postfix does), so
documents with `dsn` can be tried locally. It sends no reports; a stored message records the parameters
it was sent with, as written, after its trace lines:

    X-Inbox-DSN: MAIL RET=HDRS ENVID=order-123
    X-Inbox-DSN: RCPT <ada@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ada@example.com
"""

from __future__ import annotations

import asyncio
import collections
import email.parser
import email.policy
import hmac
import itertools
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from local.errors import StartError
from local.mailbox import DSN_TRACE_HEADER, STORED_STAMP
from local.oauth import read_xoauth2
from local.tls import LocalTls

log = logging.getLogger("local.inbox")

LISTEN_HOST = "127.0.0.1"
SERVER_NAME = "inbox.mailer.local"  # spares aiosmtpd a getfqdn() DNS lookup
MAX_MESSAGE_BYTES = 80 * 2**20  # above the largest mailer:maxMessageBytes (64 MiB) plus encoding
START_TIMEOUT_SECONDS = 10.0
TEMPFAIL_SUFFIX = "+tempfail"
TEMPFAIL_REPLY = "451 4.3.0 Temporary local failure (demo: fails once)"
FAULT_STAGES = ("greeting", "ehlo", "mail", "rcpt", "data")
FAULT_FILE = "inbox-fault"  # in the stack's state folder
FAULT_POLL_SECONDS = 0.2
MAX_STALL_SECONDS = 3600.0
FAULT_HELP = (
    "refuse | STAGE:CODE | stall:STAGE:SECONDS | none, STAGE one of greeting, ehlo, mail, rcpt, data; "
    "e.g. rcpt:451, data:554, stall:data:40"
)


@dataclass(frozen=True)
class InboxFault:
    """One injected fault: `refuse`, or at `stage` a reply `code` or a stall of `stall_seconds`."""

    stage: str  # "refuse" or one of FAULT_STAGES
    code: int | None = None
    stall_seconds: float | None = None

    def __str__(self) -> str:
        if self.stage == "refuse":
            return "refuse"
        if self.stall_seconds is not None:
            return f"stall:{self.stage}:{self.stall_seconds:g}"
        return f"{self.stage}:{self.code}"

    @property
    def reply(self) -> str:
        enhanced = "4.3.0" if self.code is not None and self.code < 500 else "5.3.0"
        return f"{self.code} {enhanced} Local fault injected at {self.stage} (inbox fault {self})"


def parse_faults(text: str) -> list[InboxFault]:
    """`SPEC`, or several separated by commas; `none` gives []. ValueError names what is wrong."""
    faults: list[InboxFault] = []
    for spec in (part.strip() for part in text.split(",")):
        if spec.lower() in ("none", ""):
            continue
        faults.append(parse_fault(spec))
    stages = [fault.stage for fault in faults]
    if len(set(stages)) != len(stages):
        raise ValueError(f"{text!r}: one fault per stage")
    return faults


def parse_fault(spec: str) -> InboxFault:
    words = spec.strip().lower().split(":")
    if words == ["refuse"]:
        return InboxFault("refuse")
    if len(words) == 3 and words[0] == "stall" and words[1] in FAULT_STAGES:
        try:
            seconds = float(words[2])
        except ValueError:
            raise ValueError(f"{spec!r}: {words[2]!r} is not a number of seconds") from None
        if not 0 < seconds <= MAX_STALL_SECONDS:
            raise ValueError(f"{spec!r}: stall 0 to {MAX_STALL_SECONDS:g} seconds")
        return InboxFault(words[1], stall_seconds=seconds)
    if len(words) == 2 and words[0] in FAULT_STAGES:
        if not (words[1].isdigit() and 400 <= int(words[1]) <= 599):
            raise ValueError(f"{spec!r}: the code must be 400 to 599")
        return InboxFault(words[0], code=int(words[1]))
    raise ValueError(f"{spec!r} is not a fault; give {FAULT_HELP}")


def write_fault_file(path: Path, faults: Sequence[InboxFault]) -> None:
    """What the inbox polls: one SPEC a line (an empty file: no fault)."""
    partial = path.with_name(f".{path.name}.part")
    partial.write_text("".join(f"{fault}\n" for fault in faults))
    os.replace(partial, path)


DSN_MAIL_PARAMETERS = ("RET", "ENVID")
DSN_RCPT_PARAMETERS = ("NOTIFY", "ORCPT")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+")  # RFC 3461 4: xtext
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")  # an atom (RFC 3461 4.2)
MAX_ENVID_CHARS, MAX_ORCPT_CHARS = 100, 500  # RFC 3461 4.4, 4.2


def dsn_parameter_problem(parameters: Sequence[str]) -> str | None:
    """Why DSN parameters (`KEY=value` as the client wrote them) are malformed or repeated, or None."""
    seen: set[str] = set()
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        key = key.upper()
        if key in seen:
            return f"{key} given twice"
        seen.add(key)
        if key == "RET":
            ok = value.upper() in ("FULL", "HDRS")
        elif key == "ENVID":
            ok = bool(_XTEXT.fullmatch(value)) and len(value) <= MAX_ENVID_CHARS
        elif key == "NOTIFY":
            items = value.upper().split(",")
            ok = (items == ["NEVER"] or (set(items) <= {"SUCCESS", "FAILURE", "DELAY"} and len(set(items)) == len(items)))
        else:  # ORCPT: addr-type ";" xtext
            addr_type, semicolon, address = value.partition(";")
            ok = (bool(semicolon) and bool(_ADDR_TYPE.fullmatch(addr_type)) and bool(_XTEXT.fullmatch(address))
                  and len(value) <= MAX_ORCPT_CHARS)
        if not ok:
            return f"Bad {key} parameter syntax"
    return None


class _FaultySMTP(SMTP):
    """aiosmtpd's SMTP with the greeting fault (a stall before the 220, or another reply and a close) and
    DSN parameters: aiosmtpd refuses every MAIL/RCPT parameter it does not know (555) before it calls the
    handler, so the DSN ones are taken out of the command here, as written, and the handler checks them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # aiosmtpd keeps these limits in one dict shared by every instance; RFC 3461 5 lengthens MAIL by
        # ENVID and RET, RCPT by NOTIFY and ORCPT.
        limit = SMTP.command_size_limit
        self.command_size_limits = collections.defaultdict(
            lambda: limit, {"MAIL": limit + 110, "RCPT": limit + 530})
        self.dsn_parameters: list[str] = []  # of the MAIL or RCPT command being handled

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802
        await super().smtp_MAIL(self._take_dsn(arg, "FROM:", DSN_MAIL_PARAMETERS))

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802
        await super().smtp_RCPT(self._take_dsn(arg, "TO:", DSN_RCPT_PARAMETERS))

    def _take_dsn(self, arg: str | None, keyword: str, names: tuple[str, ...]) -> str | None:
        """The command's argument without its DSN parameters, which go to self.dsn_parameters."""
        self.dsn_parameters = []
        if arg is None or self.session is None or not self.session.extended_smtp:
            return arg
        stripped = self._strip_command_keyword(keyword, arg)
        if stripped is None:
            return arg
        address, params = self._getaddr(stripped)
        if not address or not params or not stripped.endswith(params):
            return arg
        kept = []
        for token in params.split():
            (self.dsn_parameters if token.partition("=")[0].upper() in names else kept).append(token)
        return " ".join([f"{keyword}{stripped[: len(stripped) - len(params)].rstrip()}", *kept])

    async def _handle_client(self) -> None:
        fault = self.event_handler.fault_at("greeting")
        if fault is not None and fault.stall_seconds is not None:
            await asyncio.sleep(fault.stall_seconds)
        elif fault is not None:
            await self.push(fault.reply)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    # aiosmtpd 1.4 warns about its own legacy attribute on every successful AUTH; it says nothing to us.
    return "login_data is deprecated" not in record.getMessage()


class SmtpInbox:
    """Accepts mail for any recipient from one user/password, over STARTTLS only; stores .eml files in
    `folder`. Use as a context manager or call start()/stop()."""

    def __init__(self, folder: Path, tls: LocalTls, user: str, password: str, port: int = 0, *,
                 faults: Sequence[InboxFault] = (), fault_file: Path | None = None,
                 token_validator: Callable[[str, str], bool] | None = None) -> None:
        """token_validator(token, user): offer AUTH XOAUTH2 only (`make demo ARGS=--xoauth2`), accepting
        the bearer tokens it approves; without it, PLAIN/LOGIN with `user` and `password`."""
        self.folder = folder
        self._token_validator = token_validator
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
        self.faults: tuple[InboxFault, ...] = tuple(faults)
        self._fault_file = fault_file
        self._fault_file_seen: tuple[int, int] | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._listening = False

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

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def set_faults(self, faults: Sequence[InboxFault]) -> None:
        """Replace the injected faults (from any thread); they apply to the next command answered."""
        self._loop.call_soon_threadsafe(self._apply_faults, tuple(faults))

    def fault_at(self, stage: str) -> InboxFault | None:
        return next((fault for fault in self.faults if fault.stage == stage), None)

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
            self._listening = True
        except OSError as error:
            self._error = error
            self._ready.set()
            return
        self._apply_faults(self.faults)
        if self._fault_file is not None:
            self._poll_fault_file()
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

    def _apply_faults(self, faults: tuple[InboxFault, ...]) -> None:
        changed = faults != self.faults
        self.faults = faults
        refuse = self.fault_at("refuse") is not None
        if refuse and self._listening and self._server is not None:
            self._server.close()  # new connections are refused
            self._listening = False
            for session in list(self._sessions):  # pooled ones too: as a provider going down
                if session.transport is not None:
                    session.transport.close()
        elif not refuse and not self._listening:
            self._loop.create_task(self._listen_again())
        if faults or changed:
            log.warning("inbox faults now: %s", ", ".join(map(str, faults)) or "none")

    async def _listen_again(self) -> None:
        try:
            self._server = await self._loop.create_server(self._session, self.host, self.port)
            self._listening = True
        except OSError as error:
            log.error("the inbox cannot listen on %s:%s again (%s)", self.host, self.port, error)

    def _poll_fault_file(self) -> None:
        assert self._fault_file is not None
        try:
            stat = self._fault_file.stat()
            seen: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._fault_file_seen:
            self._fault_file_seen = seen
            try:
                text = self._fault_file.read_text() if seen else ""
                faults = parse_faults(",".join(text.split()))
            except (OSError, ValueError) as error:
                log.error("ignoring %s: %s", self._fault_file, error)
            else:
                if tuple(faults) != self.faults:
                    self._apply_faults(tuple(faults))
        self._loop.call_later(FAULT_POLL_SECONDS, self._poll_fault_file)

    def _session(self) -> SMTP:
        session = self._new_session()
        self._sessions.add(session)
        return session

    def _new_session(self) -> SMTP:
        return _FaultySMTP(
            self,
            hostname=SERVER_NAME,
            tls_context=self._tls.server_context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=self._authenticate,
            # XOAUTH2 mode (issue 11): the token validator replaces the password; else no XOAUTH2.
            auth_exclude_mechanism=["PLAIN", "LOGIN"] if self._token_validator else ["XOAUTH2"],
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

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """SASL XOAUTH2 (aiosmtpd takes auth_* hooks from the handler): `user=<u>^Aauth=Bearer <t>^A^A`,
        base64. A token the validator refuses gets the 334 error challenge (base64 JSON, as Gmail sends)
        and, after the client's empty line, 535."""
        if self._token_validator is None:
            return AuthResult(success=False, handled=False)
        response = await read_xoauth2(server, args)
        if response is None:
            return AuthResult(success=False, handled=True)
        user, token = response
        if token and self._token_validator(token, user):
            return AuthResult(success=True, auth_data=user)
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
        if await server.challenge_auth(error) is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message="535 5.7.8 Username and Password not accepted")

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        # Providers advertise PIPELINING (RFC 2920) and the function uses it: so does the inbox, so local
        # runs take the same path. aiosmtpd reads pipelined commands in order without advertising it.
        if (reply := await self._fault("ehlo")) is not None:
            return [reply]
        session.host_name = hostname  # the 5-argument hook must do this itself
        return [responses[0], "250-PIPELINING", "250-DSN", *responses[1:]]

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        if (reply := await self._fault("ehlo")) is not None:
            return reply
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if (reply := await self._fault("mail")) is not None:
            return reply
        dsn = list(getattr(server, "dsn_parameters", ()))
        if (problem := dsn_parameter_problem(dsn)) is not None:
            return f"501 5.5.4 {problem}"
        envelope.mail_from = address
        envelope.mail_options.extend([*options, *dsn])
        if dsn:
            _dsn_trace(envelope).append(" ".join(["MAIL", *dsn]))
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if (reply := await self._fault("rcpt")) is not None:
            return reply
        dsn = list(getattr(server, "dsn_parameters", ()))
        if (problem := dsn_parameter_problem(dsn)) is not None:
            return f"501 5.5.4 {problem}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend([*options, *dsn])
        if dsn:
            _dsn_trace(envelope).append(" ".join(["RCPT", f"<{address}>", *dsn]))
        return "250 OK"

    async def _fault(self, stage: str) -> str | None:
        """The injected reply at `stage`, if any; a stall waits here first."""
        fault = self.fault_at(stage)
        if fault is None:
            return None
        if fault.stall_seconds is not None:
            await asyncio.sleep(fault.stall_seconds)
            return None
        return fault.reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if (reply := await self._fault("data")) is not None:
            return reply
        content = envelope.original_content or b""
        if self._fails_once(envelope.rcpt_tos, content):
            return TEMPFAIL_REPLY
        trace = [f"Return-Path: <{envelope.mail_from or ''}>"]
        trace += [f"Delivered-To: {recipient}" for recipient in envelope.rcpt_tos]
        trace += [f"{DSN_TRACE_HEADER}: {line}" for line in _dsn_trace(envelope)]
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


def _dsn_trace(envelope: Envelope) -> list[str]:
    """The DSN parameters of this transaction's MAIL and RCPTs, one line each (kept on the envelope, which
    aiosmtpd replaces after DATA and RSET)."""
    if not hasattr(envelope, "dsn_trace"):
        envelope.dsn_trace = []  # type: ignore[attr-defined]
    return envelope.dsn_trace  # type: ignore[attr-defined]
