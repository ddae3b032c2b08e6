"""SMTP_CONNECTION_URI parsing: `smtp[s]://[user[:pass]@]host[:port][?options]` -> SmtpSettings.

Option names follow nodemailer's where one exists, so URIs written for the Firebase extension keep
working. Errors name the option or part at fault and never echo the password: values from the
authority are not quoted back, because an unencoded '/', '?' or '#' in a password shifts the split
and would otherwise leak a piece of it as "the port" or "an option".

Options (booleans are true/false or 1/0; times in milliseconds):
    name                   EHLO name (default: the machine's FQDN, else its address literal)
    tlsServername          name sent as SNI and checked against the certificate (default: host)
    tlsCaFile              extra CA certificates (PEM file) trusted besides the system store
    tlsRejectUnauthorized  false turns certificate verification off (default true)
    requireTLS             smtp:// must upgrade with STARTTLS even without credentials
    ignoreTLS              smtp:// never upgrades (with credentials only if allowPlaintextAuth)
    allowPlaintextAuth     allow credentials when the server offers no STARTTLS
    authMethod             PLAIN, LOGIN or XOAUTH2 (default: PLAIN if offered, else LOGIN)
    oauth2TokenUrl         XOAUTH2: the OAuth2 token endpoint (https://; http:// only for a loopback host)
    oauth2ClientId         XOAUTH2: the OAuth2 client id (its secret and the refresh token come from
                           SMTP_OAUTH2_CLIENT_SECRET / SMTP_OAUTH2_REFRESH_TOKEN or their *_SECRET)
    connectionTimeout      TCP connect + implicit TLS handshake, and waiting for a pool slot (10000)
    greetingTimeout        waiting for the server's 220 greeting (10000)
    socketTimeout          waiting for any later reply (30000)
    pool                   keep connections for reuse across sends (default true)
    maxConnections         connections open at once per pool (default 5)
    maxMessages            messages per connection before it is replaced (default 100)
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

URI_NAME = "SMTP_CONNECTION_URI"

DEFAULT_PORTS = {"smtp": 587, "smtps": 465}

# Milliseconds, like nodemailer. Shorter than nodemailer's (2 min / 30 s / 10 min) because a Cloud
# Function invocation has a deadline of its own: a dead server must fail fast enough to retry.
DEFAULT_CONNECTION_TIMEOUT_MS = 10_000
DEFAULT_GREETING_TIMEOUT_MS = 10_000
DEFAULT_SOCKET_TIMEOUT_MS = 30_000
DEFAULT_MAX_CONNECTIONS = 5
DEFAULT_MAX_MESSAGES = 100

AUTH_METHODS = ("PLAIN", "LOGIN", "XOAUTH2")
XOAUTH2 = "XOAUTH2"

_BOOL_OPTIONS = {
    "pool": "pool",
    "requireTLS": "require_tls",
    "ignoreTLS": "ignore_tls",
    "allowPlaintextAuth": "allow_plaintext_auth",
    "tlsRejectUnauthorized": "tls_reject_unauthorized",
}
_MS_OPTIONS = {
    "connectionTimeout": "connection_timeout",
    "greetingTimeout": "greeting_timeout",
    "socketTimeout": "socket_timeout",
}
_COUNT_OPTIONS = {
    "maxConnections": "max_connections",
    "maxMessages": "max_messages",
}
_TEXT_OPTIONS = {
    "name": "ehlo_name",
    "tlsServername": "tls_servername",
    "tlsCaFile": "tls_ca_file",
    "authMethod": "auth_method",
    "oauth2TokenUrl": "oauth2_token_url",
    "oauth2ClientId": "oauth2_client_id",
}
KNOWN_OPTIONS = tuple(sorted({**_BOOL_OPTIONS, **_MS_OPTIONS, **_COUNT_OPTIONS, **_TEXT_OPTIONS}))

# A DNS name or an address literal as EHLO/SNI accept it: no whitespace or control characters
# (CR/LF in an EHLO name would inject SMTP commands).
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9._\-\[\]:]+$")
_ENCODING_HINT = "percent-encode '/', '?', '#', '@' and ':' in the user name and password"


class SmtpConfigError(ValueError):
    """Bad SMTP_CONNECTION_URI or option. str(e) is one line naming the problem and never contains
    the password."""


@dataclass(frozen=True)
class SmtpSettings:
    """Everything needed to open SMTP connections. Timeouts are in seconds."""

    scheme: str  # "smtp" (STARTTLS upgrade) or "smtps" (implicit TLS)
    host: str  # DNS name or IP address, IPv6 without brackets
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ehlo_name: str | None = None
    tls_servername: str | None = None
    tls_ca_file: str | None = None
    tls_reject_unauthorized: bool = True
    require_tls: bool = False
    ignore_tls: bool = False
    allow_plaintext_auth: bool = False
    auth_method: str | None = None  # "PLAIN" / "LOGIN" / "XOAUTH2"; None = best the server offers
    oauth2_token_url: str | None = None  # XOAUTH2 only: where access tokens are refreshed
    oauth2_client_id: str | None = None
    connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT_MS / 1000
    greeting_timeout: float = DEFAULT_GREETING_TIMEOUT_MS / 1000
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_MS / 1000
    pool: bool = True
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_messages: int = DEFAULT_MAX_MESSAGES

    @property
    def implicit_tls(self) -> bool:
        return self.scheme == "smtps"

    @property
    def address(self) -> str:
        """host:port as people write it, for messages and logs ("[::1]:25" for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def tls_name(self) -> str:
        """The name sent as SNI and checked against the server certificate."""
        return self.tls_servername or self.host


def parse_smtp_uri(uri: str, password_override: str | None = None) -> SmtpSettings:
    """Parse SMTP_CONNECTION_URI. `password_override` (the SMTP_PASSWORD secret) wins over a
    password written in the URI. Raises SmtpConfigError."""
    if not isinstance(uri, str) or not uri.strip():
        raise SmtpConfigError(f"{URI_NAME} is empty; expected smtp://[user[:password]@]host[:port]")
    if password_override is not None and not isinstance(password_override, str):
        raise SmtpConfigError("SMTP_PASSWORD must be a string")
    if password_override == "":
        password_override = None  # an unset secret often arrives as an empty variable
    scheme, sep, rest = uri.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise SmtpConfigError(
            f"{URI_NAME}: scheme must be smtp:// (STARTTLS) or smtps:// (implicit TLS)"
        )
    authority, query = _split_authority(rest)
    userinfo, at, hostport = authority.rpartition("@")
    username, uri_password = _parse_userinfo(userinfo) if at else (None, None)
    host, port = _parse_hostport(hostport, DEFAULT_PORTS[scheme])
    password = password_override if password_override is not None else uri_password
    if password is not None and username is None:
        raise SmtpConfigError(f"{URI_NAME}: a password is set but no user name; use smtp://user@host")
    options = _parse_options(query)
    settings = SmtpSettings(
        scheme=scheme, host=host, port=port, username=username, password=password, **options
    )
    _check_consistency(settings)
    return settings


def _split_authority(rest: str) -> tuple[str, str]:
    """Split what follows "scheme://" into the authority and the query string."""
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    authority, tail = rest[:end], rest[end:]
    if "@" in tail:
        # Almost surely a password with an unencoded '/', '?' or '#': refuse before quoting parts.
        raise SmtpConfigError(f"{URI_NAME}: '@' after the host; {_ENCODING_HINT}")
    if "#" in tail:
        raise SmtpConfigError(f"{URI_NAME}: a '#fragment' is not allowed; {_ENCODING_HINT}")
    path, _, query = tail.partition("?")
    if path not in ("", "/"):
        raise SmtpConfigError(f"{URI_NAME}: unexpected path after host:port; {_ENCODING_HINT}")
    return authority, query


def _parse_userinfo(userinfo: str) -> tuple[str | None, str | None]:
    raw_user, colon, raw_password = userinfo.partition(":")
    username = unquote(raw_user)
    if not username:
        raise SmtpConfigError(f"{URI_NAME}: empty user name before '@'")
    # CR/LF would end the AUTH command line, NUL and ^A are PLAIN's and XOAUTH2's field separators.
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in username):
        raise SmtpConfigError(f"{URI_NAME}: user name contains a control character")
    return username, (unquote(raw_password) if colon else None)


