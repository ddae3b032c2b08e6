"""A local OAuth2 token endpoint for `make demo ARGS=--xoauth2`: the refresh-token grant (RFC 6749 6)
on 127.0.0.1, issuing short bearer tokens the local inbox accepts for SASL XOAUTH2 (issue 11).

It knows one client (id + secret) and one refresh token, both generated per run and handed to the
function as SMTP_OAUTH2_CLIENT_SECRET / SMTP_OAUTH2_REFRESH_TOKEN, as Secret Manager would. It counts
grants, so the demo can show one refresh per token lifetime rather than one per email. It never logs
a token or a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.smtp import MISSING, SMTP

from local.errors import StartError

LISTEN_HOST = "127.0.0.1"
CLIENT_ID = "local-demo.apps.mailer.local"
DEFAULT_LIFETIME_SECONDS = 3600


class LocalTokenEndpoint:
    def __init__(self, user: str, port: int = 0, lifetime: float = DEFAULT_LIFETIME_SECONDS) -> None:
        self.user = user
        self.lifetime = lifetime
        self.client_id = CLIENT_ID
        self.client_secret = secrets.token_urlsafe(24)
        self.refresh_token = "local-rt-" + secrets.token_urlsafe(24)
        self.grants = 0
        self._access: dict[str, float] = {}  # token -> expiry (monotonic)
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode("utf-8", "replace")).items()}
                status, payload = owner._grant(form)
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        try:
            self._server = ThreadingHTTPServer((LISTEN_HOST, port), Handler)
        except OSError as error:
            raise StartError(f"OAuth2 token endpoint: cannot listen on {LISTEN_HOST}:{port} ({error.strerror})") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-endpoint", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LISTEN_HOST}:{self.port}/token"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> LocalTokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def valid(self, token: str, user: str) -> bool:
        """Whether `token` is a live access token this endpoint issued for `user` (the inbox asks)."""
        with self._lock:
            expiry = self._access.get(token)
            return expiry is not None and user == self.user and time.monotonic() < expiry

    def _grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "unknown client or wrong secret"}
        if form.get("refresh_token") != self.refresh_token:
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        token = "local-at-" + secrets.token_urlsafe(24)
        with self._lock:
            self._access[token] = time.monotonic() + self.lifetime
            self.grants += 1
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": int(self.lifetime)}


async def read_xoauth2(server: SMTP, args: list[str]) -> tuple[str, str] | None:
    """The server side of SASL XOAUTH2 up to the token, for an aiosmtpd `auth_XOAUTH2` hook (the local
    inbox's and the tests'): the client's initial response, asked for with an empty challenge when the
    AUTH line carries none, as (user, bearer token). The token is "" when the response is not
    `user=<u>^Aauth=Bearer <t>^A^A`. None when the exchange already ended (aiosmtpd or this answered)."""
    if len(args) == 1:
        blob = await server.challenge_auth("", encode_to_b64=False)
        if blob is MISSING:
            return None
    else:
        try:
            blob = base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await server.push("501 5.5.2 Can't decode base64")
            return None
    parts = blob.decode("utf-8", "replace").split("\x01")
    fields = dict(part.split("=", 1) for part in parts if "=" in part)
    auth = fields.get("auth", "")
    well_formed = parts[-2:] == ["", ""] and auth.startswith("Bearer ")
    return fields.get("user", ""), auth[len("Bearer "):] if well_formed else ""
