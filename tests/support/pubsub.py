"""Local receivers for lifecycle events, spoken to by the real client libraries over plaintext gRPC on
127.0.0.1: a Pub/Sub-compatible `google.pubsub.v1.Publisher/Publish` and an Eventarc
`google.cloud.eventarc.publishing.v1.Publisher/PublishEvents`. Each records what it received.

    receiver = EventReceiver.pubsub()          # or EventReceiver.eventarc()
    receiver.start()                           # receiver.endpoint == "127.0.0.1:<port>"
    ... PUBSUB_ENDPOINT=receiver.endpoint ...
    receiver.events                            # [CloudEvent dicts], in arrival order
    receiver.fail_with = grpc.StatusCode.UNAVAILABLE   # answer every call with that status
    receiver.stop()                            # nothing listens: a client gets "connection refused"

Fixtures: `pubsub_receiver`, `eventarc_receiver` (started, stopped after the test). Import them into a
test module (`from tests.support.pubsub import pubsub_receiver`).

A Pub/Sub message becomes a CloudEvent by the CloudEvents Pub/Sub binding's binary mode: `ce-*`
attributes are the context attributes, `content-type` the datacontenttype, the data is the JSON payload.
An Eventarc `text_events` entry is a structured JSON CloudEvent as it stands.
"""

from __future__ import annotations

import json
import threading
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
        self.endpoint = ""
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._port = 0

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
        self._port = server.add_insecure_port(f"127.0.0.1:{self._port}")
        server.start()
        self._server = server
        self.endpoint = f"127.0.0.1:{self._port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def types(self, subject: str | None = None) -> list[str]:
        """The event types received (short names), optionally for one document id only."""
        with self._lock:
            return [event["type"].rpartition(".")[2] for event in self.events
                    if subject is None or event.get("subject") == subject]


@pytest.fixture
def pubsub_receiver() -> Iterator[EventReceiver]:
    receiver = EventReceiver.pubsub().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def eventarc_receiver() -> Iterator[EventReceiver]:
    receiver = EventReceiver.eventarc().start()
    yield receiver
    receiver.stop()
