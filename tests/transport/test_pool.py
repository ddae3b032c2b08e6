"""Connection pooling: reuse, recycling, stale connections, concurrency limits, pool_for's cache."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from mailer import transport
from mailer.transport import DeliveryError, SmtpConfigError, pool_for
from tests.support.smtp import Behaviour
from tests.transport.helpers import RECIPIENT, SENDER, make_message


def send(pool, subject: str = "Hello"):
    return pool.send(SENDER, [RECIPIENT], make_message(subject))


def test_two_sends_reuse_one_connection(smtp_server, open_pool) -> None:
    server = smtp_server()
    pool = open_pool(server.uri("user", "pass"))
    send(pool, "one")
    send(pool, "two")
    assert server.connections == 1
    assert [m.session for m in server.messages] == [1, 1]
    assert len(server.auth_attempts) == 1  # TLS and AUTH were done once


def test_max_messages_recycles_the_connection(smtp_server, open_pool) -> None:
    server = smtp_server()
    pool = open_pool(server.uri("user", "pass", maxMessages=1))
    send(pool, "one")
    send(pool, "two")
    assert server.connections == 2
    assert [m.session for m in server.messages] == [1, 2]


def test_pool_false_connects_per_message_and_quits(smtp_server, open_pool) -> None:
    server = smtp_server()
    pool = open_pool(server.uri("user", "pass", pool=False))
    send(pool, "one")
    assert server.wait_until_no_connections()  # QUIT: nothing is kept open
    send(pool, "two")
    assert server.connections == 2


def test_connection_dropped_while_idle_is_replaced_without_failing(smtp_server, open_pool, caplog) -> None:
    server = smtp_server()
    pool = open_pool(server.uri("user", "pass"))
    send(pool, "before")
    server.drop_connections()  # as a server does with an idle client
    with caplog.at_level(logging.DEBUG, logger="mailer.transport"):
        result = send(pool, "after")
    assert result.accepted == [RECIPIENT]
    assert server.connections == 2
    assert [m.message["Subject"] for m in server.messages] == ["before", "after"]
    # Seen as dead before use (no wasted MAIL FROM on it), not via the retry path.
    messages = [r.getMessage() for r in caplog.records]
    assert f"dropping idle SMTP connection to {server.address}" in messages
    assert not any("reconnecting" in m for m in messages)


def test_connection_dropped_silently_while_idle_is_replaced(smtp_server, open_pool) -> None:
    server = smtp_server()
    pool = open_pool(server.uri("user", "pass"))
    send(pool, "before")
    server.drop_connections(reply=None)
    send(pool, "after")
    assert server.connections == 2 and len(server.messages) == 2


def test_reused_connection_closed_at_mail_is_retried_once_on_a_fresh_one(smtp_server, open_pool, caplog) -> None:
    # The race a liveness check cannot see: the server hangs up just as MAIL FROM is sent.
    server = smtp_server(behaviour=Behaviour(close_reused_session_at_mail=True))
    pool = open_pool(server.uri("user", "pass"))
    send(pool, "first")
    with caplog.at_level(logging.DEBUG, logger="mailer.transport"):
        result = send(pool, "second")
    assert result.accepted == [RECIPIENT]
    assert server.connections == 2
    assert [(m.message["Subject"], m.session) for m in server.messages] == [("first", 1), ("second", 2)]
    assert any("closed by the server; reconnecting" in r.getMessage() for r in caplog.records)


def test_fresh_connection_closed_at_mail_is_not_retried(smtp_server, open_pool) -> None:
    server = smtp_server(behaviour=Behaviour(close_with_421_at="MAIL"))
    pool = open_pool(server.uri("user", "pass", maxMessages=1))
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    assert caught.value.transient is True and server.connections == 1


def test_connection_idle_too_long_is_not_reused(smtp_server, open_pool, monkeypatch) -> None:
    server = smtp_server()
    pool = open_pool(server.uri("user", "pass"))
    send(pool, "one")
    monkeypatch.setattr(transport, "IDLE_RECONNECT_SECONDS", -1.0)  # every idle connection is too old
    send(pool, "two")
    assert server.connections == 2


def test_a_connection_that_had_an_error_is_not_reused(smtp_server, open_pool) -> None:
    server = smtp_server(behaviour=Behaviour(data_reply="554 5.7.1 Rejected"))
    pool = open_pool(server.uri("user", "pass"))
    with pytest.raises(DeliveryError):
        send(pool, "one")
    server.behaviour = Behaviour()
    send(pool, "two")
    assert server.connections == 2


def test_eight_threads_never_exceed_max_connections_and_all_arrive(smtp_server, open_pool) -> None:
    # A slow final reply keeps each transaction open long enough for the threads to overlap.
    server = smtp_server(behaviour=Behaviour(slow_reply_at="DATA", slow_reply_seconds=0.1))
    pool = open_pool(server.uri("user", "pass", maxConnections=2))
    results, errors = [], []
    start = threading.Barrier(8)

    def worker(number: int) -> None:
        start.wait()
        try:
            results.append(send(pool, f"message {number}"))
        except Exception as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 8
    assert sorted(m.message["Subject"] for m in server.messages) == sorted(f"message {n}" for n in range(8))
    assert server.max_active_connections == 2  # both slots were used, never a third
    assert server.connections == 2  # and the two connections were reused


def test_waiting_for_a_free_connection_times_out_as_transient(smtp_server, open_pool) -> None:
    server = smtp_server(behaviour=Behaviour(slow_reply_at="DATA", slow_reply_seconds=1.5))
    pool = open_pool(server.uri("user", "pass", maxConnections=1, connectionTimeout=200))
    holder = threading.Thread(target=send, args=(pool, "holds the only slot"))
    holder.start()
    try:
        while server.active_connections == 0 and holder.is_alive():
            threading.Event().wait(0.01)
        with pytest.raises(DeliveryError) as caught:
            send(pool, "waits")
    finally:
        holder.join(timeout=10)
    assert caught.value.transient is True
    assert caught.value.message == (
        f"no free SMTP connection to {server.address} within 0.2s (maxConnections=1)")
    assert server.connections == 1


def test_closed_pool_still_sends_without_keeping_connections(smtp_server, open_pool) -> None:
    server = smtp_server()
    pool = open_pool(server.uri("user", "pass"))
    send(pool, "one")
    pool.close()
    assert server.wait_until_no_connections()
    send(pool, "two")
    assert server.wait_until_no_connections() and server.connections == 2


def test_debug_logs_name_host_and_port_only(smtp_server, open_pool, caplog) -> None:
    server = smtp_server()
    pool = open_pool(server.uri("user", "pass", maxMessages=2))
    with caplog.at_level(logging.DEBUG, logger="mailer.transport"):
        send(pool, "one")
        send(pool, "two")
    lines = [r.getMessage() for r in caplog.records if r.name == "mailer.transport"]
    assert f"connecting to SMTP server {server.address}" in lines
    assert f"reusing SMTP connection to {server.address}" in lines
    assert f"recycling SMTP connection to {server.address} after 2 messages" in lines
    assert not any(addr in line for line in lines for addr in (SENDER, RECIPIENT, "Hello", "user"))


class TestPoolFor:
    def test_same_inputs_return_the_same_warm_pool(self, smtp_server) -> None:
        server = smtp_server()
        uri = server.uri("user")
        pool = pool_for(uri, "pass")
        try:
            assert pool_for(uri, "pass") is pool
            send(pool, "one")
            send(pool_for(uri, "pass"), "two")
            assert server.connections == 1
        finally:
            pool.close()

    def test_a_different_password_builds_a_new_pool_and_closes_the_old(self, smtp_server) -> None:
        server = smtp_server(users={"user": "new"})
        old = pool_for(server.uri("user"), "old")
        new = pool_for(server.uri("user"), "new")
        try:
            assert new is not old
            send(new)
            assert server.messages[0].authenticated_as == "user"
            assert old._closed is True
        finally:
            new.close()

    def test_bad_uri_raises_every_time_and_does_not_poison_later_calls(self, smtp_server) -> None:
        server = smtp_server()
        good = server.uri("user")
        for _ in range(3):
            with pytest.raises(SmtpConfigError, match="unknown option 'bogus'"):
                pool_for(good + "&bogus=1", "pass")
            with pytest.raises(SmtpConfigError):
                pool_for(None, "pass")  # type: ignore[arg-type]
            with pytest.raises(SmtpConfigError):
                pool_for("smtp://", None)
        pool = pool_for(good, "pass")
        try:
            assert send(pool).accepted == [RECIPIENT]
            with pytest.raises(SmtpConfigError):
                pool_for("https://example.com", "pass")
            assert pool_for(good, "pass") is pool  # the bad call did not evict the good pool
        finally:
            pool.close()


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_connections_send_without_nagle_delay(smtp_server, open_pool, tls) -> None:
    # Pipelined writes must leave at once: with Nagle on, each message's tail waits for an ACK.
    server = smtp_server(tls=tls)
    pool = open_pool(server.uri("user", "pass"))
    pool.send(SENDER, [RECIPIENT], make_message("nodelay"))
    (connection,) = pool._idle
    assert connection.client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
