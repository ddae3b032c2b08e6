"""`make check STACK=prod` / `python -m ops.check`: connect to an SMTP server the way the function would
and say, step by step, what works and what does not.

The settings come from a stack file (stacks/Pulumi.<stack>.yaml, validated by infra.config's model, the
same one `pulumi up` uses) or from --uri. The URI is parsed by the function's own parser
(functions/mailer/smtp_uri.py), so options such as tlsCaFile, tlsServername, name, authMethod and the
timeouts mean here what they mean in the deployed function. The password is never read from an
encrypted stack file (only the Pulumi CLI can decrypt it): give it on standard input (--password-stdin)
or in the SMTP_PASSWORD environment variable.

Steps, each printed as soon as it is done, with its time and ok / FAIL (or skip / warn):
    DNS        the host's addresses
    TCP        a connection to the first address that answers
    TLS        implicit (smtps://) or after STARTTLS (smtp://): protocol, cipher, the certificate's
               subject, issuer, names (SANs) and expiry with the days left
    greeting   the server's 220
    EHLO       capabilities: PIPELINING, SMTPUTF8, SIZE, 8BITMIME, DSN, CHUNKING, AUTH methods
    AUTH       PLAIN or LOGIN with the user from the URI (XOAUTH2 when the function supports it)
    send       with --send-to: a short test message through the function's own composer and transport
A failed step names its likely cause: port 25 blocked, scheme and port mismatched, a plaintext server
addressed with smtps:// or an implicit-TLS port with smtp://, a certificate for other names (listed),
an untrusted or expired certificate, 535 from Gmail (app password or OAuth2), connection refused, a host
that does not resolve. No secret is ever printed: every line passes through a redactor that replaces
the password (and its base64 forms) with ******.

Exit codes: 0 every step passed, 1 a step failed, 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import smtplib
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parents[1]
# The function's modules (mailer.*) import from functions/, its deployed source root; appended, so
# nothing in functions/ can shadow a module of this program.
if str(REPO_ROOT / "functions") not in sys.path:
    sys.path.append(str(REPO_ROOT / "functions"))

from mailer.smtp_uri import SmtpConfigError, SmtpSettings, parse_smtp_uri  # noqa: E402
from mailer.transport import (  # noqa: E402
    _build_tls_context,
    _default_ehlo_name,
    _masked,
    _xoauth2_line_refused,
    _token_tls_context,
    auth_password,
    auth_xoauth2,
    xoauth2_initial_response,
)

STACKS_DIR = REPO_ROOT / "stacks"
PASSWORD_KEY = "mailer:smtpPassword"
PASSWORD_VAR = "SMTP_PASSWORD"
OK, FAIL, SKIP, WARN = "ok", "FAIL", "skip", "warn"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CERT_EXPIRY_WARN_DAYS = 14
PROBE_TIMEOUT_SECONDS = 3.0  # second looks at the port to name a cause (plaintext? implicit TLS?)
MASK = "******"
# OpenSSL verify codes (x509_vfy.h) the causes below tell apart.
_X509_EXPIRED = 10
_X509_UNTRUSTED = (18, 19, 20, 21)
_X509_NAME_MISMATCH = (62, 64)  # hostname, IP address
GMAIL_HOSTS = ("smtp.gmail.com", "smtp.googlemail.com", "smtp-relay.gmail.com")
MICROSOFT_HOSTS = ("smtp.office365.com", "smtp-mail.outlook.com")
CAPABILITIES = ("PIPELINING", "SMTPUTF8", "SIZE", "8BITMIME", "DSN", "CHUNKING", "ENHANCEDSTATUSCODES")
XOAUTH2_NOT_SUPPORTED = "XOAUTH2 check not supported yet"
XOAUTH2 = "XOAUTH2"
# The function's variables for the OAuth2 secrets (functions/mailer/settings.py), read here the same way.
CLIENT_SECRET_VAR = "SMTP_OAUTH2_CLIENT_SECRET"
REFRESH_TOKEN_VAR = "SMTP_OAUTH2_REFRESH_TOKEN"


class UsageError(Exception):
    """Bad arguments or settings: one line, exit code 2."""


# -- output ---------------------------------------------------------------------------------------


class Redactor:
    """Replaces every secret (and its base64 forms, as an AUTH exchange could show them) with ******."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, secret: str | None, username: str | None = None) -> None:
        if not secret:
            return
        forms = {secret, _b64(secret)}
        if username is not None:
            forms.add(_b64(f"\0{username}\0{secret}"))  # what AUTH PLAIN sends
        self._secrets.extend(sorted(forms - set(self._secrets), key=len, reverse=True))
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        # Each secret whole and any long run of it (longest form first): a server that refuses a long AUTH
        # line may quote part of it back, cut at its own length. The transport's own masking (MASK is its
        # "******").
        for secret in self._secrets:
            text = _masked(text, secret)
        return text


@dataclass
class Step:
    step: str
    status: str  # ok | FAIL | skip | warn
    ms: float
    detail: str
    cause: str | None = None  # a failure's likely cause and what to do (a warning's note), one line
    data: dict[str, Any] = field(default_factory=dict)


