"""Chaining: with senders waiting for the connection, one message's data and the next message's
envelope go in one write (about 1 round trip per message); the pool serves waiters first come,
first served, within maxConnections; a failure of one message never corrupts the next."""

from __future__ import annotations

import threading
import time

import pytest

from mailer.transport import DeliveryError, SendResult

from tests.support.smtp import HANG_UP, Behaviour

from .helpers import SENDER, make_message


def held(**behaviour) -> Behaviour:
    """A server whose greeting waits for queue_senders: the first sender holds its fresh connection
    until the others are queued behind it, however long a loaded machine takes to start them."""
    return Behaviour(greeting_gate=threading.Event(), **behaviour)


def queue_senders(pool, jobs, server) -> tuple[list[threading.Thread], dict[int, object]]:
    """Start one thread per job, each only once the previous one is in the pool (the first holds
    the slot, the rest are queued in this order), then let the server greet the first (held()).
    jobs: (recipients, subject). Returns the threads and a dict index -> SendResult or exception."""
    outcomes: dict[int, object] = {}

    def run(index: int, recipients: list[str], subject: str) -> None:
        try:
            outcomes[index] = pool.send(SENDER, recipients, make_message(subject))
        except Exception as exc:  # asserted by the tests
            outcomes[index] = exc

    threads = []
    for index, (recipients, subject) in enumerate(jobs):
        thread = threading.Thread(target=run, args=(index, recipients, subject))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5
        while index > 0 and pool.waiting < index and time.monotonic() < deadline:
            time.sleep(0.002)
        if index > 0:
            assert pool.waiting == index, "the senders did not queue up behind the first"
    server.behaviour.greeting_gate.set()
    return threads, outcomes


def join(threads) -> None:
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()


def test_chained_messages_cost_one_round_trip_each_and_are_served_in_order(smtp_server, open_pool) -> None:
    server = smtp_server(tls="none", auth=False, pipelining=True, behaviour=held())
    pool = open_pool(server.uri(maxConnections=1))
    count = 16
    threads, outcomes = queue_senders(pool, [(["ada@example.com"], f"m{n}") for n in range(count)], server)
    join(threads)
    assert all(isinstance(outcomes[n], SendResult) for n in range(count)), outcomes
    assert [m.message["Subject"] for m in server.messages] == [f"m{n}" for n in range(count)]  # FIFO
    assert server.connections == 1
    # EHLO, the first envelope, then one round trip per message: its data with the next envelope
    # (the last message's data goes alone). Without chaining this would be 2 + 2 * count.
    assert server.round_trips == 2 + count, server.round_trips
    assert len({outcome.response for outcome in outcomes.values()}) == count


def test_without_pipelining_queued_messages_are_not_chained(smtp_server, open_pool) -> None:
    server = smtp_server(tls="none", auth=False, pipelining=False, behaviour=held())
    pool = open_pool(server.uri(maxConnections=1))
    threads, outcomes = queue_senders(pool, [(["ada@example.com"], f"m{n}") for n in range(4)], server)
    join(threads)
    assert [m.message["Subject"] for m in server.messages] == ["m0", "m1", "m2", "m3"]
    assert server.round_trips == 1 + 4 * 4  # EHLO, then MAIL, RCPT, DATA, data per message


def test_sixteen_senders_stay_within_max_connections(smtp_server, open_pool) -> None:
    server = smtp_server(pipelining=True, behaviour=Behaviour(slow_reply_at="DATA", slow_reply_seconds=0.05))
    pool = open_pool(server.uri("user", "pass", maxConnections=4))
    outcomes, barrier = [], threading.Barrier(16)

    def run(number: int) -> None:
        barrier.wait()
        try:
            outcomes.append(pool.send(SENDER, ["ada@example.com", "alan@example.com"], make_message(f"m{number}")))
        except Exception as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    join(threads)
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert sorted(m.message["Subject"] for m in server.messages) == sorted(f"m{n}" for n in range(16))
    assert all(m.rcpt_tos == ["ada@example.com", "alan@example.com"] for m in server.messages)
    assert server.max_active_connections <= 4
    assert server.connections == 4  # every slot's connection was reused, none opened beyond them
    assert pool.waiting == 0 and pool._active == 0 and len(pool._idle) == 4


