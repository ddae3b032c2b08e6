"""Secrets the function authenticates with: pinned (a secret environment variable, fixed at deploy) or
read at run time from Secret Manager at `versions/latest`, so a rotated secret takes effect without a
redeploy (issue 11).

    SMTP_PASSWORD                       pinned password (the default; unchanged behaviour)
    SMTP_PASSWORD_SECRET                projects/<p>/secrets/<id>: the password, read at run time
    SMTP_OAUTH2_CLIENT_SECRET[_SECRET]  XOAUTH2 client secret, pinned or read at run time
    SMTP_OAUTH2_REFRESH_TOKEN[_SECRET]  XOAUTH2 refresh token, pinned or read at run time; a rotated
                                        refresh token is stored as a new version of that secret, and
                                        the version it replaced is destroyed (Secret Manager bills
                                        per active version; Microsoft rotates on every refresh)
    SECRET_MANAGER_ENDPOINT             host:port of a local Secret Manager (loopback, plaintext gRPC)

A value read from Secret Manager is cached for the life of the process; `reread()` fetches it again
(called once when the server refuses the credentials). google-cloud-secret-manager is imported only
when a *_SECRET variable is set, so the default path's cold start does not grow.

A Secret never shows its value in repr, str, errors or logs: messages name the variable.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mailer.credentials")

# Per call to Secret Manager; a failure is transient (the document is retried), so no client retries.
SECRET_MANAGER_TIMEOUT_SECONDS = 10.0


class CredentialError(Exception):
    """A secret could not be read or used. .message is one line naming the variable, never a value;
    .transient: a later attempt may succeed (Secret Manager or the token endpoint unavailable);
    .code: the gRPC status name when Secret Manager refused (NOT_FOUND, PERMISSION_DENIED, ...)."""

    def __init__(self, message: str, *, transient: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.code = code

    def __str__(self) -> str:
        return self.message


class Secret:
    """One secret value and where it comes from. `name` is the variable that configures it (what
    messages show)."""

    name: str

    def get(self) -> str:
        raise NotImplementedError

    def reread(self, stale: str | None) -> str:
        """The value again, read fresh if the source can change; `stale` is the value that was just
        refused (a concurrent reader that already replaced it spares a second read)."""
        return self.get()

    def store(self, value: str) -> None:
        """Keep a new value (a rotated refresh token) and use it from now on."""
        raise NotImplementedError

    @property
    def runtime(self) -> bool:
        """Read at run time (Secret Manager), as opposed to pinned at deploy."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class PinnedSecret(Secret):
    """A value from the environment. A stored replacement lives in this process only."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self._configured = value  # what identifies it (a stored replacement does not: see __eq__)
        self._value = value
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:
            return self._value

    def store(self, value: str) -> None:
        with self._lock:
            self._value = value
        log.warning(
            "%s is pinned at deploy: the rotated value is kept in this instance's memory only; set "
            "%s_SECRET to have rotated values stored in Secret Manager", self.name, self.name,
        )

    # Compared by the configured value: the settings of the next invocation (the same environment) must
    # find the pool, and its token source, that holds a rotated replacement.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, PinnedSecret) and (other.name, other._configured) == (self.name, self._configured)

    def __hash__(self) -> int:
        return hash((self.name, self._configured))


# A destroy refused with these means the version is already destroyed or disabled (another instance
# replaced it first) or gone: nothing left to do, nothing to log above debug.
_ALREADY_GONE = frozenset({"FAILED_PRECONDITION", "NOT_FOUND"})


class ManagedSecret(Secret):
    """A Secret Manager secret read at `versions/latest`, cached until reread().

    Alongside the value it keeps the numbered version the value came from (AccessSecretVersion's
    response names it: .../versions/7), or the one store() added. store() destroys that version once
    the new one is added: the version this instance itself read or wrote, never `latest` and never one
    it did not see, so a rotation leaves one active version instead of one more each time."""

    def __init__(self, name: str, resource: str, endpoint: str | None = None) -> None:
        self.name = name  # e.g. SMTP_PASSWORD_SECRET
        self.resource = resource  # projects/<p>/secrets/<id>
        self.endpoint = endpoint
        self._value: str | None = None
        self._version: str | None = None  # projects/<p>/secrets/<id>/versions/<n> of the cached value
        self._lock = threading.Lock()

    @property
    def runtime(self) -> bool:
        return True

    def get(self) -> str:
        with self._lock:
            if self._value is None:
                self._value, self._version = self._access()
            return self._value

    def reread(self, stale: str | None) -> str:
        with self._lock:
            if self._value is None or self._value == stale:
                self._value, self._version = self._access()
            return self._value

    def store(self, value: str) -> None:
        """Add `value` as the secret's newest version, then use it, then destroy the version it
        replaced (the one this instance read or added before). If Secret Manager refuses the add, the
        value is still used by this instance (and the failure logged without it) and nothing is
        destroyed; a failed destroy never fails the caller."""
        with self._lock:
            self._value = value
            try:
                added = _call(self, "add_secret_version", request={
                    "parent": self.resource, "payload": {"data": value.encode("utf-8")}})
            except CredentialError as exc:
                reason = exc.message.removeprefix(f"{self.name}: ")
                log.error("could not store the rotated value as a new version of %s: %s; this instance "
                          "keeps using it in memory", self.name, reason)
                # _version stays: it is still the newest version this instance saw, and the one the
                # next successful add replaces.
                return
            replaced, self._version = self._version, _numbered(getattr(added, "name", None))
            current = self._version
        log.info("stored the rotated value as version %s of %s", _number(current) or "?", self.name)
        if replaced is not None and replaced != current:
            self._destroy(replaced)

    def _destroy(self, version: str) -> None:
        """Destroy `version` (a numbered version this instance read or added). Already destroyed or
        disabled (another instance replaced it first) is fine; any other failure is a warning."""
        try:
            _call(self, "destroy_secret_version", request={"name": version})
        except CredentialError as exc:
            if exc.code in _ALREADY_GONE:
                log.debug("version %s of %s was already destroyed or disabled", _number(version), self.name)
                return
            reason = exc.message.removeprefix(f"{self.name}: ")
            log.warning("could not destroy version %s of %s, which the rotated value replaced: %s; it stays "
                        "active (and billed) until destroyed", _number(version), self.name, reason)
            return
        except Exception as exc:  # noqa: BLE001 - cleanup must never fail an email
            log.warning("could not destroy version %s of %s, which the rotated value replaced (%s)",
                        _number(version), self.name, type(exc).__name__)
            return
        log.info("destroyed version %s of %s, which the rotated value replaced", _number(version), self.name)

    def _access(self) -> tuple[str, str | None]:
        """The latest value and the numbered version it came from (None if the answer names none)."""
        response = _call(self, "access_secret_version", request={"name": f"{self.resource}/versions/latest"})
        try:
            value = bytes(response.payload.data).decode("utf-8")
        except UnicodeDecodeError:
            raise CredentialError(f"{self.name}: the latest version is not UTF-8 text", transient=False) from None
        # `echo pw | gcloud secrets versions add --data-file=-` stores a trailing line break: drop one.
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
        if not value:
            raise CredentialError(f"{self.name}: the latest version is empty", transient=False)
        return value, _numbered(response.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ManagedSecret) and (other.name, other.resource, other.endpoint) == (
            self.name, self.resource, self.endpoint)

    def __hash__(self) -> int:
        return hash((self.name, self.resource, self.endpoint))


def _numbered(name: object) -> str | None:
    """`name` if it is a numbered version (projects/<p>/secrets/<id>/versions/<n>), else None: an alias
    such as `latest` is never kept, so it is never destroyed."""
    if not isinstance(name, str):
        return None
    _, found, number = name.rpartition("/versions/")
    return name if found and number.isdigit() else None


def _number(version: str | None) -> str | None:
    return version.rpartition("/versions/")[2] if version else None


@dataclass(frozen=True)
class Credentials:
    """Where each secret of one configuration comes from (None: not configured)."""

    password: Secret | None = None
    oauth2_client_secret: Secret | None = None
    oauth2_refresh_token: Secret | None = None


_clients: dict[str | None, Any] = {}
_clients_lock = threading.Lock()
_secrets: dict[tuple[str, str, str | None], ManagedSecret] = {}


def managed_secret(name: str, resource: str, endpoint: str | None) -> ManagedSecret:
    """The process-wide ManagedSecret for this resource, so its cached value outlives one invocation."""
    key = (name, resource, endpoint)
    with _clients_lock:
        secret = _secrets.get(key)
        if secret is None:
            secret = _secrets[key] = ManagedSecret(name, resource, endpoint)
        return secret


def _client(endpoint: str | None) -> Any:
    """A SecretManagerServiceClient per endpoint, built (and the library imported) on first use."""
    with _clients_lock:
        client = _clients.get(endpoint)
        if client is not None:
            return client
        from google.cloud import secretmanager_v1  # lazily: only runtime-secret deployments pay for it

        if endpoint is None:
            client = secretmanager_v1.SecretManagerServiceClient()  # Application Default Credentials
        else:  # a local server (tests, local stack): plaintext gRPC on loopback, no credentials
            import grpc
            from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
                SecretManagerServiceGrpcTransport,
            )

            transport = SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(endpoint))
            client = secretmanager_v1.SecretManagerServiceClient(transport=transport)
        _clients[endpoint] = client
        return client


def _call(secret: ManagedSecret, method: str, request: dict[str, Any]) -> Any:
    """Call Secret Manager; failures become CredentialError naming the variable (never the value)."""
    from google.api_core import exceptions as gexc

    try:
        client = _client(secret.endpoint)
        return getattr(client, method)(request=request, retry=None, timeout=SECRET_MANAGER_TIMEOUT_SECONDS)
    except (gexc.NotFound, gexc.PermissionDenied, gexc.Unauthenticated, gexc.InvalidArgument,
            gexc.FailedPrecondition) as exc:
        what = {"access_secret_version": "read", "destroy_secret_version": "destroy a version of"}.get(
            method, "add a version to")
        hints = {
            gexc.NotFound: "the secret or its latest version does not exist (or is disabled)",
            gexc.PermissionDenied: "the function's service account lacks the role for it",
            gexc.FailedPrecondition: "the latest version is disabled or destroyed",
        }
        if method == "destroy_secret_version":
            hints.update({gexc.NotFound: "the version does not exist",
                          gexc.FailedPrecondition: "the version is already destroyed or disabled"})
        hint = hints.get(type(exc), type(exc).__name__)
        status = getattr(exc, "grpc_status_code", None)
        code = status.name if status is not None else {
            gexc.NotFound: "NOT_FOUND", gexc.FailedPrecondition: "FAILED_PRECONDITION",
            gexc.PermissionDenied: "PERMISSION_DENIED"}.get(type(exc), type(exc).__name__)
        raise CredentialError(
            f"{secret.name}: cannot {what} Secret Manager secret {secret.resource} ({code}: {hint})",
            transient=False, code=code,
        ) from None
    except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
        raise CredentialError(
            f"{secret.name}: Secret Manager is unavailable ({type(exc).__name__}); will try again",
            transient=True,
        ) from None
    except Exception as exc:  # e.g. no Application Default Credentials, a channel that cannot start
        raise CredentialError(
            f"{secret.name}: cannot reach Secret Manager ({type(exc).__name__})", transient=True
        ) from None


def reset_for_tests() -> None:
    """Forget cached clients and values (tests start local servers per test)."""
    with _clients_lock:
        for client in _clients.values():
            try:
                client.transport.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
        _clients.clear()
        _secrets.clear()
