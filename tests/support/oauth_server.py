"""A local OAuth2 token endpoint (refresh-token grant) and an aiosmtpd server that takes SASL XOAUTH2
with the tokens that endpoint issued: the real peers of the XOAUTH2 tests and the local stack.

    tokens = TokenEndpoint(lifetime=3600).start()          # http://127.0.0.1:<port>/token
    tokens.add_client("client-id", "client-secret"); refresh = tokens.add_refresh_token("me@example.com")
    tokens.grants, tokens.requests                        # successful grants, all POSTs
    tokens.expire_access_tokens()                         # every issued access token stops working
    tokens.revoke(refresh)                                # the next grant gets 400 invalid_grant
    tokens.rotate = True                                  # each grant returns a new refresh_token
    tokens.fail_status = 503 / tokens.hang_seconds = 5    # 5xx (JSON body) / no answer for a while
    tokens.access_token_bytes = 2500                      # access tokens of that size (Microsoft's: ~2-2.5 KB)

The endpoint answers like Google's and Microsoft's: 200 {"access_token", "token_type": "Bearer",
"expires_in", ["refresh_token"]}, or 400/401 {"error": "invalid_grant" | "invalid_client" | ...,
"error_description"} (RFC 6749 5.1/5.2). It never logs a token or a secret.

Fixtures (tests/conftest.py registers this module as a plugin):
    token_endpoint   factory  token_endpoint(lifetime=3600, tls=False) -> TokenEndpoint (stopped at test end)
    xoauth2_server   factory  xoauth2_server(tokens, tls="starttls", ...) -> SmtpTestServer that offers
                              AUTH XOAUTH2 only; a token the endpoint did not issue (or that expired) gets
                              the 334 error challenge (base64 JSON status/schemes/scope), then, after the
                              client's empty line, 535 5.7.8.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import trustme
from aiosmtpd.smtp import MISSING, AuthResult

from local.oauth import read_xoauth2
from tests.support.smtp import AuthAttempt, SmtpTestServer, _Handler

LISTEN_HOST = "127.0.0.1"
GOOGLE_SCOPE = "https://mail.google.com/"
XOAUTH2_REFUSED = "535 5.7.8 Username and Password not accepted"


@dataclass
class _Access:
    user: str
    expires_at: float


class TokenEndpoint:
    """An OAuth2 token endpoint on 127.0.0.1 (a free port), counting what it is asked."""

    def __init__(self, lifetime: float = 3600, tls_cert: trustme.LeafCert | None = None) -> None:
        self.lifetime = lifetime
        self.rotate = False  # every successful grant returns a new refresh token
        self.revoke_rotated = False  # ... and the one it replaced stops working
        self.fail_status: int | None = None  # answer every request with this (5xx: JSON error)
        self.fail_payload: dict[str, Any] | None = None  # ... and this JSON instead of a server_error
        self.hang_seconds = 0.0  # wait this long before answering
        self.trickle_seconds = 0.0  # send the answer's body one byte at a time, this long apart
        self.omit_expires_in = False
        # Issue access tokens of exactly this many bytes (a JWT-like text, as Microsoft's are) instead of
        # Google's short ones.
        self.access_token_bytes: int | None = None
        self.requests = 0  # POSTs received
        self.grants = 0  # access tokens issued
        self.forms: list[dict[str, str]] = []  # each request's form, for assertions (stays in-process)
        self._clients: dict[str, str | None] = {}
        self._refresh: dict[str, str] = {}  # refresh token -> user
        self._access: dict[str, _Access] = {}
        self._lock = threading.Lock()
        self._tls_cert = tls_cert
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # (the default logs to stderr)
                pass

            def do_POST(self) -> None:  # noqa: N802
                owner._handle(self)

        self._server = ThreadingHTTPServer((LISTEN_HOST, 0), Handler)
        self._server.daemon_threads = True
        if tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_cert.configure_cert(context)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-endpoint", daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self._tls_cert is not None else "http"
        host = "localhost" if self._tls_cert is not None else LISTEN_HOST
        return f"{scheme}://{host}:{self.port}/token"

    def start(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- state tests set up --------------------------------------------------------------------------

    def add_client(self, client_id: str, client_secret: str | None) -> None:
        with self._lock:
            self._clients[client_id] = client_secret

    def add_refresh_token(self, user: str, token: str | None = None) -> str:
        token = token or "1//rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[token] = user
        return token

    def revoke(self, refresh_token: str) -> None:
        with self._lock:
            self._refresh.pop(refresh_token, None)

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._access.clear()

    def valid_access(self, token: str, user: str) -> bool:
        with self._lock:
            access = self._access.get(token)
            return access is not None and access.user == user and time.monotonic() < access.expires_at

    @property
    def refresh_tokens(self) -> list[str]:
        with self._lock:
            return list(self._refresh)

    @property
    def access_tokens(self) -> list[str]:
        with self._lock:
            return list(self._access)

    # -- the endpoint ------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length).decode("utf-8", "replace")
        form = {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}
        with self._lock:
            self.requests += 1
            self.forms.append(form)
        if self.hang_seconds:
            time.sleep(self.hang_seconds)
        if self.fail_status is not None:
            self._reply(request, self.fail_status, self.fail_payload or {"error": "server_error", "error_description": "backend unavailable"})
            return
        status, payload = self._grant(form)
        self._reply(request, status, payload, self.trickle_seconds)

    def _grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type", "error_description": "only refresh_token"}
        with self._lock:
            client_id = form.get("client_id", "")
            if client_id not in self._clients or self._clients[client_id] != form.get("client_secret"):
                return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}
            old = form.get("refresh_token", "")
            user = self._refresh.get(old)
            if user is None:
                # Microsoft's shape: an AADSTS code, then trace data the client should not quote.
                return 400, {"error": "invalid_grant",
                             "error_description": "AADSTS70008: The provided authorization code or refresh token "
                                                  "has expired due to inactivity.\r\nTrace ID: 0000\r\nCorrelation "
                                                  "ID: 1111\r\nTimestamp: 2026-12-01 00:00:00Z",
                             "error_codes": [70008]}
            access = "ya29." + secrets.token_urlsafe(32)
            if self.access_token_bytes is not None:
                access = _jwt_like(self.access_token_bytes)
            self._access[access] = _Access(user, time.monotonic() + self.lifetime)
            self.grants += 1
            payload: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "scope": GOOGLE_SCOPE}
            if not self.omit_expires_in:
                payload["expires_in"] = self.lifetime
            if self.rotate:
                new = "1//rt-" + secrets.token_urlsafe(24)
                self._refresh[new] = user
                if self.revoke_rotated:
                    del self._refresh[old]
                payload["refresh_token"] = new
        return 200, payload

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, payload: dict[str, Any], trickle: float = 0.0) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json; charset=utf-8")
            request.send_header("Content-Length", str(len(data)))
            request.send_header("Cache-Control", "no-store")
            request.end_headers()
            if not trickle:
                request.wfile.write(data)
            for index in range(len(data) if trickle else 0):  # every byte well within a socket timeout
                request.wfile.write(data[index:index + 1])
                request.wfile.flush()
                time.sleep(trickle)
        except OSError:
            pass  # the client gave up (a hang test)


def _jwt_like(size: int) -> str:
    """A random bearer token of `size` bytes shaped like a JWT (header.payload.signature, base64url)."""
    head = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9."
    body = secrets.token_urlsafe(size)[: max(size - len(head) - 87, 1)]
    token = f"{head}{body}.{secrets.token_urlsafe(64)}"[:size]
    assert len(token) == size, (len(token), size)
    return token


class XOAuth2Handler(_Handler):
    """The test server's handler plus an auth_XOAUTH2 hook (aiosmtpd collects auth_* methods from
    the handler) validating bearer tokens against a TokenEndpoint."""

    def __init__(self, owner: SmtpTestServer, tokens: TokenEndpoint) -> None:
        super().__init__(owner)
        self.tokens = tokens
        self.challenges = 0  # 334 error challenges sent
        self.echo = False  # quote the client's initial response back in the refusal (as a careless server might)
        self.decoded: list[str] = []  # every bearer token decoded from a client (in-process, for assertions)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:  # noqa: N802
        response = await read_xoauth2(server, args)
        if response is None:
            return AuthResult(success=False, handled=True)
        user, token = response
        self.decoded.append(token)
        valid = bool(token) and self.tokens.valid_access(token, user)
        self.owner.auth_attempts.append(AuthAttempt("XOAUTH2", user, valid))
        if valid:
            return AuthResult(success=True, auth_data=user)
        # Google's shape: a 334 challenge with base64 JSON; the client answers with an empty line.
        self.challenges += 1
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": GOOGLE_SCOPE})
        answer = await server.challenge_auth(error)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)  # (aiosmtpd already answered 501)
        message = f"{XOAUTH2_REFUSED} (got {args[1]})" if self.echo and len(args) > 1 else XOAUTH2_REFUSED
        return AuthResult(success=False, handled=False, message=message)


def xoauth2_handler(server: SmtpTestServer) -> XOAuth2Handler:
    handler = server._controller.handler
    assert isinstance(handler, XOAuth2Handler)
    return handler


@pytest.fixture
def token_endpoint(smtp_server_cert: trustme.LeafCert) -> Iterator[Callable[..., TokenEndpoint]]:
    """Factory: token_endpoint(lifetime=3600, tls=False) -> a started TokenEndpoint; tls=True serves
    https with the test CA's certificate for localhost (smtp_ca_file trusts it)."""
    started: list[TokenEndpoint] = []

    def start(lifetime: float = 3600, tls: bool = False) -> TokenEndpoint:
        endpoint = TokenEndpoint(lifetime, smtp_server_cert if tls else None).start()
        started.append(endpoint)
        return endpoint

    try:
        yield start
    finally:
        for endpoint in started:
            endpoint.stop()


@pytest.fixture
def xoauth2_server(smtp_server: Callable[..., SmtpTestServer]) -> Callable[..., SmtpTestServer]:
    """Factory: xoauth2_server(tokens, **smtp_server arguments) -> an SMTP server offering AUTH
    XOAUTH2 only, accepting the access tokens `tokens` issued (for the user they were issued to)."""

    def start(tokens: TokenEndpoint, **kwargs: Any) -> SmtpTestServer:
        kwargs.setdefault("auth_mechanisms", ("XOAUTH2",))
        kwargs.setdefault("users", {})
        server = smtp_server(**kwargs)
        # Sessions are built per connection from the controller's handler: from now on they get ours.
        server._controller.handler = XOAuth2Handler(server, tokens)
        return server

    return start