@pytest.mark.parametrize("failure, expected", [
    ("554 5.7.1 Spam", dict(message="SMTP 554 5.7.1 Spam", transient=False, outcome_unknown=False)),
    ("451 4.3.0 Try later", dict(message="SMTP 451 4.3.0 Try later", transient=True, outcome_unknown=False)),
    (HANG_UP, dict(transient=True, outcome_unknown=True)),
])
def test_a_failed_message_in_a_chain_does_not_affect_the_next(smtp_server, open_pool, failure, expected) -> None:
    # m1's final reply fails after m2's envelope was written behind m1's data.
    behaviour = held(data_reply_sequence=[None, failure, None],
                     rcpt_replies={"gone@example.com": "550 5.1.1 No such user"})
    server = smtp_server(tls="none", auth=False, pipelining=True, behaviour=behaviour)
    pool = open_pool(server.uri(maxConnections=1))
    threads, outcomes = queue_senders(pool, [
        (["ada@example.com"], "m0"),
        (["ada@example.com"], "m1"),
        (["ada@example.com", "gone@example.com", "alan@example.com"], "m2"),
        (["grace@example.com"], "m3"),
    ], server)
    join(threads)
    assert isinstance(outcomes[0], SendResult)
    error = outcomes[1]
    assert isinstance(error, DeliveryError), error
    for name, value in expected.items():
        assert getattr(error, name) == value, (name, error)
    m2 = outcomes[2]
    assert isinstance(m2, SendResult), m2
    assert m2.accepted == ["ada@example.com", "alan@example.com"] and m2.rejected == ["gone@example.com"]
    assert isinstance(outcomes[3], SendResult) and outcomes[3].accepted == ["grace@example.com"]
    delivered = [m.message["Subject"] for m in server.messages if m.response is not None]
    assert delivered == ["m0", "m2", "m3"]  # each once, none lost, none twice
    assert server.messages[-2].rcpt_tos == ["ada@example.com", "alan@example.com"]


def test_a_refused_message_in_a_chain_does_not_affect_the_next(smtp_server, open_pool) -> None:
    behaviour = held(rcpt_replies={"gone@example.com": "550 5.1.1 No such user"})
    server = smtp_server(tls="none", auth=False, pipelining=True, behaviour=behaviour)
    pool = open_pool(server.uri(maxConnections=1))
    threads, outcomes = queue_senders(pool, [
        (["ada@example.com"], "m0"), (["gone@example.com"], "m1"), (["grace@example.com"], "m2")], server)
    join(threads)
    assert isinstance(outcomes[1], DeliveryError) and outcomes[1].rejected == ["gone@example.com"]
    assert outcomes[1].message.startswith("SMTP server refused all 1 recipient(s)")
    assert isinstance(outcomes[2], SendResult) and outcomes[2].accepted == ["grace@example.com"]
    assert [m.message["Subject"] for m in server.messages] == ["m0", "m2"]


def test_connection_lost_after_a_chained_envelope_retries_the_next_on_a_fresh_connection(
        smtp_server, fault_proxy, open_pool) -> None:
    server = smtp_server(tls="none", auth=False, pipelining=True, behaviour=held())
    proxy = fault_proxy(server)
    pool = open_pool(proxy.uri(maxConnections=1))
    proxy.cut_at("after end of data")  # m0 arrives, its reply is lost; m1's envelope went with it
    threads, outcomes = queue_senders(pool, [(["ada@example.com"], "m0"), (["ada@example.com"], "m1")], server)
    join(threads)
    assert isinstance(outcomes[0], DeliveryError) and outcomes[0].outcome_unknown is True
    assert isinstance(outcomes[1], SendResult), outcomes[1]
    assert [m.message["Subject"] for m in server.messages] == ["m0", "m1"]
    assert proxy.connections == 2


def test_a_waiter_that_times_out_leaves_the_queue(smtp_server, open_pool) -> None:
    # The holder waits for its MAIL reply (before any data write, so nothing claims the waiter).
    server = smtp_server(tls="none", auth=False, pipelining=True,
                         behaviour=Behaviour(slow_reply_at="MAIL", slow_reply_seconds=1.0))
    pool = open_pool(server.uri(maxConnections=1, connectionTimeout=200))
    holder = threading.Thread(target=pool.send, args=(SENDER, ["ada@example.com"], make_message("held")))
    holder.start()
    while server.active_connections == 0:
        time.sleep(0.01)
    with pytest.raises(DeliveryError) as caught:
        pool.send(SENDER, ["ada@example.com"], make_message("late"))
    holder.join(timeout=10)
    assert caught.value.transient is True and pool.waiting == 0
    assert [m.message["Subject"] for m in server.messages] == ["held"]
    pool.send(SENDER, ["ada@example.com"], make_message("after"))
    assert server.connections == 1


def test_a_claimed_waiter_is_served_even_after_its_wait_would_have_timed_out(smtp_server, open_pool) -> None:
    # The holder's data went out with the waiter's envelope behind it: the waiter is no longer
    # waiting for a slot but for the holder's final reply, bounded by the socket timeout.
    # (the held greeting lets the second sender queue before the first one's data write)
    server = smtp_server(tls="none", auth=False, pipelining=True,
                         behaviour=held(slow_reply_at="DATA", slow_reply_seconds=0.8))
    pool = open_pool(server.uri(maxConnections=1, connectionTimeout=300))
    threads, outcomes = queue_senders(pool, [(["ada@example.com"], "held"), (["ada@example.com"], "chained")], server)
    join(threads)
    assert all(isinstance(o, SendResult) for o in outcomes.values()), outcomes
    assert [m.message["Subject"] for m in server.messages] == ["held", "chained"]