def _parse_hostport(hostport: str, default_port: int) -> tuple[str, int]:
    if hostport.startswith("["):
        literal, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise SmtpConfigError(f"{URI_NAME}: IPv6 address is missing its closing ']'")
        try:
            host = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise SmtpConfigError(f"{URI_NAME}: invalid IPv6 address in brackets") from None
        if after and not after.startswith(":"):
            raise SmtpConfigError(f"{URI_NAME}: unexpected text after the IPv6 address")
        port_text = after[1:] if after else None
    else:
        if hostport.count(":") > 1:
            raise SmtpConfigError(f"{URI_NAME}: an IPv6 host must be written in brackets: [::1]")
        host, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None
        if not host:
            raise SmtpConfigError(f"{URI_NAME}: missing host")
        if not _HOSTNAME_RE.match(host) or "[" in host or "]" in host:
            raise SmtpConfigError(f"{URI_NAME}: host contains characters not allowed in a host name")
    if port_text is None:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise SmtpConfigError(
            f"{URI_NAME}: port must be a number from 1 to 65535; {_ENCODING_HINT}"
        )
    return host, int(port_text)


def _parse_options(query: str) -> dict[str, object]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise SmtpConfigError(f"{URI_NAME}: malformed query string") from None
    parsed: dict[str, object] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise SmtpConfigError(f"{URI_NAME}: option {_shown(name)} is given more than once")
        seen.add(name)
        if name in _BOOL_OPTIONS:
            parsed[_BOOL_OPTIONS[name]] = _parse_bool(name, value)
        elif name in _MS_OPTIONS:
            parsed[_MS_OPTIONS[name]] = _parse_positive_int(name, value) / 1000
        elif name in _COUNT_OPTIONS:
            parsed[_COUNT_OPTIONS[name]] = _parse_positive_int(name, value)
        elif name in _TEXT_OPTIONS:
            parsed[_TEXT_OPTIONS[name]] = _parse_text(name, value)
        else:
            hint = next((known for known in KNOWN_OPTIONS if known.lower() == name.lower()), None)
            did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
            raise SmtpConfigError(
                f"{URI_NAME}: unknown option {_shown(name)}{did_you_mean}; "
                f"known options: {', '.join(KNOWN_OPTIONS)}"
            )
    return parsed


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise SmtpConfigError(f"{URI_NAME}: option {_shown(name)} must be true or false, got {_shown(value)}")


