"""RFC 2920 pipelining: the same results and error classification as lockstep, in fewer round trips.

Each scenario runs against a server that advertises PIPELINING and one that does not (`mode`); the
test server counts the client's round trips (the times it sent after waiting for a reply)."""

from __future__ import annotations

import smtplib
import time

import pytest

from mailer import transport
from mailer.transport import DeliveryError

from tests.support.smtp import Behaviour

from .helpers import SENDER, make_message

MODES = ["pipelined", "lockstep"]


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


def start(smtp_server, mode: str, **kwargs):
    return smtp_server(pipelining=mode == "pipelined", **kwargs)


def pool_connection(pool):
    (connection,) = pool._idle
    return connection


def test_the_client_pipelines_exactly_when_the_server_offers_it(smtp_server, open_pool, mode) -> None:
    server = start(smtp_server, mode)  # STARTTLS + AUTH: neither is pipelined, both still work
    pool = open_pool(server.uri("user", "pass"))
    pool.send(SENDER, ["ada@example.com"], make_message())
    assert pool_connection(pool).pipelining is (mode == "pipelined")
    assert server.auth_attempts[0].success and server.messages[0].tls


@pytest.mark.parametrize("recipients", [1, 3])
def test_round_trips_per_message_on_a_warm_connection(smtp_server, open_pool, mode, recipients) -> None:
    server = start(smtp_server, mode)
    pool = open_pool(server.uri("user", "pass"))
    to = [f"r{n}@example.com" for n in range(recipients)]
    pool.send(SENDER, to, make_message("warm-up"))
    before = server.round_trips
    pool.send(SENDER, to, make_message("measured"))
    measured = server.round_trips - before
    # lockstep: MAIL, each RCPT, DATA, then the data; pipelined: the envelope, then the data.
    assert measured == (2 if mode == "pipelined" else 3 + recipients), measured
    assert server.connections == 1


def test_a_round_trip_is_a_wait_of_the_client_not_a_read_of_the_server(smtp_server) -> None:
    """What the counts above rest on. The data of one message and the next envelope, sent without reading
    in between, reach the server in two pieces, and the server answers the first before the second
    arrives (as TCP may deliver one write of a loaded client): still one round trip, since the client
    never waited. (Counting the server's waits for input made it two.)"""
    server = smtp_server(tls="none", auth=False, pipelining=True)
    envelope = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
    client = smtplib.SMTP(server.host, server.port, local_hostname="client.example")
    try:
        client.ehlo()
        client.send(envelope)
        assert [client.getreply()[0] for _ in range(3)] == [250, 250, 354]
        before = server.round_trips
        client.send(b"Subject: one\r\n\r\nbody\r\n.\r\n")
        deadline = time.monotonic() + 10
        while not server.messages and time.monotonic() < deadline:  # recorded as it is answered
            time.sleep(0.01)
        time.sleep(0.1)
        client.send(envelope)
        assert [client.getreply()[0] for _ in range(4)] == [250, 250, 250, 354]
        assert server.round_trips - before == 1
        client.send(b"Subject: two\r\n\r\nbody\r\n.\r\n")
        assert client.getreply()[0] == 250
        assert server.round_trips - before == 2 and server.session_round_trips == {1: server.round_trips}
    finally:
        client.close()
    assert [m.message["Subject"] for m in server.messages] == ["one", "two"]


def test_a_round_trip_is_counted_however_the_client_writes_or_reads(smtp_server) -> None:
    """The count may not depend on the client using smtplib's send() and getreply(): a transport that
    wrote around them (the socket's sendall) after a wait, or waited around them (reading the reply from
    its file), would make round trips the count did not see, and a regression that added one could pass."""
    server = smtp_server(tls="none", auth=False, pipelining=True)
    client = smtplib.SMTP(server.host, server.port, local_hostname="client.example")
    try:
        client.ehlo()  # 1 (after the greeting)
        client.sock.sendall(b"NOOP\r\n")  # 2: written around SMTP.send, after a wait
        assert client.getreply()[0] == 250
        client.send(b"NOOP\r\n")  # 3
        assert client.file.readline().startswith(b"250 ")  # waited around getreply
        client.send(b"NOOP\r\n")  # 4
        client.sock.sendall(b"NOOP\r\n")  # no wait in between: the same round trip
        assert [client.getreply()[0] for _ in range(2)] == [250, 250]
        assert server.round_trips == 4 and server.session_round_trips == {1: 4}
    finally:
        client.close()