class Report:
    """Collects steps and prints each at once (text), or all at the end (--json)."""

    def __init__(self, out: TextIO, redact: Redactor, as_json: bool) -> None:
        self.out, self.redact, self.as_json = out, redact, as_json
        self.steps: list[Step] = []
        self.target = ""
        self.source = ""

    def header(self, target: str, source: str) -> None:
        self.target, self.source = self.redact(target), self.redact(source)
        if not self.as_json:
            self._print(f"check {self.target} ({self.source})")

    def add(self, step: Step) -> Step:
        step.ms = round(step.ms, 1)
        step.detail = self.redact(step.detail)
        step.cause = self.redact(step.cause) if step.cause else None
        step.data = json.loads(self.redact(json.dumps(step.data)))
        self.steps.append(step)
        if not self.as_json:
            self._print(f"  {step.status:<4}  {step.step:<8} {_ms(step.ms):>8}  {step.detail}")
            if step.cause:
                self._print(f"        {'likely cause' if step.status == FAIL else 'note'}: {step.cause}")
        return step

    @property
    def failed(self) -> Step | None:
        return next((step for step in self.steps if step.status == FAIL), None)

    def finish(self, started: float) -> int:
        failed = self.failed
        total = (time.perf_counter() - started) * 1000
        if self.as_json:
            document = {
                "target": self.target,
                "source": self.source,
                "ok": failed is None,
                "ms": round(total, 1),
                "steps": [asdict(step) for step in self.steps],
            }
            self._print(json.dumps(document, indent=2, ensure_ascii=False))
        elif failed is None:
            skipped = [step.step for step in self.steps if step.status == SKIP]
            note = f"; not checked: {', '.join(skipped)}" if skipped else ""
            self._print(f"check: ok, {len(self.steps)} steps in {_ms(total).strip()}{note}")
        else:
            self._print(f"check: FAILED at {failed.step}" + (f": {failed.cause}" if failed.cause else f": {failed.detail}"))
        return EXIT_OK if failed is None else EXIT_FAILED

    def _print(self, text: str) -> None:
        print(self.redact(text), file=self.out, flush=True)


def _ms(milliseconds: float) -> str:
    return f"{milliseconds:.0f} ms" if milliseconds < 10_000 else f"{milliseconds / 1000:.1f} s"


class _Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


# -- settings --------------------------------------------------------------------------------------


@dataclass
class Target:
    settings: SmtpSettings
    source: str  # where the settings came from, for the header line
    password_source: str | None  # "--password-stdin", SMTP_PASSWORD, "the URI" or None
    default_from: str | None = None
    max_message_bytes: int | None = None  # the stack's mailer:maxMessageBytes
    provider: str | None = None  # the stack's mailer:smtpProvider (a preset name), if any
    password_note: str | None = None  # why there is no password, when there is none
    oauth2_note: str | None = None  # XOAUTH2: where to get the refresh token from


def shown_uri(settings: SmtpSettings) -> str:
    """scheme://user@host:port, never the password or the options."""
    user = f"{quote(settings.username, safe='')}@" if settings.username else ""
    return f"{settings.scheme}://{user}{settings.address}"


def _stack_file(stack: str) -> Path:
    if not stack or "/" in stack or stack.startswith("."):
        raise UsageError(f"--stack {stack!r} is not a stack name; use e.g. --stack prod (stacks/Pulumi.prod.yaml)")
    path = STACKS_DIR / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in STACKS_DIR.glob("Pulumi.*.yaml"))
        raise UsageError(f"no stack file {path.relative_to(REPO_ROOT)}; stacks here: {', '.join(known) or 'none'}")
    return path


def _stack_password_state(path: Path) -> str | None:
    """How the stack file holds mailer:smtpPassword: "encrypted", "plain", or None (not there)."""
    import yaml

    raw = ((yaml.safe_load(path.read_text()) or {}).get("config") or {}).get(PASSWORD_KEY)
    if raw is None:
        return None
    return "encrypted" if isinstance(raw, dict) and "secure" in raw else "plain"


def _parse(uri: str, password: str | None) -> SmtpSettings:
    """The function's parser; a password given for an XOAUTH2 URI is left out (it authenticates with tokens)."""
    settings = parse_smtp_uri(uri)
    if password is None or (settings.auth_method or "").upper() == XOAUTH2:
        return settings
    return parse_smtp_uri(uri, password)


def stack_target(stack: str, password: str | None, password_source: str | None) -> Target:
    from infra.config import settings_problems
    from infra.stack_files import stack_config

    path = _stack_file(stack)
    model, problems = settings_problems(stack_config(path))
    if model is None:
        raise UsageError(f"{path.relative_to(REPO_ROOT)}: " + "; ".join(problems))
    note = None
    if password is None:
        pipe = f"| make check STACK={stack} ARGS=--password-stdin"
        deployed = (f"the deployed one: gcloud secrets versions access latest --secret {model.resource_prefix}-smtp-password "
                    f"--project {model.project} {pipe}")
        if _stack_password_state(path) == "encrypted":
            note = (f"{PASSWORD_KEY} is encrypted in {path.name} and only the Pulumi CLI can decrypt it: "
                    f"pulumi config get {PASSWORD_KEY} --stack {stack} {pipe} (or {deployed})")
        else:
            note = f"no password given: pipe it in with --password-stdin or set {PASSWORD_VAR} (or {deployed})"
    # After validation the model holds the URI the program hands the function (a provider preset filled in).
    uri = model.smtp_connection_uri
    try:
        settings = _parse(uri, password)
    except SmtpConfigError as error:
        raise UsageError(f"{path.relative_to(REPO_ROOT)}: mailer:smtpConnectionUri: {error}") from None
    return Target(
        settings=settings,
        source=f"stack {stack}, {path.relative_to(REPO_ROOT)}",
        password_source=password_source if password is not None else ("the URI" if settings.password else None),
        default_from=model.default_from,
        max_message_bytes=model.max_message_bytes,
        provider=getattr(model, "smtp_provider", None),
        password_note=note if settings.password is None else None,
        oauth2_note=_oauth2_note(model.resource_prefix, model.project),
    )


def uri_target(uri: str, password: str | None, password_source: str | None) -> Target:
    try:
        settings = _parse(uri, password)
    except SmtpConfigError as error:
        raise UsageError(f"--uri: {error}") from None
    source = password_source if password is not None else ("the URI" if settings.password else None)
    note = None if settings.password else f"no password given: pipe it in with --password-stdin or set {PASSWORD_VAR}"
    return Target(settings=settings, source="--uri", password_source=source, password_note=note)


# -- causes ----------------------------------------------------------------------------------------


def cause_for_connect_timeout(settings: SmtpSettings, seconds: float) -> str:
    if settings.port == 25:
        return ("outbound port 25 is blocked: Google Cloud blocks it for every Cloud Run service and VM (and many "
                "networks do too); use the provider's submission port: 587 with smtp:// (STARTTLS) or 465 with smtps://")
    return (f"no answer from {settings.address} within {seconds:g}s: a firewall drops the traffic (this network's "
            "egress rules or the server's allowlist) or the host is down")