def _parse_positive_int(name: str, value: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise SmtpConfigError(
            f"{URI_NAME}: option {_shown(name)} must be a positive integer, got {_shown(value)}"
        )
    return int(text)


def _parse_text(name: str, value: str) -> str:
    text = value.strip()
    if not text:
        raise SmtpConfigError(f"{URI_NAME}: option {_shown(name)} must not be empty")
    if name == "authMethod":
        upper = text.upper()
        if upper not in AUTH_METHODS:
            raise SmtpConfigError(
                f"{URI_NAME}: option 'authMethod' must be one of {', '.join(AUTH_METHODS)}, "
                f"got {_shown(value)}"
            )
        return upper
    if name == "oauth2TokenUrl":
        return _parse_token_url(text)
    if name == "oauth2ClientId" and any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
        raise SmtpConfigError(f"{URI_NAME}: option 'oauth2ClientId' contains whitespace or control characters")
    if name in ("name", "tlsServername") and not _HOSTNAME_RE.match(text):
        raise SmtpConfigError(f"{URI_NAME}: option {_shown(name)} must be a host name, got {_shown(value)}")
    if name == "tlsCaFile" and not os.path.isfile(text):
        raise SmtpConfigError(f"{URI_NAME}: option 'tlsCaFile' names no readable file: {_shown(text)}")
    return text


def _parse_token_url(text: str) -> str:
    """oauth2TokenUrl: an absolute https:// URL; http:// only for a loopback host (local tests and the
    local stack), since the refresh token and client secret travel in the request body."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname
        parts.port  # (raises ValueError for a bad port)
    except ValueError:
        host = None
    if scheme not in ("https", "http") or not host or any(ord(ch) < 0x21 for ch in text):
        raise SmtpConfigError(
            f"{URI_NAME}: option 'oauth2TokenUrl' must be an https:// URL, got {_shown(text)}"
        )
    if parts.username is not None or parts.password is not None:
        raise SmtpConfigError(f"{URI_NAME}: option 'oauth2TokenUrl' must not carry credentials")
    if scheme == "http" and not is_loopback_host(host):
        raise SmtpConfigError(
            f"{URI_NAME}: option 'oauth2TokenUrl' must use https:// (http:// is allowed for a loopback "
            "host only)"
        )
    return text


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: where plaintext is acceptable (nothing leaves the machine)."""
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _shown(value: str) -> str:
    """A value quoted for an error message: escaped (no line breaks) and kept short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_consistency(settings: SmtpSettings) -> None:
    if settings.ignore_tls and settings.implicit_tls:
        raise SmtpConfigError(f"{URI_NAME}: option 'ignoreTLS' contradicts smtps:// (implicit TLS)")
    if settings.ignore_tls and settings.require_tls:
        raise SmtpConfigError(f"{URI_NAME}: options 'ignoreTLS' and 'requireTLS' contradict each other")
    if settings.ignore_tls and settings.username and not settings.allow_plaintext_auth:
        raise SmtpConfigError(
            f"{URI_NAME}: option 'ignoreTLS' would send the credentials in plaintext; "
            "also set allowPlaintextAuth=true to accept that"
        )
    if settings.auth_method and not settings.username:
        raise SmtpConfigError(f"{URI_NAME}: option 'authMethod' is set but the URI has no user name")
    # XOAUTH2 (issue 11): the user is the mailbox; the token endpoint and client id are options.
    if settings.auth_method == XOAUTH2:
        for option, value in (("oauth2TokenUrl", settings.oauth2_token_url),
                              ("oauth2ClientId", settings.oauth2_client_id)):
            if not value:
                raise SmtpConfigError(f"{URI_NAME}: authMethod=XOAUTH2 needs option '{option}'")
        if settings.password is not None:
            raise SmtpConfigError(
                f"{URI_NAME}: authMethod=XOAUTH2 takes no password (remove it from the URI and "
                "SMTP_PASSWORD); the refresh token comes from SMTP_OAUTH2_REFRESH_TOKEN"
            )
    else:
        for option, value in (("oauth2TokenUrl", settings.oauth2_token_url),
                              ("oauth2ClientId", settings.oauth2_client_id)):
            if value:
                raise SmtpConfigError(f"{URI_NAME}: option '{option}' needs authMethod=XOAUTH2")
