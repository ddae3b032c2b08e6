"""The fault proxy itself: transparent until told otherwise, each fault does what it says, it stops cleanly."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from mailer.transport import DeliveryError
from tests.support.faultproxy import FaultProxy
from tests.transport.helpers import RECIPIENT, SENDER, make_message


def send(pool, subject: str = "Hello"):
    return pool.send(SENDER, [RECIPIENT], make_message(subject))


def plaintext(smtp_server, fault_proxy, open_pool, **options):
    server = smtp_server(tls="none", auth=False)
    proxy = fault_proxy(server)
    return server, proxy, open_pool(proxy.uri(**options))


def test_forwards_a_whole_session_and_counts_connections(smtp_server, fault_proxy, open_pool) -> None:
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool)
    send(pool, "one")
    send(pool, "two")
    assert [m.message["Subject"] for m in server.messages] == ["one", "two"]
    assert proxy.connections == 1 and server.connections == 1 and proxy.fired == []


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls_passes_through_with_the_certificate_still_verified(smtp_server, fault_proxy, open_pool, tls) -> None:
    server = smtp_server(tls=tls)
    proxy = fault_proxy(server)
    proxy.latency = 0.01
    assert send(open_pool(proxy.uri("user", "pass"))).accepted == [RECIPIENT]
    assert server.messages[0].tls is True and proxy.connections == 1


def test_reset_connections_resets_only_the_next_ones(smtp_server, fault_proxy, open_pool) -> None:
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool, pool=False)
    proxy.reset_connections(times=1)
    with pytest.raises(DeliveryError) as caught:
        send(pool, "reset")
    assert caught.value.transient is True and caught.value.outcome_unknown is False
    send(pool, "after")
    assert proxy.connections == 2 and server.connections == 1  # the reset one never reached it
    assert proxy.fired == ["reset at connect"]


def test_refused_connections_until_accepting_again(smtp_server, fault_proxy, open_pool) -> None:
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool)
    proxy.refuse_connections()
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    assert caught.value.message == f"SMTP connection to {proxy.address} failed during connect: Connection refused"
    assert proxy.connections == 0 and proxy.fired == ["refuse connections"]
    proxy.accept_connections()
    send(pool)
    assert server.connections == 1 and len(server.messages) == 1


def test_cut_after_end_of_data_lets_the_server_keep_the_message(smtp_server, fault_proxy, open_pool) -> None:
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool)
    proxy.cut_at("after end of data")
    with pytest.raises(DeliveryError) as caught:
        send(pool, "kept")
    assert caught.value.outcome_unknown is True
    assert [(m.message["Subject"], m.response is not None) for m in server.messages] == [("kept", True)]
    assert proxy.fired == ["cut after end of data"]


def test_cut_before_end_of_data_leaves_the_server_without_it(smtp_server, fault_proxy, open_pool) -> None:
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool)
    proxy.cut_at("before end of data")
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    # The client wrote all of its data: it cannot tell this from a lost reply.
    assert caught.value.outcome_unknown is True
    assert server.wait_until_no_connections() and server.messages == [] and server.data_received == 0


def test_skip_lets_earlier_occurrences_through(smtp_server, fault_proxy, open_pool) -> None:
    # pool=False: a cut on a reused connection before MAIL is accepted would be retried at once.
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool, pool=False)
    proxy.cut_at("MAIL", skip=2)
    send(pool, "one")
    send(pool, "two")
    with pytest.raises(DeliveryError) as caught:
        send(pool, "three")
    assert caught.value.message == f"SMTP connection to {proxy.address} closed unexpectedly during MAIL FROM"
    assert server.mail_commands == 2  # the third MAIL never reached the server
    send(pool, "four")  # times=1: spent
    assert [m.message["Subject"] for m in server.messages] == ["one", "two", "four"]


def test_end_of_data_is_found_across_chunks_and_dot_stuffing(smtp_server, fault_proxy, open_pool) -> None:
    # A body of lines that are only "." (stuffed to "..") must not be mistaken for the end.
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool)
    proxy.cut_at("after end of data")
    body = ".\n" * 50_000 + "x" * 200_000 + "\n.\n"
    with pytest.raises(DeliveryError):
        pool.send(SENDER, [RECIPIENT], make_message(body=body))
    [received] = server.messages
    assert received.message.get_content().replace("\r\n", "\n") == body


def test_stall_delays_without_breaking(smtp_server, fault_proxy, open_pool) -> None:
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool, socketTimeout=5000)
    proxy.stall_at("RCPT", 0.5)
    started = time.monotonic()
    send(pool)
    assert time.monotonic() - started >= 0.5
    assert len(server.messages) == 1 and proxy.fired == ["stall at RCPT"]


def test_stall_now_holds_every_direction(smtp_server, fault_proxy, open_pool) -> None:
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool, socketTimeout=300)
    send(pool, "warm")
    proxy.stall(1.0)
    with pytest.raises(DeliveryError) as caught:
        send(pool, "stalled")
    assert caught.value.transient is True and "timed out after 0.3s" in caught.value.message
    assert caught.value.outcome_unknown is False  # stalled at MAIL, long before any data


def test_latency_is_added_to_every_exchange(smtp_server, fault_proxy, open_pool) -> None:
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool)
    proxy.latency = 0.05
    started = time.monotonic()
    send(pool)
    # greeting, then EHLO, MAIL, RCPT, DATA and the data each there and back: 11 delayed chunks
    assert time.monotonic() - started >= 11 * 0.05
    proxy.heal()
    assert proxy.latency == 0.0


def test_heal_disarms_faults(smtp_server, fault_proxy, open_pool) -> None:
    server, proxy, pool = plaintext(smtp_server, fault_proxy, open_pool)
    proxy.cut_at("DATA", times=None)
    proxy.heal()
    send(pool)
    assert len(server.messages) == 1 and proxy.fired == []


def test_stop_closes_everything_and_frees_the_port(smtp_server) -> None:
    server = smtp_server(tls="none", auth=False)
    before = threading.active_count()
    proxy = FaultProxy(server.host, server.port, max_connections=2).start()
    clients = [socket.create_connection((proxy.host, proxy.port)) for _ in range(3)]
    try:
        for client in clients[:2]:
            assert client.recv(100).startswith(b"220")
        clients[2].settimeout(5)
        with pytest.raises((ConnectionResetError, OSError)) as third:
            if clients[2].recv(100) == b"":
                raise ConnectionResetError("closed")
        assert third.value is not None  # beyond max_connections: reset
        assert proxy.active_connections == 2
        proxy.stop()
        for client in clients[:2]:
            client.settimeout(5)
            assert client.recv(100) == b""  # cut
        assert threading.active_count() <= before
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((proxy.host, proxy.port), timeout=1)
        assert server.wait_until_no_connections()
    finally:
        for client in clients:
            client.close()
        proxy.stop()  # idempotent


def test_points_are_checked() -> None:
    proxy = FaultProxy("127.0.0.1", 9)
    try:
        with pytest.raises(ValueError):
            proxy.cut_at("end of data")
        with pytest.raises(ValueError):
            proxy.stall_at("MAIL", 1, times=0)
    finally:
        proxy.stop()
