"""Local receivers for lifecycle events, spoken to by the real client libraries over plaintext gRPC on
127.0.0.1: a Pub/Sub-compatible `google.pubsub.v1.Publisher/Publish` and an Eventarc
`google.cloud.eventarc.publishing.v1.Publisher/PublishEvents`. Each records what it received.

    receiver = EventReceiver.pubsub()          # or EventReceiver.eventarc()
    receiver.start()                           # receiver.endpoint == "127.0.0.1:<port>"
    ... PUBSUB_ENDPOINT=receiver.endpoint ...
    receiver.events                            # [CloudEvent dicts], in arrival order
    receiver.fail_with = grpc.StatusCode.UNAVAILABLE   # answer every call with that status
    receiver.hang = True                       # accept every call, never answer (the client's deadline ends it)
    receiver.stop()                            # nothing listens: a client gets "connection refused"
    receiver.start()                           # back on the same port (held meanwhile: see stop())
    receiver.close()                           # stopped, and the port given back

Fixtures: `pubsub_receiver`, `eventarc_receiver` (started, closed after the test). Import them into a
test module (`from tests.support.pubsub import pubsub_receiver`).

A Pub/Sub message becomes a CloudEvent by the CloudEvents Pub/Sub binding's binary mode: `ce-*`
attributes are the context attributes, `content-type` the datacontenttype, the data is the JSON payload.
An Eventarc `text_events` entry is a structured JSON CloudEvent as it stands.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.cloud.eventarc_publishing_v1.types import PublishEventsRequest, PublishEventsResponse
from google.pubsub_v1.types import PublishRequest, PublishResponse

PUBLISH = "/google.pubsub.v1.Publisher/Publish"
PUBLISH_EVENTS = "/google.cloud.eventarc.publishing.v1.Publisher/PublishEvents"


def _from_pubsub(request: PublishRequest) -> list[dict[str, Any]]:
    events = []
    for message in request.messages:
        attributes = dict(message.attributes)
        event: dict[str, Any] = {key[3:]: value for key, value in attributes.items() if key.startswith("ce-")}
        event["datacontenttype"] = attributes.get("content-type")
        event["data"] = json.loads(message.data) if message.data else None
        event["_destination"] = request.topic
        events.append(event)
    return events


def _from_eventarc(request: PublishEventsRequest) -> list[dict[str, Any]]:
    return [{**json.loads(text), "_destination": request.channel} for text in request.text_events]


class EventReceiver:
    def __init__(self, method: str, request_type: Any, response: Any, decode) -> None:
        self.method, self._request_type, self._response, self._decode = method, request_type, response, decode
        self.events: list[dict[str, Any]] = []
        self.calls = 0
        self.fail_with: grpc.StatusCode | None = None
        self.hang = False
        self.endpoint = ""
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._port = 0
        self._placeholder: socket.socket | None = None

    @classmethod
    def pubsub(cls) -> EventReceiver:
        return cls(PUBLISH, PublishRequest, lambda request: PublishResponse(
            message_ids=[str(n) for n in range(len(request.messages))]), _from_pubsub)

    @classmethod
    def eventarc(cls) -> EventReceiver:
        return cls(PUBLISH_EVENTS, PublishEventsRequest, lambda request: PublishEventsResponse(), _from_eventarc)

    def _handle(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.calls += 1
            hang = self.hang
        if hang:
            # Received and never answered: the call ends when the client gives up (its deadline) or the
            # receiver stops; nothing is recorded as received.
            while context.is_active() and self._server is not None:
                time.sleep(0.02)
            context.abort(grpc.StatusCode.CANCELLED, "the test receiver never answered")
        with self._lock:
            if self.fail_with is not None:
                context.abort(self.fail_with, "injected by the test receiver")
            self.events.extend(self._decode(request))
        return self._response(request)

    def start(self) -> EventReceiver:
        handler = grpc.method_handlers_generic_handler(self.method.split("/")[1], {
            self.method.split("/")[2]: grpc.unary_unary_rpc_method_handler(
                self._handle,
                request_deserializer=self._request_type.deserialize,
                response_serializer=lambda message: type(message).serialize(message),
            ),
        })
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handler,))
        # The same port again after stop() + start(), so a client's channel reconnects to it.
        self._release_port()
        self._port = server.add_insecure_port(f"127.0.0.1:{self._port}")
        server.start()
        self._server = server
        self.endpoint = f"127.0.0.1:{self._port}"
        return self

    def stop(self) -> None:
        """Nothing answers any more: a client's connection is refused. The port stays this receiver's (a bound
        socket that does not listen), so start() gets the same one back: on a busy machine another process's
        server or connection could otherwise take the freed port in between, and start() would fail or
        share the port with a stranger."""
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
            self._hold_port()

    def close(self) -> None:
        self.stop()
        self._release_port()

    def _hold_port(self) -> None:
        # Without SO_REUSEADDR nobody else can bind the port; that fails while the stopped server's own
        # connections are in TIME_WAIT, and then SO_REUSEADDR still keeps out binders that do not set it.
        for reuse in (False, True):
            placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if reuse:
                placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                placeholder.bind(("127.0.0.1", self._port))
            except OSError:
                placeholder.close()
                continue
            self._placeholder = placeholder
            return

    def _release_port(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def types(self, subject: str | None = None) -> list[str]:
        """The event types received (short names), optionally for one document id only."""
        with self._lock:
            return [event["type"].rpartition(".")[2] for event in self.events
                    if subject is None or event.get("subject") == subject]


@pytest.fixture
def pubsub_receiver() -> Iterator[EventReceiver]:
    receiver = EventReceiver.pubsub().start()
    yield receiver
    receiver.close()


@pytest.fixture
def eventarc_receiver() -> Iterator[EventReceiver]:
    receiver = EventReceiver.eventarc().start()
    yield receiver
    receiver.close()
