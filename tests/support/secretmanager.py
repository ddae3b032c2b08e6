"""A local Secret Manager: a gRPC server on 127.0.0.1 speaking google.cloud.secretmanager.v1's
AccessSecretVersion, AddSecretVersion, DestroySecretVersion and GetSecret, so the function's real
SecretManagerServiceClient (pointed at it by SECRET_MANAGER_ENDPOINT) is what the tests exercise.

    manager = LocalSecretManager().start()
    manager.set("projects/p/secrets/smtp-password", "first")   # adds a version (also: rotating it)
    manager.latest("projects/p/secrets/smtp-password")         # "first" (the newest ENABLED version)
    manager.versions(resource) / manager.active(resource)      # versions ever added / still ENABLED
    manager.state(resource, 1)                                 # "ENABLED" or "DESTROYED"
    manager.accesses / manager.adds / manager.destroys         # calls per secret resource
    manager.destroyed                                          # every DestroySecretVersion name, in order
    manager.fail_with = grpc.StatusCode.UNAVAILABLE            # every call fails with that code
    manager.deny_add = True                                    # AddSecretVersion: PERMISSION_DENIED
    manager.deny_destroy = True                                # DestroySecretVersion: PERMISSION_DENIED

As the real service does: a destroyed version keeps its number but not its data; accessing it is
FAILED_PRECONDITION, destroying it again is FAILED_PRECONDITION, an unknown version is NOT_FOUND, and
`latest` resolves to the newest ENABLED version. Destroying by the `latest` alias is refused here
(INVALID_ARGUMENT), so a test fails loudly if the function ever tries it.

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
ENABLED, DESTROYED = "ENABLED", "DESTROYED"


class _Version:
    def __init__(self, data: bytes) -> None:
        self.data: bytes | None = data
        self.state = ENABLED


class LocalSecretManager:
    def __init__(self) -> None:
        self._versions: dict[str, list[_Version]] = {}  # secret resource -> versions, version n at n-1
        self._lock = threading.Lock()
        self.accesses: Counter[str] = Counter()
        self.adds: Counter[str] = Counter()
        self.destroys: Counter[str] = Counter()
        self.destroyed: list[str] = []  # every DestroySecretVersion request's name, refused or not
        self.fail_with: grpc.StatusCode | None = None
        self.deny_add = False
        self.deny_destroy = False
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                self._access, request_deserializer=sm.AccessSecretVersionRequest.deserialize,
                response_serializer=sm.AccessSecretVersionResponse.serialize),
            "AddSecretVersion": grpc.unary_unary_rpc_method_handler(
                self._add, request_deserializer=sm.AddSecretVersionRequest.deserialize,
                response_serializer=sm.SecretVersion.serialize),
            "DestroySecretVersion": grpc.unary_unary_rpc_method_handler(
                self._destroy, request_deserializer=sm.DestroySecretVersionRequest.deserialize,
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
            versions.append(_Version(value.encode("utf-8")))
            return len(versions)

    def latest(self, resource: str) -> str | None:
        """The newest ENABLED version's value (what `versions/latest` reads)."""
        with self._lock:
            number = self._latest_number(resource)
            data = self._versions[resource][number - 1].data if number else None
            return data.decode("utf-8") if data is not None else None

    def versions(self, resource: str) -> int:
        """How many versions were ever added (destroyed ones included)."""
        with self._lock:
            return len(self._versions.get(resource, []))

    def active(self, resource: str) -> int:
        """How many versions are ENABLED (what Secret Manager bills for)."""
        with self._lock:
            return sum(v.state == ENABLED for v in self._versions.get(resource, []))

    def state(self, resource: str, number: int) -> str:
        with self._lock:
            return self._versions[resource][number - 1].state

    def _latest_number(self, resource: str) -> int:
        """The newest ENABLED version's number, 0 if none (the caller holds the lock)."""
        versions = self._versions.get(resource, [])
        for number in range(len(versions), 0, -1):
            if versions[number - 1].state == ENABLED:
                return number
        return 0

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
            if version == "latest":
                number = self._latest_number(secret)
                if not number:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"Secret [{secret}] has no versions in ENABLED state.")
            else:
                number = int(version) if version.isdigit() else 0
            if not 1 <= number <= len(versions):
                context.abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found.")
            entry = versions[number - 1]
            if entry.state != ENABLED:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"Secret Version [{secret}/versions/{number}] is in {entry.state} state.")
            data = entry.data
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
            self._versions[request.parent].append(_Version(bytes(request.payload.data)))
            number = len(self._versions[request.parent])
        created = timestamp_pb2.Timestamp()
        created.GetCurrentTime()
        return sm.SecretVersion(name=f"{request.parent}/versions/{number}", create_time=created,
                                state=sm.SecretVersion.State.ENABLED)

    def _destroy(self, request: sm.DestroySecretVersionRequest, context: grpc.ServicerContext) -> sm.SecretVersion:
        self._check(context)
        secret, _, version = request.name.partition("/versions/")
        with self._lock:
            self.destroyed.append(request.name)
            self.destroys[secret] += 1
        if self.deny_destroy:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"Permission 'secretmanager.versions.destroy' denied for resource '{request.name}'")
        if not version.isdigit():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Destroy needs a version number, not [{version}] (this local server refuses aliases).")
        with self._lock:
            versions = self._versions.get(secret)
            number = int(version)
            if not versions or not 1 <= number <= len(versions):
                context.abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found.")
            entry = versions[number - 1]
            if entry.state == DESTROYED:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"Secret Version [{request.name}] is in DESTROYED state.")
            entry.state, entry.data = DESTROYED, None
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        return sm.SecretVersion(name=f"{secret}/versions/{number}", destroy_time=now,
                                state=sm.SecretVersion.State.DESTROYED)

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
