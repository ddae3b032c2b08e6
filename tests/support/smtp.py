"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1 (a free port each), real TLS, scripted faults.

Fixtures (registered as a plugin by tests/conftest.py):

    smtp_ca        session  trustme.CA that signs every test server's certificate
    smtp_ca_file   session  path of that CA's PEM file (what tlsCaFile= points at)
    smtp_server    factory  smtp_server(tls=..., auth=..., ...) -> SmtpTestServer; every server it
                            started is stopped at the end of the test, also when the test fails
    fault_proxy    factory  fault_proxy(server) -> FaultProxy in front of it (tests/support/faultproxy.py)

    server = smtp_server(tls="starttls", auth=True, users={"user": "pass"},
                         behaviour=Behaviour(rcpt_replies={"gone@example.com": "550 5.1.1 No such user"}))
    pool = SmtpPool(parse_smtp_uri(server.uri("user", "pass", maxConnections=2)))
    ...
    server.messages[0].message["Subject"], server.connections, server.auth_attempts

The certificate names "localhost" and 127.0.0.1; servers listen on 127.0.0.1 only. aiosmtpd traps
handled here: a failed AuthResult sets handled=False (else the client hangs), AUTH over implicit TLS
needs auth_require_tls=False, and the 5-argument handle_EHLO sets session.host_name itself.

