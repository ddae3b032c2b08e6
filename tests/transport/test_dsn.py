"""RFC 3461 DSN parameters on the wire (issue 12 item 5): RET/ENVID on MAIL FROM and NOTIFY/ORCPT on every
RCPT TO when the server's EHLO offers DSN, a permanent error naming `dsn` when it does not; the same
command text on the lockstep, pipelined and chained paths.

The server is aiosmtpd with a session class that records each MAIL and RCPT argument exactly as it came
(case and xtext intact) and takes the DSN parameters itself, since aiosmtpd knows none of them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from local.processes import free_port
from mailer import transport
from mailer.dsn import DsnRequest
from mailer.transport import DeliveryError, SmtpPool, parse_smtp_uri

MAIL_DSN = ("RET=", "ENVID=")
RCPT_DSN = ("NOTIFY=", "ORCPT=")
MESSAGE = b"From: app@example.com\r\nTo: ada@example.com\r\nSubject: dsn\r\nMessage-ID: <m@example.com>\r\n\r\nbody\r\n"
DSN = DsnRequest(ret="HDRS", envid="order 7+1=ok", notify=("SUCCESS", "FAILURE", "DELAY"), orcpt="ada+tag@example.com")
MAIL_PARAMS = ["RET=HDRS", "ENVID=order+207+2B1+3Dok"]
RCPT_PARAMS = ["NOTIFY=SUCCESS,FAILURE,DELAY", "ORCPT=rfc822;ada+2Btag@example.com"]


@dataclass
class Transaction:
    mail: str  # the MAIL argument as received, e.g. "FROM:<a@b> SIZE=12 RET=HDRS"
    rcpts: list[str] = field(default_factory=list)
    data: bytes | None = None


class Recorder:
    """The aiosmtpd handler: advertises DSN (or not) and PIPELINING (or not), records transactions."""

    def __init__(self, dsn: bool, pipelining: bool) -> None:
        self.dsn = dsn
        self.pipelining = pipelining
        self.transactions: list[Transaction] = []
        self.refused: list[str] = []  # replies other than 2xx/354 this server sent for MAIL/RCPT

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        extra = (["250-DSN"] if self.dsn else []) + (["250-PIPELINING"] if self.pipelining else [])
        return responses[:1] + extra + responses[1:]

    async def handle_DATA(self, server, session, envelope):
        self.transactions[-1].data = envelope.content
        return "250 2.0.0 Ok: queued"


class DsnSession(SMTP):
    """Takes RET, ENVID, NOTIFY and ORCPT off the arguments (after recording them) and checks their
    syntax as a DSN server would (RFC 3461: 501 for a malformed parameter), then lets aiosmtpd do the rest."""

    def _strip(self, arg: str, names: tuple[str, ...]) -> tuple[str, list[str]]:
        words = arg.split(" ")
        dsn = [w for w in words if w.upper().startswith(names)]
        return " ".join(w for w in words if w not in dsn), dsn

    async def smtp_MAIL(self, arg):
        recorder: Recorder = self.event_handler
        rest, dsn = self._strip(arg or "", MAIL_DSN)
        if dsn and not recorder.dsn:
            recorder.refused.append("MAIL " + arg)
            await self.push("555 5.5.4 Unsupported option: " + dsn[0].split("=")[0])
            return
        if any(not _valid_mail_param(p) for p in dsn):
            recorder.refused.append("MAIL " + arg)
            await self.push("501 5.5.4 Bad DSN parameter")
            return
        recorder.transactions.append(Transaction(mail=arg))
        await super().smtp_MAIL(rest)

    async def smtp_RCPT(self, arg):
        recorder: Recorder = self.event_handler
        rest, dsn = self._strip(arg or "", RCPT_DSN)
        if (dsn and not recorder.dsn) or any(not _valid_rcpt_param(p) for p in dsn):
            recorder.refused.append("RCPT " + arg)
            await self.push("501 5.5.4 Bad DSN parameter")
            return
        if recorder.transactions:
            recorder.transactions[-1].rcpts.append(arg)
        await super().smtp_RCPT(rest)


def _xtext_ok(value: str) -> bool:
    """RFC 3461 xtext: chars "!".."~" except "+" and "=", or "+" and two upper-case hex digits."""
    index = 0
    while index < len(value):
        char = value[index]
        if char == "+":
            if len(value) < index + 3 or any(c not in "0123456789ABCDEF" for c in value[index + 1:index + 3]):
                return False
            index += 3
            continue
        if not ("!" <= char <= "~") or char == "=":
            return False
        index += 1
    return True


def _valid_mail_param(param: str) -> bool:
    name, _, value = param.partition("=")
    if name.upper() == "RET":
        return value.upper() in ("FULL", "HDRS")
    return _xtext_ok(value) and 0 < len(value) <= 100


def _valid_rcpt_param(param: str) -> bool:
    name, _, value = param.partition("=")
    if name.upper() == "NOTIFY":
        items = value.upper().split(",")
        return items == ["NEVER"] or (bool(items) and set(items) <= {"SUCCESS", "FAILURE", "DELAY"})
    addr_type, semi, address = value.partition(";")
    return bool(semi) and addr_type.lower() == "rfc822" and _xtext_ok(address) and len(value) <= 500


class DsnController(Controller):
    def factory(self):
        return DsnSession(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def dsn_server() -> Iterator[Callable[..., tuple[Recorder, str]]]:
    """dsn_server(dsn=True, pipelining=False) -> (recorder, smtp:// URI on 127.0.0.1, plaintext)."""
    controllers: list[Controller] = []

    def start(dsn: bool = True, pipelining: bool = False) -> tuple[Recorder, str]:
        recorder = Recorder(dsn, pipelining)
        port = free_port()
        controller = DsnController(recorder, hostname="127.0.0.1", port=port, server_hostname="mx.test.localhost")
        controller.start()
        controllers.append(controller)
        return recorder, f"smtp://127.0.0.1:{port}?maxConnections=1"

    try:
        yield start
    finally:
        for controller in controllers:
            controller.stop()


@pytest.fixture
def paths(monkeypatch) -> dict[str, int]:
    """Counts which envelope path the transport took (observation only: the real methods run)."""
    counts = {"lockstep": 0, "pipelined": 0, "chained envelope": 0}
    for name, key in (("_lockstep_envelope", "lockstep"), ("_pipelined_envelope", "pipelined"), ("envelope", "chained envelope")):
        original = getattr(transport._Connection, name)

        def counted(self, *args, _original=original, _key=key, **kwargs):
            counts[_key] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(transport._Connection, name, counted)
    return counts


def params(command: str) -> list[str]:
    return command.split(" ")[1:]


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_dsn_parameters_reach_mail_from_and_every_rcpt(dsn_server, paths, pipelining):
    recorder, uri = dsn_server(dsn=True, pipelining=pipelining)
    pool = SmtpPool(parse_smtp_uri(uri))
    try:
        result = pool.send("app@example.com", ["ada+tag@example.com", "grace@example.com"], MESSAGE, dsn=DSN)
    finally:
        pool.close()
    assert result.accepted == ["ada+tag@example.com", "grace@example.com"]
    assert paths["pipelined" if pipelining else "lockstep"] == 1 and paths["lockstep" if pipelining else "pipelined"] == 0
    (txn,) = recorder.transactions
    assert txn.mail.startswith("FROM:<app@example.com>")
    assert [p for p in params(txn.mail) if p.startswith(MAIL_DSN)] == MAIL_PARAMS
    assert [params(rcpt) for rcpt in txn.rcpts] == [RCPT_PARAMS, RCPT_PARAMS]
    assert txn.rcpts[0].startswith("TO:<ada+tag@example.com> ")
    assert txn.data is not None and b"Subject: dsn" in txn.data
    assert recorder.refused == []


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_without_dsn_in_the_request_no_dsn_parameter_is_sent(dsn_server, pipelining):
    recorder, uri = dsn_server(dsn=True, pipelining=pipelining)
    pool = SmtpPool(parse_smtp_uri(uri))
    try:
        pool.send("app@example.com", ["ada@example.com"], MESSAGE)
    finally:
        pool.close()
    (txn,) = recorder.transactions
    assert not any(p.startswith(MAIL_DSN) for p in params(txn.mail))
    assert txn.rcpts == ["TO:<ada@example.com>"]


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_a_server_without_dsn_is_a_permanent_error_naming_dsn_and_nothing_is_sent(dsn_server, pipelining):
    recorder, uri = dsn_server(dsn=False, pipelining=pipelining)
    pool = SmtpPool(parse_smtp_uri(uri))
    try:
        with pytest.raises(DeliveryError) as caught:
            pool.send("app@example.com", ["ada@example.com"], MESSAGE, dsn=DsnRequest(notify=("FAILURE",)))
        # The pool still works for mail that asks for no DSN.
        assert pool.send("app@example.com", ["ada@example.com"], MESSAGE).accepted == ["ada@example.com"]
    finally:
        pool.close()
    error = caught.value
    assert str(error).startswith("dsn: SMTP server 127.0.0.1:") and "does not offer DSN (RFC 3461)" in str(error)
    assert error.transient is False and not error.outcome_unknown
    assert recorder.refused == []  # refused before MAIL: no command with DSN parameters went out
    assert len(recorder.transactions) == 1 and "RET=" not in recorder.transactions[0].mail


def send_two_chained(pool: SmtpPool, first_dsn: DsnRequest | None, second_dsn: DsnRequest | None, monkeypatch) -> dict[str, object]:
    """Two sends on a pool with one warm connection: the first holds it until the second is queued, so
    the first builds and writes the second's envelope after its own data (chaining). Returns each
    send's SendResult or DeliveryError."""
    results: dict[str, object] = {}
    entered, gate = threading.Event(), threading.Event()
    original = transport._Connection.transact
    first_request: list[object] = []

    def held_first(self, request, recipients, prewritten=False):
        if not first_request:
            first_request.append(request)
            entered.set()
            gate.wait(5)  # hold the only connection until the second sender is queued
        return original(self, request, recipients, prewritten)

    def run(name: str, recipient: str, dsn: DsnRequest | None) -> None:
        try:
            results[name] = pool.send("app@example.com", [recipient], MESSAGE, dsn=dsn)
        except DeliveryError as error:
            results[name] = error

    pool.send("app@example.com", ["ada@example.com"], MESSAGE)  # a warm connection
    monkeypatch.setattr(transport._Connection, "transact", held_first)
    one = threading.Thread(target=run, args=("first", "ada@example.com", first_dsn))
    two = threading.Thread(target=run, args=("second", "grace@example.com", second_dsn))
    try:
        one.start()
        assert entered.wait(5)
        two.start()
        for _ in range(500):
            if pool.waiting:
                break
            threading.Event().wait(0.01)
        assert pool.waiting == 1
    finally:
        gate.set()
        one.join(10)
        two.join(10)
    return results


def test_a_chained_envelope_carries_its_own_dsn_parameters(dsn_server, paths, monkeypatch):
    """maxConnections=1 and PIPELINING: the second sender's envelope is written by the first one, after
    its data (chaining); each envelope keeps its own send's DSN request."""
    recorder, uri = dsn_server(dsn=True, pipelining=True)
    pool = SmtpPool(parse_smtp_uri(uri))
    try:
        results = send_two_chained(pool, DsnRequest(ret="FULL", envid="first", notify=("NEVER",)),
                                   DsnRequest(envid="second", notify=("FAILURE",), orcpt="grace@example.com"), monkeypatch)
    finally:
        pool.close()
    assert [type(results[name]).__name__ for name in ("first", "second")] == ["SendResult", "SendResult"]
    assert paths["chained envelope"] == 1  # the second envelope was built by the first sender
    first, second = recorder.transactions[1:]
    assert first.rcpts[0].startswith("TO:<ada@example.com>") and second.rcpts[0].startswith("TO:<grace@example.com>")
    assert [p for p in params(first.mail) if p.startswith(MAIL_DSN)] == ["RET=FULL", "ENVID=first"]
    assert params(first.rcpts[0]) == ["NOTIFY=NEVER"]
    assert [p for p in params(second.mail) if p.startswith(MAIL_DSN)] == ["ENVID=second"]
    assert params(second.rcpts[0]) == ["NOTIFY=FAILURE", "ORCPT=rfc822;grace@example.com"]


def test_a_queued_send_asking_for_dsn_from_a_server_without_it_fails_alone(dsn_server, paths, monkeypatch):
    """Chaining tries to build the waiting send's envelope and cannot (no DSN offered): nothing is chained,
    the holder's mail goes out, and the waiter meets the dsn error itself on its own turn."""
    recorder, uri = dsn_server(dsn=False, pipelining=True)
    pool = SmtpPool(parse_smtp_uri(uri))
    try:
        results = send_two_chained(pool, None, DsnRequest(notify=("FAILURE",)), monkeypatch)
        after = pool.send("app@example.com", ["alan@example.com"], MESSAGE)  # the pool still works
    finally:
        pool.close()
    assert results["first"].accepted == ["ada@example.com"]
    assert isinstance(results["second"], DeliveryError) and str(results["second"]).startswith("dsn: ")
    assert results["second"].transient is False
    assert after.accepted == ["alan@example.com"]
    assert paths["chained envelope"] >= 1  # chaining was tried
    assert [txn.rcpts for txn in recorder.transactions] == [["TO:<ada@example.com>"], ["TO:<ada@example.com>"], ["TO:<alan@example.com>"]]
    assert recorder.refused == []