def cause_for_refused(settings: SmtpSettings) -> str:
    usual = "587 with smtp:// or 465 with smtps://"
    return f"nothing listens on port {settings.port} at {settings.host} (or a firewall rejects it): check the port ({usual}) and the host"


def cause_for_dns(host: str, error: socket.gaierror) -> str:
    return (f"'{host}' does not resolve ({error.strerror or error}): check the host name for typos; the function "
            "resolves it through public DNS (or the VPC's), so a name only your machine knows will not work")


def is_google_server(settings: SmtpSettings, provider: str | None, *texts: str) -> bool:
    if provider in ("gmail", "google-workspace") or settings.host.lower() in GMAIL_HOSTS:
        return True
    joined = " ".join(texts).lower()
    return "gsmtp" in joined or "support.google.com/mail" in joined or "smtp.gmail.com" in joined


def cause_for_auth(code: int, reply: str, settings: SmtpSettings, provider: str | None, greeting: str) -> str:
    host = settings.host.lower()
    if is_google_server(settings, provider, reply, greeting) and code in (534, 535):
        return ("Gmail and Google Workspace refuse the account's own password over SMTP: create an app password "
                "(Google Account > Security > 2-Step Verification > App passwords) and use it as the password, "
                "or use OAuth2 (authMethod=XOAUTH2)")
    if host in MICROSOFT_HOSTS or provider == "microsoft365" or "smtpclientauthentication" in reply.lower():
        return ("Microsoft 365 refuses passwords when SMTP AUTH (basic authentication) is disabled for the mailbox "
                "or tenant: enable Authenticated SMTP for this mailbox, or use OAuth2 (authMethod=XOAUTH2)")
    if host == "smtp.sendgrid.net" or provider == "sendgrid":
        return "SendGrid takes the user name 'apikey' and an API key with Mail Send permission as the password"
    if code == 535:
        return ("the server refused the user name or password: check the user in the URI (often the full address) "
                "and the password you gave (was it rotated? a newline in a pasted secret?)")
    if code == 534:
        return "the server wants a stronger mechanism or an application-specific password for this account"
    if code == 530:
        return "the server wants TLS before AUTH: use smtp:// with STARTTLS (do not set ignoreTLS) or smtps://"
    if 400 <= code < 500:
        return "a temporary refusal (the server or its user directory is busy): try again shortly"
    return "the server refused the credentials"


def cause_for_certificate(error: ssl.SSLCertVerificationError, settings: SmtpSettings, names: Sequence[str],
                          cert: dict[str, Any] | None) -> str:
    code = error.verify_code
    message = (error.verify_message or "").lower()
    if code in _X509_NAME_MISMATCH or "mismatch" in message:
        listed = ", ".join(names) if names else "(none readable)"
        return (f"certificate name mismatch: the server's certificate is for {listed}, not '{settings.tls_name}': use "
                "one of those names as the host in the URI, or set tlsServername=<that name> when you must connect "
                "by another name (an IP address, an internal alias)")
    if code == _X509_EXPIRED or "expired" in message:
        expiry = f" on {cert['not_after']}" if cert else ""
        return f"the server's certificate expired{expiry}: the server's operator must renew it"
    if code in _X509_UNTRUSTED or "self-signed" in message or "issuer" in message:
        issuer = f" (issuer: {cert['issuer']})" if cert else ""
        return (f"the certificate is not signed by a CA this machine trusts{issuer}: set tlsCaFile=<the CA's PEM file> "
                "in the URI for a private CA")
    return f"certificate verification failed ({error.verify_message}); see the certificate above"


# -- certificates ----------------------------------------------------------------------------------


def describe_certificate(der: bytes | None) -> dict[str, Any] | None:
    """Subject, issuer, names, expiry and days left of a DER certificate (None if unreadable)."""
    if not der:
        return None
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - cryptography comes with the dev environment (trustme)
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    names: list[str] = []
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*sans.get_values_for_type(x509.DNSName), *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        pass
    not_after = cert.not_valid_after_utc
    days_left = (not_after - datetime.now(timezone.utc)).days
    return {
        "subject": cert.subject.rfc4514_string() or "(empty)",
        "issuer": cert.issuer.rfc4514_string() or "(empty)",
        "names": names,
        "not_after": not_after.strftime("%Y-%m-%d %H:%M UTC"),
        "days_left": days_left,
    }


def _certificate_line(cert: dict[str, Any] | None) -> str:
    if cert is None:
        return "certificate: (not readable)"
    return (f"subject {cert['subject']}; issuer {cert['issuer']}; names {', '.join(cert['names']) or '(none)'}; "
            f"expires {cert['not_after']} ({cert['days_left']} days left)")


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# -- the session -----------------------------------------------------------------------------------


