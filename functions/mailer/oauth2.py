"""OAuth2 access tokens for SASL XOAUTH2: the refresh-token grant (RFC 6749 6), cached per process.

One TokenSource per SMTP pool. token() returns the cached access token until shortly before it
expires; the first caller after that refreshes while concurrent callers wait for its result (one
refresh per token lifetime per instance, however many emails). invalidate(token) drops a token the
SMTP server refused, so the next token() refreshes.

Failures are CredentialErrors: the endpoint's `invalid_grant` is permanent and says the refresh
token must be renewed (naming its variable); invalid_client / unauthorized_client name the client
id and secret; an unreachable endpoint, a timeout, 429 or 5xx is transient. When the response
carries a new refresh_token (Microsoft rotates them) it is stored (credentials.Secret.store: a new
Secret Manager version when read at run time) and used from then on. No token or secret appears in
messages or logs: the endpoint's error_description is quoted only after removing them.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable

from mailer.credentials import CredentialError, Secret

log = logging.getLogger("mailer.oauth2")

# Refresh this long before the token's stated expiry (at most a tenth of its lifetime), so a token
# never expires between the check and the server reading it.
EXPIRY_MARGIN_SECONDS = 60.0
# When the endpoint states no expires_in (RFC 6749 makes it optional): assume a short life.
DEFAULT_LIFETIME_SECONDS = 300.0
MAX_RESPONSE_BYTES = 1 << 20
_DESCRIPTION_CHARS = 160


class TokenSource:
    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: Secret | None,
        refresh_token: Secret,
        *,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.timeout = timeout
        self._tls_context = tls_context or ssl.create_default_context()
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self.refreshes = 0  # successful refreshes by this source (for tests and logs)

    def __repr__(self) -> str:
        return f"TokenSource({self.token_url!r}, client_id={self.client_id!r})"

    def token(self) -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._refresh_at:
                return self._token
            self._token = None
            token, lifetime = self._refresh()
            self._token = token
            self._refresh_at = self._clock() + lifetime - min(EXPIRY_MARGIN_SECONDS, lifetime / 10)
            return token

    def invalidate(self, token: str) -> None:
        """The server refused `token`: forget it (unless another caller already replaced it)."""
        with self._lock:
            if self._token == token:
                self._token = None

    def secrets(self) -> list[str]:
        """Every secret value this source knows right now (to keep them out of messages)."""
        values = [self._token]
        for secret in (self.client_secret, self.refresh_token):
            cached = getattr(secret, "_value", None)
            if isinstance(cached, str):
                values.append(cached)
        return [value for value in values if value]

    # -- the grant ---------------------------------------------------------------------------------

    def _refresh(self) -> tuple[str, float]:
        """POST the refresh grant (the caller holds the lock). An invalid_grant or invalid_client is
        tried once more if re-reading the secrets at run time gives different values."""
        refresh_token = self.refresh_token.get()
        client_secret = self.client_secret.get() if self.client_secret is not None else None
        try:
            return self._grant(refresh_token, client_secret)
        except _Refused as refused:
            retry = False
            if refused.error == "invalid_grant" and self.refresh_token.runtime:
                retry = self.refresh_token.reread(refresh_token) != refresh_token
            elif refused.error in ("invalid_client", "unauthorized_client") and self.client_secret is not None \
                    and self.client_secret.runtime:
                retry = self.client_secret.reread(client_secret) != client_secret
            if not retry:
                raise refused.error_for(self) from None
            log.info("the OAuth2 token endpoint refused the grant; the re-read secret changed, trying it")
            try:
                return self._grant(self.refresh_token.get(),
                                   self.client_secret.get() if self.client_secret is not None else None)
            except _Refused as again:
                raise again.error_for(self) from None

    def _grant(self, refresh_token: str, client_secret: str | None) -> tuple[str, float]:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id}
        if client_secret is not None:
            form["client_secret"] = client_secret
        body_out = urllib.parse.urlencode(form).encode("ascii")
        hidden = [refresh_token, client_secret]
        endpoint = _endpoint(self.token_url)
        try:
            status, body = self._post(body_out)
        except OSError as exc:
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise CredentialError(
                    f"OAuth2 token endpoint {endpoint}: TLS certificate verification failed "
                    f"({exc.verify_message}) (option 'oauth2TokenUrl')", transient=False) from None
            text = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
            raise CredentialError(f"OAuth2 token endpoint {endpoint} unreachable: {text}; will try again",
                                  transient=True) from None
        payload = _json(body)
        if status == 200 and isinstance(payload, dict) and isinstance(payload.get("access_token"), str) \
                and payload["access_token"]:
            self.refreshes += 1
            self._rotate(payload.get("refresh_token"), refresh_token)
            return payload["access_token"], _lifetime(payload.get("expires_in"))
        error = payload.get("error") if isinstance(payload, dict) else None
        if 400 <= status < 500 and status != 429 and isinstance(error, str):
            description = payload.get("error_description") if isinstance(payload, dict) else None
            raise _Refused(status, error, _clean(description, hidden), _clean(error, hidden) or "?")
        transient = status == 429 or status >= 500 or status == 200
        what = "an answer without an access token" if status == 200 else f"HTTP {status}"
        raise CredentialError(
            f"OAuth2 token endpoint {endpoint} returned {what}" + ("; will try again" if transient else ""),
            transient=transient)

    def _post(self, body: bytes) -> tuple[int, bytes]:
        """POST the form; (status, at most MAX_RESPONSE_BYTES of the body). `timeout` bounds the whole
        exchange, not each socket operation: an endpoint that trickles its answer a byte at a time
        (or sends endless headers) is cut off when the time is up, so a send never waits longer than
        that on the token endpoint. Raises OSError (TimeoutError when the time ran out)."""
        parts = urllib.parse.urlsplit(self.token_url)
        if parts.scheme.lower() == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=self.timeout, context=self._tls_context)
        else:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.timeout)
        expired = threading.Event()
        sockets: list[socket.socket] = []  # (an HTTP/1.0 answer detaches the socket from the connection)

        def expire() -> None:  # unblocks a recv that is still waiting when the time is up
            expired.set()
            for sock in [connection.sock, *sockets]:
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        watchdog = threading.Timer(self.timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.connect()
            sockets.append(connection.sock)
            if expired.is_set():  # the time ran out before the socket existed (a slow DNS lookup)
                raise TimeoutError("token endpoint timed out")
            connection.request("POST", path, body=body, headers={
                "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
            response = connection.getresponse()
            data = response.read(MAX_RESPONSE_BYTES)
            if expired.is_set():
                raise TimeoutError("token endpoint answer cut off")
            return response.status, data
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError):
                raise TimeoutError("token endpoint timed out") from None
            if isinstance(exc, OSError):
                raise
            raise ConnectionError(type(exc).__name__) from None  # a malformed HTTP answer
        finally:
            watchdog.cancel()
            connection.close()

    def _rotate(self, new_refresh_token: object, used: str) -> None:
        if isinstance(new_refresh_token, str) and new_refresh_token and new_refresh_token != used:
            log.info("the OAuth2 token endpoint issued a new refresh token; storing it in %s", self.refresh_token.name)
            self.refresh_token.store(new_refresh_token)


class _Refused(Exception):
    """The endpoint answered the grant with an OAuth2 error (RFC 6749 5.2)."""

    def __init__(self, status: int, error: str, description: str | None, shown: str) -> None:
        super().__init__(error)
        self.status, self.error, self.description = status, error, description
        self.shown = shown  # the error code as messages quote it: one short line, no secret we sent

    def error_for(self, source: TokenSource) -> CredentialError:
        detail = f"{self.shown}" + (f": {self.description}" if self.description else "")
        endpoint = _endpoint(source.token_url)
        if self.error == "invalid_grant":
            return CredentialError(
                f"OAuth2 token endpoint {endpoint} refused the refresh token ({detail}); the refresh token "
                f"must be renewed: authorize the mailbox again and store the new token in {source.refresh_token.name}",
                transient=False)
        if self.error in ("invalid_client", "unauthorized_client"):
            secret_name = source.client_secret.name if source.client_secret is not None else "SMTP_OAUTH2_CLIENT_SECRET"
            return CredentialError(
                f"OAuth2 token endpoint {endpoint} refused the client ({detail}); check option "
                f"'oauth2ClientId' and {secret_name}", transient=False)
        return CredentialError(f"OAuth2 token endpoint {endpoint} refused the refresh grant ({detail})",
                               transient=False)


def _endpoint(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _json(body: bytes) -> object:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _lifetime(expires_in: object) -> float:
    try:
        seconds = float(expires_in)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME_SECONDS
    return seconds if seconds > 0 else DEFAULT_LIFETIME_SECONDS


def _clean(description: object, hidden: list[str | None]) -> str | None:
    """The endpoint's error_description on one short line, without any secret we sent."""
    if not isinstance(description, str):
        return None
    text = " ".join(description.split())
    for secret in hidden:
        if secret:
            text = text.replace(secret, "******")
    # Microsoft appends "Trace ID: ... Correlation ID: ... Timestamp: ...": keep the reason only.
    text = text.split(" Trace ID:", 1)[0]
    return text if len(text) <= _DESCRIPTION_CHARS else text[: _DESCRIPTION_CHARS - 3] + "..."