def test_mixed_rcpt_replies_250_452_550(smtp_server, open_pool, mode) -> None:
    behaviour = Behaviour(max_recipients=2, rcpt_replies={"b@example.com": "550 5.1.1 No such user"})
    server = start(smtp_server, mode, behaviour=behaviour)
    pool = open_pool(server.uri("user", "pass"))
    to = ["a@example.com", "b@example.com", "c@example.com", "d@example.com", "e@example.com"]
    result = pool.send(SENDER, to, make_message())
    assert result.accepted == ["a@example.com", "c@example.com", "d@example.com", "e@example.com"]
    assert result.rejected == ["b@example.com"]
    assert result.pending == [] and result.unknown == []
    assert len(result.responses) == 2
    assert result.deferred_reason is None
    # exactly what the server put in each envelope: nobody twice, nobody missing
    assert [m.rcpt_tos for m in server.messages] == [["a@example.com", "c@example.com"],
                                                      ["d@example.com", "e@example.com"]]
    # the refused DATA of no transaction and the RSET left the connection usable
    pool.send(SENDER, ["a@example.com"], make_message("after"))
    assert server.connections == 1


def test_a_recipient_the_server_accepts_after_its_452_is_reported_as_it_was_delivered(
        smtp_server, open_pool, mode) -> None:
    # A scripted 452 for one address, while later RCPTs are still accepted: pipelined, the server
    # has "d" in the envelope and delivers the data to it, so the client must count it accepted
    # (and not send it again); lockstep never sent RCPT for "d" before the data.
    behaviour = Behaviour(rcpt_replies={"c@example.com": "452 4.5.3 Too many recipients"})
    server = start(smtp_server, mode, behaviour=behaviour)
    pool = open_pool(server.uri("user", "pass"))
    result = pool.send(SENDER, ["a@example.com", "c@example.com", "d@example.com"], make_message())
    delivered = [address for m in server.messages for address in m.rcpt_tos]
    assert sorted(result.accepted) == sorted(delivered)
    assert len(delivered) == len(set(delivered))
    if mode == "pipelined":
        assert result.accepted == ["a@example.com", "d@example.com"]
        assert result.pending == ["c@example.com"]
    else:
        assert result.accepted == ["a@example.com"]
        assert result.pending == ["c@example.com", "d@example.com"]
    assert result.deferred_reason == "SMTP 452 4.5.3 Too many recipients"


def test_all_recipients_refused_sends_no_data_and_raises_as_before(smtp_server, open_pool) -> None:
    behaviour = Behaviour(rcpt_reply_default="550 5.1.1 No such user",
                          rcpt_replies={"later@example.com": "451 4.2.0 Greylisted"})
    errors = {}
    for mode in MODES:
        server = start(smtp_server, mode, behaviour=behaviour)
        pool = open_pool(server.uri("user", "pass"))
        with pytest.raises(DeliveryError) as caught:
            pool.send(SENDER, ["x@example.com", "later@example.com"], make_message())
        assert server.data_received == 0 and server.messages == []
        errors[mode] = caught.value
    pipelined, lockstep = errors["pipelined"], errors["lockstep"]
    assert pipelined.message == lockstep.message == (
        "SMTP server refused all 2 recipient(s) (1 permanently, 1 temporarily); "
        "first reply: 550 5.1.1 No such user")
    for error in (pipelined, lockstep):
        assert error.transient is False and error.outcome_unknown is False and error.code == 550
        assert error.rejected == ["x@example.com"] and error.pending == ["later@example.com"]


def test_a_later_transaction_refused_entirely_consumes_the_data_refusal_and_resets(
        smtp_server, open_pool, mode) -> None:
    # Transaction 2 gets only refusals: pipelined, its DATA was sent and answered 503; that reply
    # must be read before RSET, or RSET's "250" would be mistaken and the stream would be off by one.
    behaviour = Behaviour(max_recipients=1, rcpt_replies={"gone@example.com": "550 5.1.1 No such user"})
    server = start(smtp_server, mode, behaviour=behaviour)
    pool = open_pool(server.uri("user", "pass"))
    result = pool.send(SENDER, ["a@example.com", "gone@example.com"], make_message("one"))
    assert result.accepted == ["a@example.com"] and result.rejected == ["gone@example.com"]
    assert server.data_received == 1
    second = pool.send(SENDER, ["b@example.com"], make_message("two"))
    assert second.accepted == ["b@example.com"]
    assert [m.message["Subject"] for m in server.messages] == ["one", "two"]
    assert server.connections == 1  # the connection stayed in step and was reused


def test_a_reply_split_across_packets(smtp_server, open_pool, mode) -> None:
    behaviour = Behaviour(reply_fragment=3, max_recipients=2,
                          rcpt_replies={"b@example.com": "550 5.1.1 No such user"})
    server = start(smtp_server, mode, tls="none", auth=False, behaviour=behaviour)
    pool = open_pool(server.uri())
    to = ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]
    result = pool.send(SENDER, to, make_message())
    assert result.accepted == ["a@example.com", "c@example.com", "d@example.com"]
    assert result.rejected == ["b@example.com"]
    assert [m.rcpt_tos for m in server.messages] == [["a@example.com", "c@example.com"], ["d@example.com"]]