class _Client(smtplib.SMTP):
    """smtplib's reply parsing and EHLO bookkeeping on a socket this module connects (and times) itself."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket, ehlo_name: str, timeout: float) -> None:
        super().__init__(local_hostname=ehlo_name, timeout=timeout)
        self.sock = sock
        self.file = None

    def use(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock, self.file = sock, None
        self.helo_resp = self.ehlo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False


def _reply_text(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join([str(code), *(line.strip() for line in text.splitlines() if line.strip())])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _timed_out(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, (TimeoutError, socket.timeout)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Checker:
    def __init__(self, target: Target, report: Report, *, send_to: str | None, mail_from: str | None,
                 environ: dict[str, str] | None = None) -> None:
        self.environ = {} if environ is None else environ
        self.credentials: Any = None  # XOAUTH2: the function's Credentials, for the test message's pool
        self.target = target
        self.settings = target.settings
        self.report = report
        self.send_to = send_to
        self.mail_from = mail_from
        self.greeting = ""
        self.client: _Client | None = None
        self.addresses: list[tuple[int, tuple[Any, ...]]] = []

    # Each step returns True to go on.

    def run(self) -> None:
        try:
            if not (self.dns() and self.tcp() and self.tls_implicit() and self.greet() and self.ehlo()
                    and self.starttls() and self.capabilities() and self.auth()):
                return
        finally:
            self._quit()
        if self.send_to:
            self.send()

    def dns(self) -> bool:
        settings, timer = self.settings, _Timer()
        try:
            ipaddress.ip_address(settings.host)
            literal = True
        except ValueError:
            literal = False
        try:
            infos = _resolve(settings.host, settings.port, settings.connection_timeout)
        except socket.gaierror as error:
            self.report.add(Step("DNS", FAIL, timer.ms, f"{settings.host}: {error.strerror or error}",
                                 cause_for_dns(settings.host, error)))
            return False
        except TimeoutError:
            self.report.add(Step("DNS", FAIL, timer.ms, f"{settings.host}: no answer within {settings.connection_timeout:g}s",
                                 "this machine's DNS resolver does not answer: check its network and resolver settings"))
            return False
        seen: dict[str, tuple[int, tuple[Any, ...]]] = {}
        for family, _type, _proto, _name, sockaddr in infos:
            seen.setdefault(sockaddr[0], (family, sockaddr))
        self.addresses = list(seen.values())
        shown = ", ".join(seen)
        detail = f"{settings.host} is an address (no lookup)" if literal else f"{settings.host} -> {shown}"
        self.report.add(Step("DNS", OK, timer.ms, detail, data={"addresses": list(seen)}))
        return True

    def tcp(self) -> bool:
        settings, timer = self.settings, _Timer()
        failures: list[str] = []
        last_error: OSError | None = None
        for family, sockaddr in self.addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(settings.connection_timeout)
            try:
                sock.connect(sockaddr)
            except OSError as error:
                sock.close()
                last_error = error
                failures.append(f"{sockaddr[0]}: {'timed out' if _timed_out(error) else (error.strerror or type(error).__name__)}")
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock: socket.socket | ssl.SSLSocket = sock
            self.peer = sockaddr
            before = f" (after {'; '.join(failures)})" if failures else ""
            self.report.add(Step("TCP", OK, timer.ms, f"connected to {_peer(sockaddr)}{before}",
                                 data={"address": sockaddr[0], "port": sockaddr[1]}))
            return True
        detail = f"could not connect to port {settings.port}: {'; '.join(failures)}"
        if last_error is not None and _timed_out(last_error):
            cause = cause_for_connect_timeout(settings, settings.connection_timeout)
        elif isinstance(last_error, ConnectionRefusedError):
            cause = cause_for_refused(settings)
        else:
            cause = f"the network cannot reach {settings.address} ({last_error}); check routes and firewalls"
        self.report.add(Step("TCP", FAIL, timer.ms, detail, cause))
        return False

    def _handshake(self, sock: socket.socket, how: str) -> ssl.SSLSocket | None:
        """TLS on a connected socket; reports the TLS step either way. None when it failed (sock closed)."""
        settings, timer = self.settings, _Timer()
        try:
            context = _build_tls_context(settings)
        except SmtpConfigError as error:
            sock.close()
            self.report.add(Step("TLS", FAIL, timer.ms, str(error), "fix option tlsCaFile in the URI"))
            return None
        sock.settimeout(settings.connection_timeout)
        try:
            tls = context.wrap_socket(sock, server_hostname=settings.tls_name)
        except ssl.SSLCertVerificationError as error:
            sock.close()
            cert = self._fetch_certificate()
            names = cert["names"] if cert else []
            self.report.add(Step(
                "TLS", FAIL, timer.ms,
                f"{how}: certificate not accepted for '{settings.tls_name}': {(error.verify_message or '').rstrip('.')}; "
                f"{_certificate_line(cert)}",
                cause_for_certificate(error, settings, names, cert),
                data={"certificate": cert, "verify_code": error.verify_code},
            ))
            return None
        except (ssl.SSLError, OSError) as error:
            sock.close()
            self.report.add(Step("TLS", FAIL, timer.ms, f"{how}: handshake failed: {_tls_reason(error)}",
                                 self._cause_for_failed_handshake(error)))
            return None
        tls.settimeout(settings.socket_timeout)
        cert = describe_certificate(tls.getpeercert(binary_form=True))
        cipher = tls.cipher()
        version = tls.version() or "?"
        verified = context.verify_mode != ssl.CERT_NONE
        detail = f"{how}: {version} {cipher[0] if cipher else '?'}; {_certificate_line(cert)}"
        status, cause = OK, None
        if not verified:
            status, cause = WARN, "tlsRejectUnauthorized=false: the certificate is not checked; anyone on the path can read the password"
        elif cert and cert["days_left"] < CERT_EXPIRY_WARN_DAYS:
            status, cause = WARN, f"the certificate expires in {cert['days_left']} days: the server's operator must renew it soon"
        self.report.add(Step("TLS", status, timer.ms, detail, cause,
                             data={"mode": how, "protocol": version, "cipher": cipher[0] if cipher else None,
                                   "certificate": cert, "verified": verified}))
        return tls

    def _cause_for_failed_handshake(self, error: BaseException) -> str:
        settings = self.settings
        if _timed_out(error):
            return f"the TLS handshake got no answer within {settings.connection_timeout:g}s: " + self._what_speaks_there()
        plain = self._probe_plaintext_greeting()
        if plain is not None:
            if settings.implicit_tls:
                return (f"the server speaks plaintext SMTP on port {settings.port} (it greeted '{plain}'): use smtp:// "
                        f"for {settings.port} (STARTTLS); smtps:// is for implicit TLS, usually port 465")
            return f"the server answered the TLS handshake with plaintext '{plain}'"
        return "the server and this client share no TLS version or cipher, or something on the path breaks TLS"

    def _what_speaks_there(self) -> str:
        plain = self._probe_plaintext_greeting()
        if plain is not None:
            return f"the port speaks plaintext SMTP (it greeted '{plain}'): use smtp:// for port {self.settings.port}"
        return "the port does not answer TLS or SMTP: check host and port"

    def _probe_plaintext_greeting(self) -> str | None:
        """A fresh connection: does the server greet in plaintext before the client says anything?"""
        try:
            with socket.create_connection(self.peer[:2], PROBE_TIMEOUT_SECONDS) as probe:
                probe.settimeout(PROBE_TIMEOUT_SECONDS)
                data = probe.recv(512)
        except OSError:
            return None
        line = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        if len(line) >= 3 and line[:3].isdigit():
            return line[:80]
        return None

    def _probe_implicit_tls(self) -> bool:
        """A fresh connection: does the port complete a TLS handshake right away (implicit TLS)?"""
        try:
            with socket.create_connection(self.peer[:2], PROBE_TIMEOUT_SECONDS) as probe:
                probe.settimeout(PROBE_TIMEOUT_SECONDS)
                with _unverified_context().wrap_socket(probe, server_hostname=self.settings.tls_name):
                    return True
        except (OSError, ssl.SSLError):
            return False

    def _fetch_certificate(self) -> dict[str, Any] | None:
        """The certificate the server shows, read over a fresh connection without checking it (to name
        what it is for when verification failed)."""
        settings = self.settings
        try:
            with socket.create_connection(self.peer[:2], PROBE_TIMEOUT_SECONDS) as probe:
                probe.settimeout(PROBE_TIMEOUT_SECONDS)
                if not settings.implicit_tls:
                    client = _Client(probe, "check.invalid", PROBE_TIMEOUT_SECONDS)
                    client.getreply()
                    client.ehlo()
                    code, _ = client.docmd("STARTTLS")
                    if code != 220:
                        return None
                with _unverified_context().wrap_socket(probe, server_hostname=settings.tls_name) as tls:
                    return describe_certificate(tls.getpeercert(binary_form=True))
        except (OSError, ssl.SSLError, smtplib.SMTPException):
            return None

    def tls_implicit(self) -> bool:
        if not self.settings.implicit_tls:
            return True
        tls = self._handshake(self.sock, "implicit TLS (smtps://)")
        if tls is None:
            return False
        self.sock = tls
        return True

    def greet(self) -> bool:
        settings, timer = self.settings, _Timer()
        self.sock.settimeout(settings.greeting_timeout)
        ehlo_name = settings.ehlo_name or _default_ehlo_name(self.sock)
        self.client = _Client(self.sock, ehlo_name, settings.socket_timeout)
        try:
            code, reply = self.client.getreply()
        except (smtplib.SMTPException, OSError) as error:
            if _timed_out(error):
                if not settings.implicit_tls and self._probe_implicit_tls():
                    cause = (f"the server on port {settings.port} expects TLS from the first byte (implicit TLS): use "
                             f"smtps:// for port {settings.port} (smtp:// is for STARTTLS, usually port 587)")
                else:
                    cause = "the server accepted the connection but never greeted: it is overloaded or not an SMTP server"
                self.report.add(Step("greeting", FAIL, timer.ms, f"no greeting within {settings.greeting_timeout:g}s", cause))
            else:
                self.report.add(Step("greeting", FAIL, timer.ms, f"connection closed before the greeting ({error})",
                                     "the server hung up at once: it refuses this client's address, or is shutting down"))
            return False
        self.greeting = _reply_text(code, reply)
        if code != 220:
            self.report.add(Step("greeting", FAIL, timer.ms, self.greeting,
                                 "the server refuses sessions right now (421: busy, try later; 554: it refuses this address)"))
            return False
        self.sock.settimeout(settings.socket_timeout)
        self.report.add(Step("greeting", OK, timer.ms, self.greeting))
        return True

    def _ehlo(self) -> tuple[int, str]:
        assert self.client is not None
        code, reply = self.client.ehlo()
        if code != 250:
            code, reply = self.client.helo()
        return code, _reply_text(code, reply)

    def ehlo(self) -> bool:
        timer = _Timer()
        try:
            code, text = self._ehlo()
        except (smtplib.SMTPException, OSError) as error:
            self.report.add(Step("EHLO", FAIL, timer.ms, f"no reply to EHLO: {error}", "the server hung up after the greeting"))
            return False
        if code != 250:
            self.report.add(Step("EHLO", FAIL, timer.ms, text, "the server refuses EHLO and HELO from this client"))
            return False
        assert self.client is not None
        if not self.settings.implicit_tls and not self.settings.ignore_tls:
            starttls = "offers STARTTLS" if self.client.has_extn("starttls") else "does not offer STARTTLS"
            self.report.add(Step("EHLO", OK, timer.ms, f"{self.client.local_hostname}: 250, {starttls}"))
        return True

    def starttls(self) -> bool:
        settings = self.settings
        assert self.client is not None
        if settings.implicit_tls:
            return True
        if settings.ignore_tls:
            self.report.add(Step("TLS", SKIP, 0, "ignoreTLS=true: the session stays plaintext"))
            return True
        timer = _Timer()
        if not self.client.has_extn("starttls"):
            if settings.require_tls or (settings.username and not settings.allow_plaintext_auth):
                why = "requireTLS=true" if settings.require_tls else "the function will not send the password in plaintext"
                self.report.add(Step("TLS", FAIL, timer.ms, f"the server does not offer STARTTLS ({why})",
                                     f"port {settings.port} serves plaintext only: use the provider's submission port "
                                     "(587 with smtp://, or 465 with smtps://)"))
                return False
            self.report.add(Step("TLS", WARN, timer.ms, "the server does not offer STARTTLS: mail goes in plaintext"))
            return True
        try:
            code, reply = self.client.docmd("STARTTLS")
        except (smtplib.SMTPException, OSError) as error:
            self.report.add(Step("TLS", FAIL, timer.ms, f"no reply to STARTTLS: {error}", "the server hung up at STARTTLS"))
            return False
        if code != 220:
            self.report.add(Step("TLS", FAIL, timer.ms, f"STARTTLS refused: {_reply_text(code, reply)}",
                                 "the server offers STARTTLS but will not start it now"))
            return False
        tls = self._handshake(self.sock, "STARTTLS")  # (times itself from here)
        if tls is None:
            return False
        self.sock = tls
        self.client.use(tls)
        try:
            code, text = self._ehlo()  # capabilities must be asked again over TLS (RFC 3207)
        except (smtplib.SMTPException, OSError) as error:
            self.report.add(Step("EHLO", FAIL, 0, f"no reply to EHLO after STARTTLS: {error}", "the server hung up after TLS"))
            return False
        if code != 250:
            self.report.add(Step("EHLO", FAIL, 0, f"after STARTTLS: {text}", "the server refuses EHLO over TLS"))
            return False
        return True

    def capabilities(self) -> bool:
        assert self.client is not None
        timer = _Timer()
        features = self.client.esmtp_features
        found: dict[str, Any] = {}
        parts: list[str] = []
        for name in CAPABILITIES:
            value = features.get(name.lower())
            if name == "SIZE":
                limit = int(value) if value and value.strip().isdigit() else None
                found[name] = limit if value is not None else False
                parts.append(f"SIZE {_size(limit)}" if value is not None else "SIZE no")
            else:
                found[name] = value is not None
                parts.append(f"{name} {'yes' if value is not None else 'no'}")
        auth = features.get("auth")
        methods = auth.upper().split() if auth else []
        found["AUTH"] = methods
        parts.append(f"AUTH {' '.join(methods) if methods else '(none)'}")
        notes: list[str] = []
        if not found["SMTPUTF8"]:
            notes.append("without SMTPUTF8, mail to or from non-ASCII addresses is refused (ERROR naming the address)")
        limit = found["SIZE"]
        ours = self.target.max_message_bytes
        if isinstance(limit, int) and limit and ours and limit < ours:
            notes.append(f"the server takes at most {_size(limit)} but mailer:maxMessageBytes is {_size(ours)}: lower it")
        status = WARN if notes else OK
        self.report.add(Step("EHLO", status, timer.ms, ", ".join(parts), "; ".join(notes) or None,
                             data={"capabilities": found, "ehlo_name": self.client.local_hostname}))
        return True

    def auth(self) -> bool:
        settings, target, timer = self.settings, self.target, _Timer()
        assert self.client is not None
        if not settings.username:
            self.report.add(Step("AUTH", SKIP, 0, "no user in the URI: the function sends without authenticating"))
            return True
        if (settings.auth_method or "").upper() == "XOAUTH2":
            return self._xoauth2(timer)
        if settings.password is None:
            self.report.add(Step("AUTH", SKIP, 0, f"user {settings.username}: {target.password_note}"))
            return True
        offered = (self.client.esmtp_features.get("auth") or "").upper().split()
        if not offered:
            self.report.add(Step("AUTH", FAIL, timer.ms, "the server offers no AUTH on this connection",
                                 "this port takes no logins (a relay port?): use the provider's submission port, "
                                 "or remove the user from the URI if the server relays for your address"))
            return False
        wanted = [settings.auth_method] if settings.auth_method else ["PLAIN", "LOGIN"]
        usable = [method for method in wanted if method in offered]
        if not usable:
            self.report.add(Step("AUTH", FAIL, timer.ms, f"the server offers AUTH {' '.join(offered)}, not {' or '.join(wanted)}",
                                 "set authMethod to one the server offers (PLAIN or LOGIN)" if settings.auth_method
                                 else "the server offers neither PLAIN nor LOGIN"))
            return False
        method = usable[0]
        username, password = settings.username, settings.password
        try:
            code, reply = auth_password(self.client, method, username, password)
        except (smtplib.SMTPException, OSError) as error:
            self.report.add(Step("AUTH", FAIL, timer.ms, f"{method}: connection lost: {error}",
                                 "the server hung up during AUTH (too many failed logins from this address?)"))
            return False
        text = _reply_text(code, reply)
        where = f"{method} as {username} (password from {target.password_source})"
        if code != 235:
            self.report.add(Step("AUTH", FAIL, timer.ms, f"{where}: {text}",
                                 cause_for_auth(code, text, settings, target.provider, self.greeting),
                                 data={"method": method, "code": code}))
            return False
        self.report.add(Step("AUTH", OK, timer.ms, f"{where}: {text}", data={"method": method, "code": code}))
        return True

    def _xoauth2(self, timer: _Timer) -> bool:
        """An access token from the token endpoint (the function's own TokenSource, with the refresh
        token and client secret from the environment), then SASL XOAUTH2 with it."""
        settings, redact = self.settings, self.report.redact
        assert self.client is not None
        try:
            from mailer.credentials import CredentialError, Credentials, PinnedSecret
            from mailer.oauth2 import TokenSource
        except ImportError:
            self.report.add(Step("AUTH", SKIP, 0, f"authMethod=XOAUTH2: {XOAUTH2_NOT_SUPPORTED}"))
            return True
        refresh_token = self.environ.get(REFRESH_TOKEN_VAR)
        client_secret = self.environ.get(CLIENT_SECRET_VAR) or None
        if not refresh_token:
            self.report.add(Step("AUTH", SKIP, 0, f"XOAUTH2 as {settings.username}: {self.target.oauth2_note or _oauth2_note()}"))
            return True
        offered = (self.client.esmtp_features.get("auth") or "").upper().split()
        if XOAUTH2 not in offered:
            self.report.add(Step("AUTH", FAIL, timer.ms, f"the server offers AUTH {' '.join(offered) or '(none)'}, not XOAUTH2",
                                 "this server does not take OAuth2 tokens: use the provider's OAuth2 SMTP host "
                                 "(smtp.gmail.com, smtp.office365.com) or a password"))
            return False
        rotated: list[str] = []

        class _KeptHere(PinnedSecret):
            """A refresh token the endpoint replaces is used for this run only (and masked), never stored."""

            def store(self, value: str) -> None:
                redact.add(value)
                rotated.append(value)
                with self._lock:
                    self._value = value

        secret = PinnedSecret(CLIENT_SECRET_VAR, client_secret) if client_secret else None
        refresh = _KeptHere(REFRESH_TOKEN_VAR, refresh_token)
        # As the function: the token endpoint is always verified (tlsRejectUnauthorized is the SMTP server's).
        tls_context = _token_tls_context(settings)
        source = TokenSource(settings.oauth2_token_url, settings.oauth2_client_id, secret, refresh,
                             timeout=settings.connection_timeout, tls_context=tls_context)
        endpoint = (settings.oauth2_token_url or "").split("?")[0]
        try:
            token = source.token()
        except CredentialError as error:
            self.report.add(Step("token", FAIL, timer.ms, error.message, _cause_for_token(error)))
            return False
        redact.add(token)
        redact.add(xoauth2_initial_response(settings.username, token))
        note = None
        if rotated:
            note = ("the endpoint issued a new refresh token (it rotates them, as Microsoft does); this command does not "
                    "store it: the function stores its own rotations in Secret Manager")
        self.report.add(Step("token", WARN if note else OK, timer.ms,
                             f"access token from {endpoint} for client {settings.oauth2_client_id}", note,
                             data={"endpoint": endpoint, "rotated": bool(rotated)}))
        self.credentials = Credentials(oauth2_client_secret=secret, oauth2_refresh_token=refresh)
        timer = _Timer()
        try:
            refused: list[tuple[int, bytes]] = []
            code, reply, challenge = auth_xoauth2(self.client, settings.username, token, refused)
        except (smtplib.SMTPException, OSError) as error:
            self.report.add(Step("AUTH", FAIL, timer.ms, f"XOAUTH2: connection lost: {error}", "the server hung up during AUTH"))
            return False
        text = _reply_text(code, reply)
        where = f"XOAUTH2 as {settings.username}"
        if code != 235:
            shown = f" (challenge: {json.dumps(challenge, ensure_ascii=False)})" if challenge else ""
            if refused and (code in (500, 501) or len(refused) > 1):
                # The AUTH line was refused as too long (and the bare form too): the token was never judged,
                # so the mailbox or the scope is not the cause; say what the function would write.
                cause = f"the line, not the token: {_xoauth2_line_refused(settings, code, reply, token, refused)}"
            else:
                cause = _cause_for_xoauth2(settings, self.target.provider, challenge)
            self.report.add(Step("AUTH", FAIL, timer.ms, f"{where}: {text}{shown}", cause,
                                 data={"method": XOAUTH2, "code": code, "challenge": challenge}))
            return False
        self.report.add(Step("AUTH", OK, timer.ms, f"{where}: {text}", data={"method": XOAUTH2, "code": code}))
        return True

    def send(self) -> None:
        """The test message through the function's own composer and transport, on a connection of its own."""
        from mailer.compose import ComposeDefaults, compose
        from mailer.document import MailInputError, parse_mail_document
        from mailer.transport import DeliveryError, SmtpPool

        timer = _Timer()
        sender = self.mail_from or self.target.default_from
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        document = {
            "to": [self.send_to],
            "from": sender,
            "message": {
                "subject": f"mailer check: {self.settings.host} works ({when})",
                "text": (f"This test message was sent by `make check` ({self.report.source}) through "
                         f"{shown_uri(self.settings)} at {when}.\r\nIf you can read it, the function can send mail "
                         "with these settings.\r\n"),
            },
        }
        try:
            request = parse_mail_document(document)
            composed = compose(request, ComposeDefaults(None, None, self.target.max_message_bytes or 10 * 2**20))
        except MailInputError as error:
            flag = "--from" if error.field.startswith("from") else "--send-to"
            self.report.add(Step("send", FAIL, timer.ms, f"{flag}: {error}", f"give a valid address with {flag}"))
            return
        settings = replace(self.settings, pool=False, max_connections=1)
        pool = SmtpPool(settings, self.credentials) if self.credentials is not None else SmtpPool(settings)
        try:
            result = pool.send(composed.envelope_from, composed.recipients, composed.payload, composed.smtputf8)
        except DeliveryError as error:
            self.report.add(Step("send", FAIL, timer.ms, f"to {self.send_to}: {error.message}",
                                 _cause_for_send(error, self.settings, self.target.provider, self.greeting)))
            return
        finally:
            pool.close()
        if result.accepted:
            self.report.add(Step("send", OK, timer.ms,
                                 f"to {self.send_to} from {composed.envelope_from}: {result.response}; Message-ID {composed.message_id}",
                                 data={"message_id": composed.message_id, "response": result.response}))
        else:
            self.report.add(Step("send", FAIL, timer.ms, f"to {self.send_to}: not accepted: {result.deferred_reason}",
                                 "the server refused the recipient"))

    def _quit(self) -> None:
        if self.client is not None:
            try:
                self.client.sock.settimeout(2)
                self.client.docmd("QUIT")
            except (smtplib.SMTPException, OSError, AttributeError):
                pass
        sock = getattr(self, "sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _cause_for_send(error: Any, settings: SmtpSettings, provider: str | None, greeting: str) -> str:
    code = error.code
    if code in (534, 535):
        return cause_for_auth(code, error.message, settings, provider, greeting)
    if code == 530:
        return "the server wants authentication: add the user to the URI and give the password"
    if code in (550, 553, 554) and "sender" in error.message.lower():
        return "the server does not let this account send as that From address: use --from with an address it owns"
    if code is not None and 500 <= code < 600:
        return "the server refused the message; its reply above says why"
    return "a temporary failure: the function would retry it"


def _oauth2_note(prefix: str = "<resourcePrefix>", project: str = "<project>") -> str:
    return (f"set {REFRESH_TOKEN_VAR} (and {CLIENT_SECRET_VAR} unless the client is public), e.g. the deployed ones: "
            f"{REFRESH_TOKEN_VAR}=$(gcloud secrets versions access latest --secret {prefix}-oauth2-refresh-token "
            f"--project {project})")


def _cause_for_token(error: Any) -> str:
    text = error.message
    if "must be renewed" in text or "invalid_grant" in text:
        return ("the refresh token is revoked or expired (a password change, a revoked grant, 6 months unused, or a "
                "Google project in 'Testing' mode, whose tokens last 7 days): authorize the mailbox again")
    if "invalid_client" in text or "unauthorized_client" in text:
        return f"option 'oauth2ClientId' and {CLIENT_SECRET_VAR} do not belong together (or the client was deleted)"
    if error.transient:
        return "the token endpoint is unreachable or failing right now: check option 'oauth2TokenUrl' and try again"
    return "the token endpoint refused the grant; its answer above says why"


def _cause_for_xoauth2(settings: SmtpSettings, provider: str | None, challenge: dict[str, Any] | None) -> str:
    host = settings.host.lower()
    scope = (challenge or {}).get("scope")
    if provider in ("gmail", "google-workspace") or host in GMAIL_HOSTS:
        need = "https://mail.google.com/"
    elif provider == "microsoft365" or host in MICROSOFT_HOSTS:
        need = "https://outlook.office.com/SMTP.Send (and SMTP AUTH enabled for the mailbox)"
    else:
        need = f"the scope the server names ({scope})" if scope else "the provider's SMTP scope"
    return (f"the server refused the access token: the URI's user ({settings.username}) must be the mailbox that "
            f"authorized the refresh token, and the token needs {need}")


def _resolve(host: str, port: int, timeout: float) -> list[Any]:
    """getaddrinfo, given up on after `timeout` (the lookup itself cannot be interrupted: it is left to
    finish in a daemon thread). Raises socket.gaierror or TimeoutError."""
    outcome: list[Any] = []

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except socket.gaierror as error:
            outcome.append(error)

    worker = threading.Thread(target=lookup, name="check-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise TimeoutError(host)
    if isinstance(outcome[0], socket.gaierror):
        raise outcome[0]
    return outcome[0]


def _peer(sockaddr: tuple[Any, ...]) -> str:
    host = sockaddr[0]
    return f"[{host}]:{sockaddr[1]}" if ":" in host else f"{host}:{sockaddr[1]}"


def _size(limit: int | None) -> str:
    if not limit:
        return "(no limit given)"
    return f"{limit} bytes ({limit / 2**20:.1f} MiB)"


def _tls_reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or error.strerror or type(error).__name__
    if _timed_out(error):
        return "timed out"
    return getattr(error, "strerror", None) or type(error).__name__


# -- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make check" if os.environ.get("MAKELEVEL") else "python -m ops.check",
        description=(
            "Connect to a stack's SMTP server the way the function does and print each step with its time "
            "and ok/FAIL: DNS, TCP, TLS (certificate), EHLO capabilities, AUTH, and with --send-to a test "
            "message. A failure names its likely cause. Never prints the password."
        ),
        epilog=(
            "Examples:\n"
            "  pulumi config get mailer:smtpPassword --stack prod | make check STACK=prod ARGS=--password-stdin\n"
            "  SMTP_PASSWORD=... make check STACK=prod ARGS=\"--send-to you@example.com\"\n"
            "  python -m ops.check --uri smtps://me@smtp.gmail.com:465 --password-stdin --json\n"
            f"XOAUTH2 (authMethod=XOAUTH2, e.g. the microsoft365 preset): set ${REFRESH_TOKEN_VAR} and ${CLIENT_SECRET_VAR}\n"
            "  instead of a password; the command gets an access token (the token step), then authenticates.\n"
            "Exit codes: 0 every step passed (warn and skip included), 1 a step failed, 2 bad arguments or settings."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="read stacks/Pulumi.<STACK>.yaml through the program's config model")
    source.add_argument("--uri", help="an SMTP_CONNECTION_URI to check instead of a stack (no password in it, please)")
    parser.add_argument("--password-stdin", action="store_true",
                        help=f"read the SMTP password from standard input (else ${PASSWORD_VAR}, else none: AUTH is skipped)")
    parser.add_argument("--send-to", metavar="ADDRESS", help="after the checks, send a short test message to ADDRESS")
    parser.add_argument("--from", dest="mail_from", metavar="ADDRESS",
                        help="From of the test message (default: the stack's mailer:defaultFrom)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="wait at most this long for the connection, the greeting and each reply "
                             "(default: the URI's connectionTimeout, greetingTimeout and socketTimeout)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    return parser


def read_password(args: argparse.Namespace, stdin: TextIO, environ: dict[str, str]) -> tuple[str | None, str | None]:
    if args.password_stdin:
        value = stdin.readline()
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
        if not value:
            raise UsageError("--password-stdin: standard input is empty; pipe the password in")
        return value, "--password-stdin"
    value = environ.get(PASSWORD_VAR)
    if value:
        return value, PASSWORD_VAR
    return None, None


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         environ: dict[str, str] | None = None) -> int:
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    environ = dict(os.environ) if environ is None else environ
    args = build_parser().parse_args(argv)
    redact = Redactor()
    started = time.perf_counter()
    report = Report(out, redact, args.json)
    try:
        password, password_source = read_password(args, stdin, environ)
        redact.add(password)
        for name in (CLIENT_SECRET_VAR, REFRESH_TOKEN_VAR):
            redact.add(environ.get(name))
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError("--timeout must be a positive number of seconds")
        target = stack_target(args.stack, password, password_source) if args.stack else uri_target(args.uri, password, password_source)
        redact.add(target.settings.password, target.settings.username)
        if args.send_to and not (args.mail_from or target.default_from):
            raise UsageError("--send-to needs a From address: give --from (a stack has mailer:defaultFrom)")
    except UsageError as error:
        message = redact(str(error))
        if args.json:
            print(json.dumps({"ok": False, "error": message}), file=out)
        else:
            print(f"check: {message}", file=sys.stderr if stdout is None else out)
        return EXIT_USAGE
    if args.timeout is not None:
        target.settings = replace(target.settings, connection_timeout=args.timeout, greeting_timeout=args.timeout,
                                  socket_timeout=args.timeout)
    report.header(shown_uri(target.settings), target.source)
    Checker(target, report, send_to=args.send_to, mail_from=args.mail_from, environ=environ).run()
    return report.finish(started)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
