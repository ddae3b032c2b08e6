"""A loopback TCP proxy between an SMTP client and a test SMTP server that breaks the connection on cue.

    server = smtp_server(tls="none", auth=False)
    proxy = fault_proxy(server)                  # started; stopped at test end
    pool = SmtpPool(parse_smtp_uri(proxy.uri()))  # the client talks to the proxy
    proxy.cut_at("after end of data")             # the server gets the message, the client no reply
    ...
    proxy.connections, proxy.fired, server.messages

Faults (each fires `times` times, None = until heal(), after letting `skip` matching occurrences
pass; occurrences are counted across all connections through this proxy):

    reset_connections(times)      new connections are reset (RST) at once; the server never sees them
    refuse_connections()          stop listening: connecting fails with ECONNREFUSED (accept_connections()
                                  listens again on the same port)
    cut_at(point)                 close both sides at `point` (reset=True: RST towards the client)
    stall_at(point, seconds)      stop forwarding at `point` for `seconds`, then carry on
    stall(seconds)                stop forwarding everything, now, for `seconds`
    latency = seconds             delay every chunk forwarded, both directions
    heal()                        disarm all of the above

Points: "greeting" (the server's first reply), a command verb as the client sends it ("EHLO", "MAIL",
"RCPT", "DATA", "RSET", "QUIT", ...: the line is not forwarded), "start of data" (the first bytes of
the message after the 354: with a message larger than the socket buffers, a cut there fails the
client while it is still writing, before its final "."), "before end of data" (the message is
forwarded except its final ".\\r\\n": the server discards it, while the client, whose data is all
written, cannot tell this from a lost reply) and "after end of data" (the whole message is forwarded
and the server's reply is read and dropped: the server has the message, the client never hears).

TLS: the proxy forwards bytes, so connection-level faults (reset, refuse, stall, latency, cutting at
"greeting" or at a command before STARTTLS) work for STARTTLS and implicit-TLS servers too (the test
certificate names 127.0.0.1, where the proxy listens). It cannot see inside TLS: after STARTTLS, and
for smtps:// from the start, no command or end of data is recognised, so those points never fire.
Use plaintext servers (tls="none", no auth, like an ignoreTLS relay) for them, and the server-side
Behaviour (tests/support/smtp.py) for the same faults over TLS.

Threads: one accepting, two per connection; at most max_connections at once (more are reset).
Everything listens on 127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.smtp import LISTEN_HOST, build_uri

SPECIAL_POINTS = ("greeting", "start of data", "before end of data", "after end of data")
_VERB = re.compile(rb"[A-Za-z]{1,20}")
_END_OF_DATA = b"\r\n.\r\n"
_MAX_LINE = 4096  # a longer "command line" is not SMTP: stop looking for a verb in it
_CHUNK = 65536
# How long a cut "after end of data" waits for the server's reply before cutting anyway.
_REPLY_WAIT_SECONDS = 10.0


@dataclass
class _Fault:
    kind: str  # "cut" or "stall"
    point: str
    seconds: float
    reset: bool
    skip: int
    times: int | None  # None: every time


class FaultProxy:
    """See the module docstring. Counters: connections (accepted, including ones reset on purpose),
    active_connections, fired (a line per fault as it took effect, in order: "reset at connect",
    "refuse connections", "cut at MAIL", "stall after end of data", ...)."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        scheme: str = "smtp",
        ca_file: str | None = None,
        max_connections: int = 32,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.scheme = scheme
        self.ca_file = ca_file
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.host = LISTEN_HOST
        self.connections = 0
        self.active_connections = 0
        self.fired: list[str] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._faults: list[_Fault] = []
        self._resets: int | None = 0  # connections still to reset at once (None: all)
        self._latency = 0.0
        self._stall_until = 0.0
        self._links: list[_Link] = []
        self._stopping = threading.Event()
        self._listener: socket.socket | None = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"faultproxy:{self.port}", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop listening, cut every connection and wait for the proxy's threads; idempotent."""
        self._stopping.set()
        with self._lock:
            listener, self._listener = self._listener, None
            links = list(self._links)
        if listener is not None:
            _close_listener(listener)
        for link in links:
            link.cut(reset=False)
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=5)
        for link in links:
            link.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use --------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def uri(self, user: str | None = None, password: str | None = None, **options: Any) -> str:
        """An SMTP_CONNECTION_URI for the target server, through the proxy (see build_uri)."""
        return build_uri(self.scheme, self.host, self.port, user, password, {"tlsCaFile": self.ca_file, **options})

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._latency = max(0.0, float(seconds))

    def reset_connections(self, times: int | None = 1) -> None:
        """Reset the next `times` new connections (None: every one until heal())."""
        with self._lock:
            self._resets = None if times is None else (self._resets or 0) + times

    def refuse_connections(self) -> None:
        """Close the listening socket: new connections are refused by the kernel."""
        with self._lock:
            listener, self._listener = self._listener, None
            if listener is not None:
                self.fired.append("refuse connections")
        if listener is not None:
            _close_listener(listener)

    def accept_connections(self) -> None:
        """Listen again, on the same port, after refuse_connections()."""
        with self._lock:
            if self._listener is None and not self._stopping.is_set():
                self._listener = self._listen(self.port)

    def cut_at(self, point: str, *, times: int | None = 1, skip: int = 0, reset: bool = False) -> None:
        self._arm(_Fault("cut", _check_point(point), 0.0, reset, skip, times))

    def stall_at(self, point: str, seconds: float, *, times: int | None = 1, skip: int = 0) -> None:
        self._arm(_Fault("stall", _check_point(point), float(seconds), False, skip, times))

    def stall(self, seconds: float) -> None:
        """Forward nothing, in either direction on any connection, for `seconds` from now."""
        with self._lock:
            self._stall_until = time.monotonic() + seconds

    def heal(self) -> None:
        """Disarm every fault, end a stall, drop the latency, and listen if refusing."""
        with self._lock:
            self._faults.clear()
            self._resets = 0
            self._stall_until = 0.0
        self._latency = 0.0
        self.accept_connections()

    def wait_until_no_connections(self, timeout: float = 5.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.active_connections == 0, timeout=timeout)

    # -- internals -------------------------------------------------------------------------------

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LISTEN_HOST, port))
        listener.listen(64)
        listener.settimeout(0.1)  # the accept loop notices stop() and refuse_connections()
        return listener

    def _arm(self, fault: _Fault) -> None:
        if fault.skip < 0 or (fault.times is not None and fault.times < 1):
            raise ValueError("skip must be >= 0 and times >= 1 (or None)")
        with self._lock:
            self._faults.append(fault)

    def _match(self, point: str) -> _Fault | None:
        """The armed fault that fires at this occurrence of `point`, if any (consumes it)."""
        with self._lock:
            chosen = None
            for fault in self._faults:
                if fault.point != point:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                elif chosen is None:
                    chosen = fault
            if chosen is None:
                return None
            if chosen.times is not None:
                chosen.times -= 1
                if chosen.times == 0:
                    self._faults.remove(chosen)
            self.fired.append(f"{chosen.kind} {point}" if point in SPECIAL_POINTS else f"{chosen.kind} at {point}")
            return chosen

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                self._stopping.wait(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                continue  # closed by refuse_connections() or stop()
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        client.settimeout(None)
        with self._lock:
            self.connections += 1
            reset = self._resets is None or self._resets > 0
            if reset and self._resets is not None:
                self._resets -= 1
            full = len(self._links) >= self.max_connections
            if reset:
                self.fired.append("reset at connect")
        if reset or full:
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
            upstream.settimeout(None)
        except OSError:
            _reset(client)
            return
        link = _Link(self, client, upstream)
        with self._changed:
            self._links.append(link)
            self.active_connections += 1
        link.start()

    def _link_closed(self, link: _Link) -> None:
        with self._changed:
            if link in self._links:
                self._links.remove(link)
                self.active_connections -= 1
            self._changed.notify_all()

    def _pace(self, link: _Link) -> None:
        """Honour stall() and the latency before forwarding a chunk."""
        while not link.closed.is_set():
            with self._lock:
                remaining = self._stall_until - time.monotonic()
            if remaining <= 0:
                break
            link.closed.wait(remaining)
        if self._latency > 0:
            link.closed.wait(self._latency)


class _Link:
    """One proxied connection: two pumps and a small reader of the client's SMTP stream."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._cut = False
        self._mode = "command"  # command, await354, data, awaittls, opaque
        self._line = b""  # a command line not yet complete
        self._tail = b""  # the last bytes of message data (end of data may span chunks)
        self._data_started = False
        self._greeted = False
        # Replies the client still waits for (the greeting, one per command, one per message), and
        # while a DATA's reply is awaited, how many replies to go until it (RFC 2920 pipelining:
        # MAIL, RCPT and DATA arrive together and their replies come back in order).
        self._expected_replies = 1
        self._data_reply_in: int | None = None
        self._reply_line = b""  # a reply line not yet complete
        self._hold_reply = 0.0  # stall the server's next reply this long
        self._swallow_reply = False
        self._reply_swallowed = threading.Event()
        self._ends = 0  # pumps finished
        self._threads = [
            threading.Thread(target=self._guard, args=(self._from_client,), daemon=True),
            threading.Thread(target=self._guard, args=(self._from_server,), daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def cut(self, reset: bool) -> None:
        """Close both sides now; reset=True sends the client an RST instead of a FIN."""
        with self._lock:
            if self._cut:
                return
            self._cut = True
        if reset:
            _reset(self.client)
        else:
            _close(self.client)
        _close(self.server)
        self.closed.set()
        self._reply_swallowed.set()  # a pump waiting for the reply to drop stops waiting

    def _guard(self, pump: Callable[[], None]) -> None:
        try:
            pump()
        except OSError:
            pass  # the other side (or a cut) closed a socket under us
        finally:
            with self._lock:
                self._ends += 1
                last = self._ends == 2
            if last:
                self.cut(reset=False)
                self.proxy._link_closed(self)

    # client -> server -------------------------------------------------------------------------

    def _from_client(self) -> None:
        while not self.closed.is_set():
            data = self.client.recv(_CHUNK)
            if not data:
                _shutdown_write(self.server)
                return
            self.proxy._pace(self)
            sent = 0
            for offset, point in self._events(data):
                fault = self.proxy._match(point)
                if fault is None:
                    continue
                if fault.kind == "stall":
                    if point == "after end of data":
                        self._hold_reply = fault.seconds
                        continue
                    self.server.sendall(data[sent:offset])
                    sent = offset
                    self.closed.wait(fault.seconds)
                    continue
                if point == "after end of data":  # forward it, let the server answer, drop that
                    self._swallow_reply = True
                    self.server.sendall(data[sent:offset])
                    self._reply_swallowed.wait(_REPLY_WAIT_SECONDS)
                else:
                    self.server.sendall(data[sent:offset])
                self.cut(reset=fault.reset)
                return
            self.server.sendall(data[sent:])

    def _events(self, data: bytes) -> list[tuple[int, str]]:
        """(offset in data, point) for each command line and end of data in this chunk; a command's
        offset is where its line starts, end of data gives the final "." and the byte after it."""
        events: list[tuple[int, str]] = []
        with self._lock:
            index = 0
            while index < len(data) and self._mode != "opaque":
                if self._mode == "data":
                    if not self._data_started:
                        self._data_started = True
                        events.append((index, "start of data"))
                    window = self._tail + data[index:]
                    found = window.find(_END_OF_DATA)
                    if found < 0:
                        self._tail = window[-4:]
                        break
                    end = index + found + len(_END_OF_DATA) - len(self._tail)
                    self._expected_replies += 1  # the final reply to the message
                    events.append((max(0, end - 3), "before end of data"))
                    events.append((end, "after end of data"))
                    self._mode, self._tail, index = "command", b"", end
                    continue
                newline = data.find(b"\n", index)
                if newline < 0:
                    self._line = (self._line + data[index:])[-_MAX_LINE:]
                    break
                start = index - len(self._line)
                line, self._line = self._line + data[index:newline + 1], b""
                index = newline + 1
                verb = _VERB.match(line)
                if verb is None or len(line) > _MAX_LINE:
                    continue
                name = verb.group().decode().upper()
                events.append((max(0, start), name))
                self._expected_replies += 1
                if name == "DATA" and line.strip().upper() == b"DATA":
                    self._mode = "await354"
                    self._data_reply_in = self._expected_replies
                elif name == "STARTTLS":
                    self._mode = "awaittls"
        return events

    # server -> client -------------------------------------------------------------------------

    def _from_server(self) -> None:
        while not self.closed.is_set():
            data = self.server.recv(_CHUNK)
            if not data:
                _shutdown_write(self.client)
                return
            with self._lock:
                self._count_replies(data)
                if self._mode == "awaittls":
                    self._mode = "opaque" if data.startswith(b"220") else "command"
            if self._swallow_reply:  # the reply to the end of data: the client never gets it
                self._reply_swallowed.set()
                return
            if not self._greeted:
                self._greeted = True
                fault = self.proxy._match("greeting")
                if fault is not None and fault.kind == "cut":
                    self.cut(reset=fault.reset)
                    return
                if fault is not None:
                    self.closed.wait(fault.seconds)
            if self._hold_reply:
                seconds, self._hold_reply = self._hold_reply, 0.0
                self.closed.wait(seconds)
            self.proxy._pace(self)
            self.client.sendall(data)


    def _count_replies(self, data: bytes) -> None:
        """Follow the server's replies (under self._lock); the reply to DATA decides whether the
        client's next bytes are message data (354) or commands."""
        lines = (self._reply_line + data).split(b"\n")
        self._reply_line = lines.pop()[-_MAX_LINE:]
        for line in lines:
            if len(line) >= 3 and line[:3].isdigit() and line[3:4] == b"-":
                continue  # not the last line of a multi-line reply
            self._expected_replies -= 1
            if self._mode == "await354" and self._data_reply_in is not None:
                self._data_reply_in -= 1
                if self._data_reply_in <= 0:
                    self._data_reply_in = None
                    if line.startswith(b"354"):
                        self._mode, self._tail = "data", b"\r\n"
                    else:
                        self._mode, self._tail = "command", b""
                    self._data_started = False


def _check_point(point: str) -> str:
    if point in SPECIAL_POINTS:
        return point
    if isinstance(point, str) and _VERB.fullmatch(point.encode()):
        return point.upper()
    raise ValueError(f"point must be one of {SPECIAL_POINTS} or an SMTP command verb, got {point!r}")


def _close_listener(listener: socket.socket) -> None:
    """Stop listening at once: close() alone waits for the accept loop's poll() to let go of the
    socket, and connections arriving meanwhile would be accepted by the kernel, then reset."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv() on it
    except OSError:
        pass
    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0) instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)  # wakes a reader without sending anything
    except OSError:
        pass
    sock.close()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Factory: fault_proxy(server, **options) -> a started FaultProxy in front of `server` (an
    SmtpTestServer, or anything with .host and .port), stopped at test end. Its uri() matches the
    server's (smtps:// for implicit TLS, the test CA as tlsCaFile)."""
    started: list[FaultProxy] = []

    def start(server: Any, **options: Any) -> FaultProxy:
        scheme = "smtps" if getattr(server, "tls", None) == "implicit" else "smtp"
        proxy = FaultProxy(server.host, server.port, scheme=scheme, ca_file=getattr(server, "ca_file", None), **options)
        started.append(proxy)
        return proxy.start()

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()