Scripted faults for a fault suite (see Behaviour): a 421 greeting, "too many recipients" after N
RCPTs, AUTH 454, a sequence of final replies to DATA counted across sessions (451 once, then normal),
hanging up after the whole message arrived without replying (the message is recorded: the server
has it, the client cannot know), a stall at any step, a greeting held until the test releases it
(Behaviour.greeting_gate) and a failed STARTTLS handshake. Faults a
server cannot play (a reset connection, a cut between the client's final "." and the reply, latency)
are in tests/support/faultproxy.py.

Pipelining and round trips: smtp_server(pipelining=True) advertises PIPELINING (RFC 2920; aiosmtpd
reads pipelined input correctly but never says so). Every server counts its clients' round trips:
the times a client sent something after it had waited for a reply (server.round_trips in total,
server.session_round_trips per session). They are counted where the client waits, at the socket
an smtplib client holds: a write (send, sendall, plain or TLS) after a read on it, whatever the client
called (getreply or its file, send or the socket itself), for every smtplib client in this process
that is connected straight to a test server (the transport, ops/check.py; not through a FaultProxy),
before the bytes go out, so the count is complete before the server can answer them. (A TLS
handshake's own round trips are not counted.) On a warm connection a lockstep client costs
4 per one-recipient message (MAIL, RCPT, DATA, data), a pipelining client 2 (envelope, data) and a
client that chains the next envelope after its data 1; the greeting is not one (the client sent
nothing before it), EHLO is. Counting what the server reads instead is not load-proof: TCP may
deliver one client write in several reads (a write larger than a TLS record or a segment, a client
thread descheduled between the records it writes), and a reply the server sent between two reads
of one write looked like a round trip the client never made.
Behaviour.reply_fragment splits each reply the server sends into packets of that many bytes.

Line limits: aiosmtpd refuses a command line over 512 octets ("500 Command line too long") and reads
no line over 1,001. smtp_server(line_limit=12288) reads lines of up to that many octets (a SASL
response line: RFC 4954 names 12,288 octets as enough for deployed mechanisms) and
command_limits={"AUTH": 12288} lets that command be as long (an AUTH line with its initial response).
"""

from __future__ import annotations

import asyncio
import collections
import email
import email.message
import email.policy
import secrets
import smtplib
import socket
import ssl
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# The fault proxy's fixture (fault_proxy) comes wherever these servers do.
pytest_plugins = ["tests.support.faultproxy"]

LISTEN_HOST = "127.0.0.1"
CERT_NAMES = ("localhost", "127.0.0.1")
TLS_MODES = ("starttls", "implicit", "none")
SCRIPTABLE_COMMANDS = ("greeting", "EHLO", "MAIL", "RCPT", "DATA")
# Where Behaviour.stall_at can stop answering: before the reply to that command ("DATA" is the 354
# go-ahead) or, for "end of DATA", after the whole message arrived and was recorded.
STALL_POINTS = ("greeting", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "end of DATA")
STARTTLS_FAULTS = ("hang up", "alert")
# In Behaviour.data_reply_sequence: receive the message, record it, then close without replying.
HANG_UP = "hang up"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
GATE_SECONDS = 30.0  # the longest Behaviour.greeting_gate holds a greeting
# A TLS record carrying a fatal handshake_failure alert (RFC 8446 6): what a server that cannot
# agree on TLS parameters sends instead of its ServerHello.
_TLS_HANDSHAKE_FAILURE_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])


@dataclass(frozen=True)
class Behaviour:
    """How a test server misbehaves. The default is a well-behaved server."""

    # RCPT: reply for specific addresses (e.g. "550 5.1.1 No such user", "451 4.2.0 Greylisted"),
    # and for every other address (None = accept).
    rcpt_replies: Mapping[str, str] = field(default_factory=dict)
    rcpt_reply_default: str | None = None
    # Final reply to DATA instead of "250 2.0.0 Ok: queued as <id>" (e.g. "554 5.7.1 Spam").
    data_reply: str | None = None
    # At this command ("MAIL", "RCPT" or "DATA" = after the message), reply 421 and hang up.
    close_with_421_at: str | None = None
    # Receive the whole message, then close the connection without replying; the message is not
    # recorded (drop_after_data_received_times records it: the server kept it).
    drop_during_data: bool = False
    # Delay the reply at this point ("greeting", "EHLO", "MAIL", "RCPT", "DATA" = final reply).
    slow_reply_at: str | None = None
    slow_reply_seconds: float = 2.0
    # Hang up sessions silent for this many seconds (aiosmtpd's own idle timer).
    idle_timeout: float | None = None
    # Answer MAIL with 421 and hang up when a session starts its second transaction, as a
    # server does that drops an idle client just as the client reuses it.
    close_reused_session_at_mail: bool = False

    # -- faults for the fault suite --------------------------------------------------------------
    # Sent instead of the 220 greeting (e.g. "421 4.3.2 Try later"); unless it is 2xx the server
    # hangs up right after it.
    greeting_reply: str | None = None
    # Accept at most this many recipients per transaction; answer further RCPTs with
    # too_many_recipients_reply (Postfix: smtpd_recipient_limit = 1000, "452 4.5.3 ...").
    max_recipients: int | None = None
    too_many_recipients_reply: str = TOO_MANY_RECIPIENTS
    # Reply to every AUTH with this once the credentials are in (e.g. "454 4.7.0 Temporary
    # authentication failure"); the attempt is recorded as failed.
    auth_reply: str | None = None
    # Replies to MAIL and final replies to DATA, by order of arrival at this server across all
    # sessions (server.mail_commands / server.data_received count them from 1): entry n-1 answers
    # the n-th; None or running past the end means the normal reply (or data_reply). A DATA entry
    # may be HANG_UP: record the message as received, then close without replying.
    mail_reply_sequence: Sequence[str | None] = ()
    data_reply_sequence: Sequence[str | None] = ()
    # The first N messages get HANG_UP (as if data_reply_sequence began with N of them).
    drop_after_data_received_times: int = 0
    # Stop answering at this point (one of STALL_POINTS) for stall_seconds, then carry on if the
    # client is still there. Unlike slow_reply_at, "end of DATA" records the message first: a
    # real server has it queued while the client waits for the reply.
    stall_at: str | None = None
    stall_seconds: float = 5.0
    # Hold every greeting until the test sets this event (at most GATE_SECONDS): a client that
    # connected waits there, however long a loaded machine takes to queue other senders behind it.
    greeting_gate: threading.Event | None = None
    # STARTTLS is offered and answered "220 Ready", then the handshake fails: "hang up" closes the
    # connection after the ClientHello, "alert" answers it with a fatal handshake_failure alert.
    starttls_fault: str | None = None
    # Send every reply in packets of this many bytes (TCP_NODELAY, a short pause between), so a
    # client must reassemble a reply that arrives split across reads.
    reply_fragment: int | None = None

    def __post_init__(self) -> None:
        for name in ("close_with_421_at", "slow_reply_at"):
            value = getattr(self, name)
            if value is not None and value not in SCRIPTABLE_COMMANDS:
                raise ValueError(f"Behaviour.{name} must be one of {SCRIPTABLE_COMMANDS}, got {value!r}")
        if self.close_with_421_at == "greeting":
            raise ValueError("Behaviour.close_with_421_at does not support 'greeting'")
        if self.stall_at is not None and self.stall_at not in STALL_POINTS:
            raise ValueError(f"Behaviour.stall_at must be one of {STALL_POINTS}, got {self.stall_at!r}")
        if self.starttls_fault is not None and self.starttls_fault not in STARTTLS_FAULTS:
            raise ValueError(f"Behaviour.starttls_fault must be one of {STARTTLS_FAULTS}, got {self.starttls_fault!r}")
        if self.max_recipients is not None and self.max_recipients < 1:
            raise ValueError("Behaviour.max_recipients must be at least 1")
        for name in ("greeting_reply", "auth_reply", "too_many_recipients_reply"):
            value = getattr(self, name)
            if value is not None and not (value[:3].isdigit() and value[3:4] in ("", " ")):
                raise ValueError(f"Behaviour.{name} must be an SMTP reply like '421 4.3.2 Try later', got {value!r}")

    def data_reply_for(self, number: int) -> str | None:
        """The scripted final reply for the number-th message (1-based); None = the normal one."""
        if number <= self.drop_after_data_received_times:
            return HANG_UP
        if number <= len(self.data_reply_sequence) and self.data_reply_sequence[number - 1] is not None:
            return self.data_reply_sequence[number - 1]
        return self.data_reply

    def mail_reply_for(self, number: int) -> str | None:
        if number <= len(self.mail_reply_sequence):
            return self.mail_reply_sequence[number - 1]
        return None


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # the DATA as received, dot-unstuffed, CRLF line endings
    message: email.message.EmailMessage  # content parsed with email.policy.default
    smtputf8: bool  # MAIL FROM carried SMTPUTF8
    mail_options: list[str]  # MAIL FROM parameters, upper-cased (e.g. "BODY=8BITMIME")
    response: str | None  # the final reply this server sent for it; None: it never replied
    session: int  # which TCP session (1-based, in order of connection) carried it
    authenticated_as: str | None
    tls: bool  # the session was encrypted when the message arrived

    @property
    def message_id(self) -> str | None:
        """The Message-ID header as received (None when the message has none)."""
        value = self.message["Message-ID"]
        return None if value is None else str(value).strip()


@dataclass
class AuthAttempt:
    mechanism: str
    login: str
    success: bool  # (the password tried is deliberately not kept)


def build_uri(scheme: str, host: str, port: int, user: str | None = None, password: str | None = None,
              options: Mapping[str, Any] | None = None) -> str:
    """An SMTP_CONNECTION_URI for a test server. User and password are percent-encoded; options whose
    value is None are left out (so tlsCaFile=None drops the default CA); booleans become true/false."""
    userinfo = ""
    if user is not None:
        userinfo = quote(user, safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    shown = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (options or {}).items() if v is not None}
    query = urlencode(shown)
    return f"{scheme}://{userinfo}{host}:{port}" + (f"?{query}" if query else "")


class SmtpTestServer:
    """One running aiosmtpd server plus everything it observed. Lists are appended from the
    server's thread before it replies, so they are complete once the client has its reply.
    `behaviour` is read at every command, so a test may assign a new Behaviour between sends."""

    def __init__(
        self,
        *,
        tls: str,
        auth: bool,
        require_starttls: bool,
        users: Mapping[str, str],
        behaviour: Behaviour,
        smtputf8: bool,
        auth_mechanisms: tuple[str, ...],
        server_cert: trustme.LeafCert,
        ca_file: str,
        pipelining: bool = False,
        line_limit: int | None = None,
        command_limits: Mapping[str, int] | None = None,
    ) -> None:
        if tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {TLS_MODES}, got {tls!r}")
        self.host = LISTEN_HOST
        self.tls = tls
        self.ca_file = ca_file if tls != "none" else None
        self.users = dict(users)
        self.behaviour = behaviour
        self.queue_prefix = secrets.token_hex(3).upper()
        self.messages: list[ReceivedMessage] = []
        self.auth_attempts: list[AuthAttempt] = []
        self.ehlo_names: list[str] = []
        self.sni_names: list[str | None] = []  # server name the client sent per TLS handshake
        self.connections = 0  # TCP sessions opened by clients
        self.active_connections = 0
        self.max_active_connections = 0
        self.dropped_during_data = 0  # sessions hung up after the message arrived, without a reply
        self.mail_commands = 0  # MAIL FROM commands from clients, all sessions
        self.rcpt_commands = 0  # RCPT TO commands, all sessions
        self.data_received = 0  # messages whose data arrived completely, all sessions
        self.starttls_faults = 0  # STARTTLS handshakes failed on purpose
        self.pipelining = pipelining  # advertise PIPELINING in the EHLO reply
        self.line_limit = line_limit  # longest line read (None: aiosmtpd's 1,001)
        self.command_limits = dict(command_limits or {})  # per command (others: aiosmtpd's 512)
        self.round_trips = 0  # times a client sent after waiting for a reply (all sessions)
        self.session_round_trips: dict[int, int] = {}  # the same per session number
        self._sessions: list[_ScriptedSMTP] = []
        self._lost = threading.Condition()
        self._recording = False
        self._probe_seen = threading.Event()  # the controller's start-up probe has connected
        self._session_by_client: dict[tuple[str, int], int] = {}  # client address -> session number

        tls_context = None
        if tls != "none":
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_cert.configure_cert(tls_context)
            tls_context.sni_callback = self._record_sni

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LISTEN_HOST, 0))
        self.port: int = listener.getsockname()[1]
        self.auth_required = auth
        offered = auth_mechanisms if auth else ()
        excluded = [m for m in ("PLAIN", "LOGIN") if m not in offered]
        self._controller = _Controller(
            _Handler(self),
            listener,
            self,
            ssl_context=tls_context if tls == "implicit" else None,
            tls_context=tls_context if tls == "starttls" else None,
            require_starttls=tls == "starttls" and require_starttls,
            server_hostname="mail.test.localhost",  # spares aiosmtpd a getfqdn() DNS lookup
            # aiosmtpd warns when it must demand AUTH on a connection it did not upgrade itself
            # (implicit TLS, plaintext): there handle_MAIL demands it instead.
            auth_required=auth and tls == "starttls",
            auth_require_tls=tls == "starttls",
            authenticator=self._authenticate if auth else None,
            auth_exclude_mechanism=excluded,
            enable_SMTPUTF8=smtputf8,
            timeout=behaviour.idle_timeout or 300,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._controller.start()
        # The controller's own start-up probe is not a client: count only what comes after it. (Its
        # session may open after start() returned, when the probe gave up waiting for the greeting.)
        self._probe_seen.wait(timeout=10)
        self._recording = True
        _hook_smtp_clients()
        _servers_by_port[self.port] = self

    def stop(self) -> None:
        if _servers_by_port.get(self.port) is self:
            del _servers_by_port[self.port]
        if self._controller._thread is not None:
            # Sessions a client left open would keep asyncio's Server.wait_closed() (3.12+) from
            # returning, and the controller's stop() with it: hang them up first.
            self._hang_up_all(None)
            with self._lost:
                self._lost.wait_for(lambda: not self._sessions, timeout=5)
            self._controller.stop()
        self._controller._listener.close()

    # -- what tests use --------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def uri(self, user: str | None = None, password: str | None = None, **options: Any) -> str:
        """A matching smtp:// (STARTTLS/plain) or smtps:// URI; see build_uri."""
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        return build_uri(scheme, self.host, self.port, user, password, {"tlsCaFile": self.ca_file, **options})

    def drop_connections(self, reply: str | None = "421 4.4.2 Idle timeout exceeded, closing") -> None:
        """Hang up every open session now (optionally sending `reply` first), as a server does
        with idle clients; returns once the server has closed them."""
        self._hang_up_all(reply)
        if not self.wait_until_no_connections():
            raise RuntimeError("test SMTP server could not close its sessions")

    def wait_until_no_connections(self, timeout: float = 5.0) -> bool:
        """Wait until the server has seen every session end (a client's close reaches the server
        a moment after the client returns). True when none is open."""
        with self._lost:
            return self._lost.wait_for(lambda: self.active_connections == 0, timeout=timeout)

    def _hang_up_all(self, reply: str | None) -> None:
        with self._lost:
            victims = [s for s in self._sessions if s.transport is not None]
        for session in victims:
            future = asyncio.run_coroutine_threadsafe(session.hang_up(reply), self._controller.loop)
            future.result(timeout=5)

    # -- called from the server thread -----------------------------------------------------------

    def _record_sni(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        if self._recording:  # not the controller's start-up probe
            self.sni_names.append(server_name)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if self.behaviour.auth_reply is not None:
            self.auth_attempts.append(AuthAttempt(mechanism, login, False))
            return AuthResult(success=False, handled=False, message=self.behaviour.auth_reply)
        success = login in self.users and self.users[login] == password
        self.auth_attempts.append(AuthAttempt(mechanism, login, success))
        if success:
            return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)  # handled=False: aiosmtpd sends the 535

    def _session_opened(self, session: _ScriptedSMTP) -> bool:
        """Register an open session; True when it counts as a client's (not the start-up probe)."""
        with self._lost:
            self._sessions.append(session)
            if not self._recording:
                self._probe_seen.set()
                return False
            self.connections += 1
            self.active_connections += 1
            self.max_active_connections = max(self.max_active_connections, self.active_connections)
            session.number = self.connections
            peer = session.session.peer if session.session is not None else None
            if isinstance(peer, tuple):
                self._session_by_client[(peer[0], peer[1])] = session.number
        return True

    def _client_round_trip(self, client: tuple[str, int]) -> None:
        """A client at that address sends after waiting for a reply (called from the client's thread)."""
        with self._lost:
            number = self._session_by_client.get(client)
            if number is None:  # (not a counted session: the start-up probe)
                return
            self.round_trips += 1
            self.session_round_trips[number] = self.session_round_trips.get(number, 0) + 1

    def _session_closed(self, session: _ScriptedSMTP, counted: bool) -> None:
        with self._lost:
            if counted:
                self.active_connections -= 1
            self._sessions.remove(session)
            self._lost.notify_all()

    def _next_queue_id(self) -> str:
        return f"{self.queue_prefix}{len(self.messages) + 1:04d}"


class _ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP session, counted, with a greeting that can be slowed down."""

    def __init__(self, handler: _Handler, owner: SmtpTestServer, **kwargs: Any) -> None:
        if owner.line_limit is not None:
            self.line_length_limit = owner.line_limit  # (read by SMTP.__init__ for its StreamReader)
        super().__init__(handler, **kwargs)
        if owner.command_limits:
            # Per session: SMTP.command_size_limits is one dict shared by every session (and cleared by
            # every SMTP.__init__); EHLO adds to MAIL's limit in this one.
            self.command_size_limits = collections.defaultdict(
                lambda: SMTP.command_size_limit, owner.command_limits)
        self.owner = owner
        self.number = 0
        self.transactions = 0
        self._counted = False
        self._open = False
        self._raw_socket: Any = None
        self._greeted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # STARTTLS calls this again for the same session
        super().connection_made(transport)
        if first:
            self._open = True
            self._raw_socket = transport.get_extra_info("socket")  # kept for hang_up()
            self._counted = self.owner._session_opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if self._open:
            self._open = False
            self.owner._session_closed(self, self._counted)

    async def push(self, status: Any) -> None:
        fragment = self.owner.behaviour.reply_fragment
        if fragment and self._greeted and self.transport is not None and not self.transport.is_closing():
            await self._push_in_fragments(status, fragment)
            return
        if not self._greeted:
            self._greeted = True
            behaviour = self.owner.behaviour
            if self._counted and behaviour.slow_reply_at == "greeting":
                await asyncio.sleep(behaviour.slow_reply_seconds)
            if self._counted and behaviour.greeting_gate is not None:
                await asyncio.get_running_loop().run_in_executor(None, behaviour.greeting_gate.wait, GATE_SECONDS)
            if self._counted:
                await self.stall("greeting")
            if self._counted and behaviour.greeting_reply is not None:
                if behaviour.greeting_reply.startswith("2"):
                    status = behaviour.greeting_reply
                else:
                    await self.hang_up(behaviour.greeting_reply)
                    await asyncio.Event().wait()  # cancelled by connection_lost
        await super().push(status)

    async def _push_in_fragments(self, status: str, size: int) -> None:
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        data = (status + "\r\n").encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        for start in range(0, len(data), size):
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(data[start:start + size])
            await asyncio.sleep(0.002)

    async def stall(self, point: str) -> None:
        """Stop answering for Behaviour.stall_seconds when the script says so at this point."""
        behaviour = self.owner.behaviour
        if behaviour.stall_at == point:
            try:
                await asyncio.sleep(behaviour.stall_seconds)
            except asyncio.CancelledError:  # the client gave up; before the greeting's push
                if self.transport is not None:  # aiosmtpd would leave the connection half-open
                    self.transport.close()
                raise

    async def smtp_EHLO(self, arg: str) -> None:
        await self.stall("EHLO")
        await super().smtp_EHLO(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        await self.stall("AUTH")
        await super().smtp_AUTH(arg)

    async def smtp_DATA(self, arg: str) -> None:
        await self.stall("DATA")
        await super().smtp_DATA(arg)

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.stall("STARTTLS")
        fault = self.owner.behaviour.starttls_fault
        if fault is None or arg or not self.tls_context:
            await super().smtp_STARTTLS(arg)
            return
        await super().push("220 Ready to start TLS")
        try:  # wait for the ClientHello, so the client is inside its handshake when it fails
            await asyncio.wait_for(self._reader.read(4096), timeout=5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        self.owner.starttls_faults += 1
        if fault == "alert" and self.transport is not None:
            self.transport.write(_TLS_HANDSHAKE_FAILURE_ALERT)
        await self.hang_up(None)
        await asyncio.Event().wait()  # cancelled by connection_lost

    async def hang_up(self, reply: str | None) -> None:
        """Optionally reply, then drop the TCP connection at once, as a server process does when it
        exits (a TLS close would wait for the client's close_notify). The session's command loop
        is cancelled when the loss is noticed."""
        if self.transport is None:
            return
        if reply and not self.transport.is_closing():
            await super().push(reply)
        self.transport.close()
        if self._raw_socket is not None:
            try:
                self._raw_socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

    @property
    def encrypted(self) -> bool:
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None


class _Handler:
    """aiosmtpd handler hooks: record what arrives and play the server's Behaviour."""

    def __init__(self, owner: SmtpTestServer) -> None:
        self.owner = owner

    async def _maybe_slow(self, session: _ScriptedSMTP, point: str) -> None:
        behaviour = self.owner.behaviour
        if behaviour.slow_reply_at == point:
            await asyncio.sleep(behaviour.slow_reply_seconds)

    async def _hang_up_with_421(self, server: _ScriptedSMTP) -> None:
        await server.hang_up("421 4.3.2 Service shutting down, closing transmission channel")
        await asyncio.Event().wait()  # cancelled by connection_lost

    async def handle_EHLO(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must do this itself
        self.owner.ehlo_names.append(hostname)
        await self._maybe_slow(server, "EHLO")
        lines = [line for line in responses if line.strip() != "250-AUTH"]  # no mechanisms: no AUTH
        if self.owner.pipelining:
            lines.insert(1, "250-PIPELINING")
        return lines

    async def handle_MAIL(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        behaviour = self.owner.behaviour
        if self.owner.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        server.transactions += 1
        self.owner.mail_commands += 1
        if behaviour.close_with_421_at == "MAIL" or (
            behaviour.close_reused_session_at_mail and server.transactions > 1
        ):
            await self._hang_up_with_421(server)
        await self._maybe_slow(server, "MAIL")
        await server.stall("MAIL")
        scripted = behaviour.mail_reply_for(self.owner.mail_commands)
        if scripted is not None and not scripted.startswith("2"):
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        behaviour = self.owner.behaviour
        self.owner.rcpt_commands += 1
        if behaviour.close_with_421_at == "RCPT":
            await self._hang_up_with_421(server)
        await self._maybe_slow(server, "RCPT")
        await server.stall("RCPT")
        if behaviour.max_recipients is not None and len(envelope.rcpt_tos) >= behaviour.max_recipients:
            return behaviour.too_many_recipients_reply
        reply = behaviour.rcpt_replies.get(address, behaviour.rcpt_reply_default)
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return reply or "250 2.1.5 Ok"

    async def handle_DATA(self, server: _ScriptedSMTP, session: Session, envelope: Envelope) -> str:
        owner, behaviour = self.owner, self.owner.behaviour
        owner.data_received += 1
        if behaviour.drop_during_data:  # (not recorded: as if the server lost it)
            owner.dropped_during_data += 1
            await server.hang_up(None)
            await asyncio.Event().wait()  # cancelled by connection_lost
        if behaviour.close_with_421_at == "DATA":
            await self._hang_up_with_421(server)
        scripted = behaviour.data_reply_for(owner.data_received)
        if scripted == HANG_UP:  # the server has the message; the reply never leaves
            self._record(server, session, envelope, response=None)
            owner.dropped_during_data += 1
            await server.hang_up(None)
            await asyncio.Event().wait()  # cancelled by connection_lost
        if behaviour.stall_at == "end of DATA":
            held = None
            if scripted is None or scripted.startswith("2"):  # queued before the reply is held back
                response = scripted or f"250 2.0.0 Ok: queued as {owner._next_queue_id()}"
                held = self._record(server, session, envelope, response=None)
            await server.stall("end of DATA")
            if held is None:
                return scripted
            held.response = response  # the client waited long enough to hear it
            return response
        await self._maybe_slow(server, "DATA")  # (recorded after the delay, as it always was)
        if scripted is not None and not scripted.startswith("2"):
            return scripted  # refused: the server does not keep it
        response = scripted or f"250 2.0.0 Ok: queued as {owner._next_queue_id()}"
        self._record(server, session, envelope, response=response)
        return response

    def _record(
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope, response: str | None
    ) -> ReceivedMessage:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        auth_data = session.auth_data
        received = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            content=content,
            message=email.message_from_bytes(  # type: ignore[arg-type]
                content, policy=email.policy.default
            ),
            smtputf8=envelope.smtp_utf8,
            mail_options=list(envelope.mail_options),
            response=response,
            session=server.number,
            authenticated_as=auth_data if isinstance(auth_data, str) else None,
            tls=server.encrypted,
        )
        self.owner.messages.append(received)
        return received


# -- round trips, counted where the client waits ---------------------------------------------------

_servers_by_port: dict[int, SmtpTestServer] = {}  # running test servers by listening port
_hook_lock = threading.Lock()
_hooked = False


_smtp_sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # sockets smtplib clients talk through
_waited: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # ... that have read since their last write


def _hook_smtp_clients() -> None:
    """Once per process: every socket an smtplib client holds (smtplib.SMTP.sock, set at connect and
    STARTTLS) is watched at the socket itself, so a write that follows a read on it is a round trip,
    counted by the test server it is connected to, however the client reads (getreply, its file, recv)
    and writes (send, the socket's send or sendall). Other sockets pass straight through."""
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        _hooked = True

    def get_sock(self: smtplib.SMTP) -> Any:
        return self.__dict__.get("_test_sock")

    def set_sock(self: smtplib.SMTP, sock: Any) -> None:
        old = self.__dict__.get("_test_sock")
        if sock is not None:
            _smtp_sockets.add(sock)
            if old is not None and old in _waited:  # STARTTLS: the reply to it was waited for
                _waited.add(sock)
        self.__dict__["_test_sock"] = sock

    smtplib.SMTP.sock = property(get_sock, set_sock)  # type: ignore[assignment]

    def reading(method: Callable[..., Any]) -> Callable[..., Any]:
        def read(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
            if self in _smtp_sockets:
                _waited.add(self)
            return method(self, *args, **kwargs)
        return read

    def writing(method: Callable[..., Any]) -> Callable[..., Any]:
        def write(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
            if self in _waited:
                _waited.discard(self)
                _count_round_trip(self)
            return method(self, *args, **kwargs)
        return write

    for cls in (socket.socket, ssl.SSLSocket):
        for name in ("recv", "recv_into"):
            setattr(cls, name, reading(getattr(cls, name)))
        for name in ("send", "sendall"):
            setattr(cls, name, writing(getattr(cls, name)))


def _count_round_trip(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        server_address, client_address = sock.getpeername(), sock.getsockname()
    except OSError:
        return  # (not connected: the write raises as it always did)
    if not isinstance(server_address, tuple) or not isinstance(client_address, tuple):
        return  # (a Unix socket: LMTP)
    server = _servers_by_port.get(server_address[1])
    if server is not None and server_address[0] == server.host:
        server._client_round_trip((client_address[0], client_address[1]))


class _Controller(Controller):
    """aiosmtpd's Controller on a socket we already bound (free port, 127.0.0.1 only)."""

    def __init__(
        self, handler: _Handler, listener: socket.socket, owner: SmtpTestServer, **kwargs: Any
    ) -> None:
        super().__init__(handler, hostname=LISTEN_HOST, port=listener.getsockname()[1], **kwargs)
        self._listener = listener
        self._owner = owner

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._listener, ssl=self.ssl_context)

    def factory(self) -> SMTP:
        return _ScriptedSMTP(self.handler, self._owner, **self.SMTP_kwargs)


@pytest.fixture(scope="session")
def smtp_ca() -> trustme.CA:
    """The test CA: trusted only where a test hands out its PEM (smtp_ca_file)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def smtp_ca_file(smtp_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of the test CA certificate (PEM), for tlsCaFile= or SSL_CERT_FILE."""
    path: Path = tmp_path_factory.mktemp("smtp-ca") / "test-ca.pem"
    smtp_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def smtp_server_cert(smtp_ca: trustme.CA) -> trustme.LeafCert:
    return smtp_ca.issue_cert(*CERT_NAMES)


@pytest.fixture
def smtp_server(
    smtp_server_cert: trustme.LeafCert, smtp_ca_file: str
) -> Iterator[Callable[..., SmtpTestServer]]:
    """Factory: smtp_server(tls="starttls"|"implicit"|"none", auth=True, require_starttls=True,
    users={"user": "pass"}, behaviour=Behaviour(), smtputf8=True, auth_mechanisms=("PLAIN", "LOGIN"),
    pipelining=False, line_limit=None, command_limits=None)
    starts a real SMTP server and returns its SmtpTestServer. All are stopped at test end."""
    started: list[SmtpTestServer] = []

    def start(
        tls: str = "starttls",
        auth: bool = True,
        require_starttls: bool = True,
        users: Mapping[str, str] | None = None,
        behaviour: Behaviour | None = None,
        smtputf8: bool = True,
        auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
        pipelining: bool = False,
        line_limit: int | None = None,
        command_limits: Mapping[str, int] | None = None,
    ) -> SmtpTestServer:
        server = SmtpTestServer(
            tls=tls,
            auth=auth,
            require_starttls=require_starttls,
            users={"user": "pass"} if users is None else users,
            behaviour=behaviour or Behaviour(),
            smtputf8=smtputf8,
            auth_mechanisms=auth_mechanisms,
            server_cert=smtp_server_cert,
            ca_file=smtp_ca_file,
            pipelining=pipelining,
            line_limit=line_limit,
            command_limits=command_limits,
        )
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
