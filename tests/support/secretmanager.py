"""A local Secret Manager: a gRPC server on 127.0.0.1 speaking google.cloud.secretmanager.v1's
AccessSecretVersion, AddSecretVersion and GetSecret, so the function's real SecretManagerServiceClient
(pointed at it by SECRET_MANAGER_ENDPOINT) is what the tests exercise.

    manager = LocalSecretManager().start()
    manager.set("projects/p/secrets/smtp-password", "first")   # adds a version (also: rotating it)
    manager.latest("projects/p/secrets/smtp-password")         # "first"
    manager.accesses / manager.adds                            # calls per secret resource
    manager.fail_with = grpc.StatusCode.UNAVAILABLE            # every call fails with that code
    manager.deny_add = True                                    # AddSecretVersion: PERMISSION_DENIED

Messages are serialized with the proto-plus types the client library ships (their serialize /
deserialize), over grpc's generic handlers: no generated stubs needed.

Fixture: secret_manager -> a started LocalSecretManager, stopped at test end (import it into a test
module, or register this module as a plugin).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.cloud.secretmanager_v1 import types as sm
from google.protobuf import timestamp_pb2

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"


class LocalSecretManager:
    def __init__(self) -> None:
        self._versions: dict[str, list[bytes]] = {}  # secret resource -> payloads, version n at n-1
        self._lock = threading.Lock()
        self.accesses: Counter[str] = Counter()
        self.adds: Counter[str] = Counter()
        self.fail_with: grpc.StatusCode | None = None
        self.deny_add = False
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                self._access, request_deserializer=sm.AccessSecretVersionRequest.deserialize,
                response_serializer=sm.AccessSecretVersionResponse.serialize),
            "AddSecretVersion": grpc.unary_unary_rpc_method_handler(
                self._add, request_deserializer=sm.AddSecretVersionRequest.deserialize,
                response_serializer=sm.SecretVersion.serialize),
            "GetSecret": grpc.unary_unary_rpc_method_handler(
                self._get_secret, request_deserializer=sm.GetSecretRequest.deserialize,
                response_serializer=sm.Secret.serialize),
        }
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalSecretManager:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)

    # -- what tests use ------------------------------------------------------------------------------

    def set(self, resource: str, value: str) -> int:
        """Add `value` as the secret's newest version (creating the secret); returns its number."""
        with self._lock:
            versions = self._versions.setdefault(resource, [])
            versions.append(value.encode("utf-8"))
            return len(versions)

    def latest(self, resource: str) -> str | None:
        with self._lock:
            versions = self._versions.get(resource)
            return versions[-1].decode("utf-8") if versions else None

    def versions(self, resource: str) -> int:
        with self._lock:
            return len(self._versions.get(resource, []))

    # -- the service ---------------------------------------------------------------------------------

    def _check(self, context: grpc.ServicerContext) -> None:
        if self.fail_with is not None:
            context.abort(self.fail_with, "injected failure")

    def _access(self, request: sm.AccessSecretVersionRequest, context: grpc.ServicerContext) -> sm.AccessSecretVersionResponse:
        self._check(context)
        secret, _, version = request.name.partition("/versions/")
        with self._lock:
            self.accesses[secret] += 1
            versions = self._versions.get(secret)
            if not versions:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Secret [{secret}] not found or has no versions.")
            number = len(versions) if version == "latest" else int(version) if version.isdigit() else 0
            if not 1 <= number <= len(versions):
                context.abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found.")
            data = versions[number - 1]
        return sm.AccessSecretVersionResponse(name=f"{secret}/versions/{number}", payload=sm.SecretPayload(data=data))

    def _add(self, request: sm.AddSecretVersionRequest, context: grpc.ServicerContext) -> sm.SecretVersion:
        self._check(context)
        if self.deny_add:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"Permission 'secretmanager.versions.add' denied for resource '{request.parent}'")
        with self._lock:
            self.adds[request.parent] += 1
            if request.parent not in self._versions:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Secret [{request.parent}] not found.")
            self._versions[request.parent].append(bytes(request.payload.data))
            number = len(self._versions[request.parent])
        created = timestamp_pb2.Timestamp()
        created.GetCurrentTime()
        return sm.SecretVersion(name=f"{request.parent}/versions/{number}", create_time=created,
                                state=sm.SecretVersion.State.ENABLED)

    def _get_secret(self, request: sm.GetSecretRequest, context: grpc.ServicerContext) -> sm.Secret:
        self._check(context)
        with self._lock:
            if request.name not in self._versions:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Secret [{request.name}] not found.")
        return sm.Secret(name=request.name)


@pytest.fixture
def secret_manager() -> Iterator[LocalSecretManager]:
    """A started local Secret Manager; the function's cached clients and values are forgotten
    before and after, since each test's server has its own port and contents."""
    from mailer import credentials

    credentials.reset_for_tests()
    manager = LocalSecretManager().start()
    try:
        yield manager
    finally:
        credentials.reset_for_tests()
        manager.stop()