@pytest.mark.parametrize("point", ["MAIL", "RCPT", "DATA"])
def test_connection_lost_mid_pipeline_before_the_dot_is_transient_and_safe_to_retry(
        smtp_server, fault_proxy, open_pool, mode, point) -> None:
    server = start(smtp_server, mode, tls="none", auth=False)
    proxy = fault_proxy(server)
    pool = open_pool(proxy.uri())
    proxy.cut_at(point)
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, ["a@example.com", "b@example.com"], make_message("cut"))
    assert caught.value.transient is True
    assert caught.value.outcome_unknown is False
    assert "may or may not" not in caught.value.message
    assert server.messages == [] and server.data_received == 0
    result = pool.send(SENDER, ["a@example.com", "b@example.com"], make_message("retried"))
    assert result.accepted == ["a@example.com", "b@example.com"]
    assert [m.message["Subject"] for m in server.messages] == ["retried"]


def test_reused_connection_cut_mid_pipeline_is_retried_once_on_a_fresh_one(
        smtp_server, fault_proxy, open_pool, mode) -> None:
    server = start(smtp_server, mode, tls="none", auth=False)
    proxy = fault_proxy(server)
    pool = open_pool(proxy.uri())
    pool.send(SENDER, ["a@example.com"], make_message("one"))
    proxy.cut_at("MAIL")
    result = pool.send(SENDER, ["a@example.com"], make_message("two"))
    assert result.accepted == ["a@example.com"]
    assert [m.message["Subject"] for m in server.messages] == ["one", "two"]
    assert proxy.connections == 2


def test_connection_lost_after_the_dot_is_still_outcome_unknown(
        smtp_server, fault_proxy, open_pool, mode) -> None:
    server = start(smtp_server, mode, tls="none", auth=False)
    proxy = fault_proxy(server)
    pool = open_pool(proxy.uri())
    proxy.cut_at("after end of data")
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, ["a@example.com"], make_message("kept"))
    assert caught.value.outcome_unknown is True and caught.value.transient is True
    assert [m.message["Subject"] for m in server.messages] == ["kept"]


def test_mail_from_refused_in_a_pipeline_is_classified_as_before(smtp_server, open_pool, mode) -> None:
    server = start(smtp_server, mode, behaviour=Behaviour(mail_reply_sequence=["451 4.3.0 Try later"]))
    pool = open_pool(server.uri("user", "pass"))
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, ["a@example.com"], make_message())
    assert caught.value.message == "SMTP 451 4.3.0 Try later"
    assert caught.value.transient is True and caught.value.code == 451
    assert server.messages == []
    pool.send(SENDER, ["a@example.com"], make_message("next"))
    assert [m.message["Subject"] for m in server.messages] == ["next"]


def test_data_refused_after_accepted_recipients(smtp_server, open_pool, mode) -> None:
    server = start(smtp_server, mode, behaviour=Behaviour(data_reply="554 5.7.1 Spam"))
    pool = open_pool(server.uri("user", "pass"))
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, ["a@example.com"], make_message())
    assert caught.value.message == "SMTP 554 5.7.1 Spam"
    assert caught.value.transient is False and caught.value.outcome_unknown is False


def test_the_server_really_splits_its_replies(smtp_server) -> None:
    import socket

    server = smtp_server(tls="none", auth=False, behaviour=Behaviour(reply_fragment=3))
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            greeting += sock.recv(1000)
        sock.sendall(b"NOOP\r\n")
        first = sock.recv(1000)
        time.sleep(0.05)
        rest = sock.recv(1000)
    assert len(first) <= 3 and first + rest == b"250 OK\r\n"


@pytest.mark.parametrize("limit", [None, 1, 3, 4])
def test_large_envelopes_are_pipelined_in_groups_with_the_same_results(
        smtp_server, open_pool, monkeypatch, limit) -> None:
    monkeypatch.setattr(transport, "RCPT_GROUP", 2)
    behaviour = Behaviour(max_recipients=limit, rcpt_replies={"b@example.com": "550 5.1.1 No such user"})
    server = start(smtp_server, "pipelined", behaviour=behaviour)
    lockstep = start(smtp_server, "lockstep", behaviour=behaviour)
    to = ["a@example.com", "b@example.com", "c@example.com", "d@example.com", "e@example.com"]
    results = [open_pool(s.uri("user", "pass")).send(SENDER, to, make_message()) for s in (server, lockstep)]
    pipelined, reference = results
    assert (pipelined.accepted, pipelined.rejected, pipelined.pending) == (
        reference.accepted, reference.rejected, reference.pending)
    assert sorted(pipelined.accepted + pipelined.rejected) == sorted(to)
    assert [m.rcpt_tos for m in server.messages] == [m.rcpt_tos for m in lockstep.messages]


def test_a_large_envelope_costs_one_round_trip_per_group(smtp_server, open_pool, monkeypatch) -> None:
    monkeypatch.setattr(transport, "RCPT_GROUP", 2)
    server = start(smtp_server, "pipelined")
    pool = open_pool(server.uri("user", "pass"))
    to = [f"r{n}@example.com" for n in range(5)]
    pool.send(SENDER, to, make_message("warm-up"))
    before = server.round_trips
    assert pool.send(SENDER, to, make_message()).accepted == to
    assert server.round_trips - before == 3 + 1  # three groups (the last ends with DATA), the data
