"""Send one message over SMTP, reusing warm connections across calls (stdlib only).

The envelope is driven command by command instead of smtplib.sendmail, which drops the final reply
to DATA and hides which recipients were refused. Every failure becomes a DeliveryError that says
whether trying again later can help (.transient), whether the server may have accepted the message
anyway (.outcome_unknown) and carries one line of text without secrets.

One send may take several transactions on one connection: when the server answers RCPT with 452
("too many recipients", RFC 5321 4.5.3.1.10) the recipients accepted so far get the message and the
rest follow in a further transaction with the same bytes (so the same Message-ID). Once one
transaction's data was accepted a send never raises: what a later transaction could not deliver is
reported per recipient (SendResult.pending / .rejected / .unknown, and .deferred_reason).

A message is an EmailMessage (serialized here, without Bcc) or bytes already serialized (sent as
they are); either way it is normalized to CRLF and dot-stuffed once per send.

Pipelining (RFC 2920). When the last EHLO advertised PIPELINING, MAIL FROM, every RCPT TO and DATA
go in one write and their replies are read in order, each classified as the lockstep path does.
EHLO, STARTTLS and AUTH are never pipelined. Differences that follow from sending ahead:
- every RCPT was sent, so RCPT replies after the first "too many recipients" are read too; they
  settle nothing (those recipients go to a further transaction), except a 2xx, which means the
  server put that recipient in this envelope and will deliver this data to it: it counts as accepted;
- when no recipient was accepted, DATA was sent anyway; the server refuses it (503/554, RFC 2920
  3.1), the client reads that refusal, sends RSET and no data (a server that answers 354 there is
  dropped rather than fed a message nobody would receive);
- a failed MAIL FROM raises at once and the connection is dropped, so the replies still due on it
  never matter.
On a warm connection that is 2 round trips per message (envelope, then data + final reply) instead
of 3 + one per recipient. An envelope of more than RCPT_GROUP recipients goes in groups of RCPT
commands, one round trip each (RFC 2920 3.2: writing without reading can deadlock once both
directions' buffers are full), and no group follows a "too many recipients". Without PIPELINING
the client works in lockstep.

Chaining (pipelining only). Senders get one of maxConnections slots first come, first served (a
FIFO of waiters; a newcomer never overtakes a queued sender). When the holder of a connection is
about to write the data of its last transaction and another sender is queued, it claims the oldest
waiter (taking it out of the queue, under the pool lock), builds that sender's envelope for this
connection (no I/O) and writes its own data, the final ".", and the waiter's MAIL/RCPT/DATA in one
write. It then reads its own final reply and finishes; the slot passes to the claimed waiter:
- if the holder's connection is still healthy (its send succeeded, the connection is neither
  recycled nor the pool closed), the waiter gets the connection with "envelope already written" and
  starts by reading its MAIL/RCPT/DATA replies, then writes its data (chaining the next waiter);
- otherwise (any failure of the holder's transaction, including a lost final reply) the connection
  is closed and the waiter gets the slot without a connection: it takes an idle one or connects.
Why that is safe: a sender's data is only ever written by that sender, after it read its own 354
on the connection it holds. A claimed envelope without its data can never deliver anything, so
whatever happens to the holder, the waiter either reads its own replies on the connection they
belong to (replies come in order: the holder consumed exactly its own), or starts again from
nothing on another connection. A busy connection thus costs about 1 round trip per message. A
claimed waiter is no longer subject to the wait-for-a-slot timeout: it waits for the holder's
final reply, which the socket timeout bounds.
"""

from __future__ import annotations

import base64
import copy
import email.message
import email.policy
import logging
import re
import select
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mailer.credentials import CredentialError, Credentials, PinnedSecret, Secret
from mailer.dsn import DsnRequest
from mailer.smtp_uri import URI_NAME, XOAUTH2, SmtpConfigError, SmtpSettings, parse_smtp_uri

__all__ = [
    "DeliveryError",
    "SendResult",
    "SmtpConfigError",
    "SmtpPool",
    "SmtpSettings",
    "parse_smtp_uri",
    "pool_for",
]

log = logging.getLogger("mailer.transport")

# Servers drop idle clients (postfix after 300 s, many providers after 30-60 s): reconnect rather
# than reuse a connection that sat longer than this.
IDLE_RECONNECT_SECONDS = 30.0
# Pipelined RCPTs per write (RFC 2920 3.2: a client that writes without reading can deadlock once
# both directions' buffers fill). A larger envelope goes in groups, one round trip each.
RCPT_GROUP = 100
# Bound on a courtesy QUIT so closing a connection never stalls a send for a full socketTimeout.
QUIT_TIMEOUT_SECONDS = 2.0
# RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF. RFC 4954 4 holds AUTH to it
# (an initial response that would pass it goes on a line of its own, after the server's empty
# challenge) and names 12,288 octets as enough for such a response line.
COMMAND_LINE_OCTETS = 512
SASL_LINE_OCTETS = 12_288

_TRANSPORT_ERRORS = (smtplib.SMTPException, OSError)
_FORBIDDEN_IN_ADDRESS = re.compile(r"[\s<>\x00-\x1f\x7f]")
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_DATA_OUTCOME_UNKNOWN = "the server may or may not have accepted the message"


@dataclass
class SendResult:
    """What one send did, per recipient. Every recipient is in exactly one of accepted, rejected,
    pending and unknown."""

    accepted: list[str]  # the server accepted the message for these (RCPT 2xx, then DATA 2xx)
    rejected: list[str]  # refused permanently (5xx): do not try again
    pending: list[str]  # not delivered, a later attempt may succeed (4xx, or never tried)
    response: str  # the final reply to the first transaction's data, e.g. "250 2.0.0 Ok: queued as 4Xy"
    # The connection was lost (or timed out) after the final "." of a later transaction and before
    # its reply: the server may or may not have these recipients' copy.
    unknown: list[str] = field(default_factory=list)
    # Why some recipients are pending, rejected by a failed later transaction, or unknown: what ended
    # the send early if something did (one line, no secrets), else the first 4xx reply to RCPT.
    # None when every recipient was accepted or refused at RCPT with 5xx.
    deferred_reason: str | None = None
    # The final reply to each transaction whose data was accepted, in order (1 unless the server
    # limited the recipients per transaction).
    responses: list[str] = field(default_factory=list)


class DeliveryError(Exception):
    """Sending failed: no transaction's data was accepted. .transient: a later attempt may succeed
    (4xx, connection loss, timeouts); False for 5xx, authentication or TLS failures and missing
    server capabilities. .outcome_unknown: the failure came after the final "." of the data was sent
    and before the server's reply (connection lost or reset, timeout, TLS EOF), so the server may
    have accepted the message; such a failure is also transient. .message is one line without
    secrets; .code is the SMTP reply code when there was one; .rejected / .pending list the
    recipients when every recipient was refused at RCPT."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        code: int | None = None,
        rejected: list[str] | None = None,
        pending: list[str] | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.code = code
        self.rejected = list(rejected or [])
        self.pending = list(pending or [])
        self.outcome_unknown = outcome_unknown

    def __str__(self) -> str:
        return self.message

    def redacted(self, secret: str | None) -> DeliveryError:
        """A copy whose message cannot show `secret`, or a long piece of it, whatever a server echoed back."""
        masked = _masked(self.message, secret)
        if masked == self.message:
            return self
        clean = DeliveryError(
            masked,
            transient=self.transient,
            code=self.code,
            rejected=self.rejected,
            pending=self.pending,
            outcome_unknown=self.outcome_unknown,
        )
        clean.__cause__ = self.__cause__
        return clean


# A server refusing a long AUTH line may quote part of it back, cut at its own length ("500 Line too long:
# AUTH XOAUTH2 dXNlcj1..."), or the decoded response: not the whole secret, but a long piece of it. Any
# run of at least this many characters of a secret (or of a base64 form) is masked too.
ECHO_PIECE_CHARS = 16


def _masked(text: str, secret: str | None) -> str:
    """`text` with `secret`, and every run of ECHO_PIECE_CHARS or more of its characters, as ******."""
    if not secret or not text:
        return text
    text = text.replace(secret, "******")
    size = ECHO_PIECE_CHARS
    if len(secret) < size or len(text) < size:
        return text
    pieces = {secret[i:i + size] for i in range(len(secret) - size + 1)}
    spans: list[list[int]] = []
    for start in range(len(text) - size + 1):
        if text[start:start + size] in pieces:
            if spans and start <= spans[-1][1]:
                spans[-1][1] = start + size
            else:
                spans.append([start, start + size])
    for start, end in reversed(spans):
        text = text[:start] + "******" + text[end:]
    return text


class _Transaction:
    """How far one transaction got: per-recipient replies to RCPT and the final reply to its data."""

    def __init__(self, recipients: list[str]) -> None:
        self.recipients = recipients  # offered to this transaction, in order
        self.accepted: list[str] = []
        self.rejected: list[str] = []
        self.pending: list[str] = []
        self.answered = 0  # recipients[:answered] got a RCPT reply that settled them
        self.too_many: tuple[int, bytes] | None = None  # the reply that ended the RCPTs
        self.first_refusal: tuple[int, bytes] | None = None
        self.first_temporary: tuple[int, bytes] | None = None
        self.response: str | None = None  # final reply to the data, once it was accepted
        # Pipelined RCPTs after the "too many recipients" reply that the server accepted anyway:
        # they are in this transaction's envelope and get its data (indexes into recipients).
        self.late_accepted: set[int] = set()

    @property
    def untried(self) -> list[str]:
        """Recipients this transaction did not settle (after "too many recipients" or a failure)."""
        return [recipient for index, recipient in enumerate(self.recipients[self.answered:], self.answered)
                if index not in self.late_accepted]

    def record_late_rcpt(self, index: int, code: int, reply: bytes) -> None:
        """A pipelined RCPT reply after the one that ended the recipients: it settles nothing (the
        recipient goes to a further transaction) unless the server accepted it after all, in which
        case the server will deliver this transaction's data to it."""
        if code == 421:
            raise smtplib.SMTPResponseException(code, reply)
        if 200 <= code < 300:
            self.late_accepted.add(index)
            self.accepted.append(self.recipients[index])

    def record_rcpt(self, recipient: str, code: int, reply: bytes) -> bool:
        """Record one RCPT reply; False when no further RCPT belongs in this transaction."""
        if code == 421:  # the server is closing the connection: nothing more will be heard
            raise smtplib.SMTPResponseException(code, reply)
        if _too_many_recipients(code, reply):
            self.too_many = (code, reply)
            return False
        self.answered += 1
        if 200 <= code < 300:
            self.accepted.append(recipient)
            return True
        if 400 <= code < 500:
            self.pending.append(recipient)
            self.first_temporary = self.first_temporary or (code, reply)
        else:
            self.rejected.append(recipient)
        self.first_refusal = self.first_refusal or (code, reply)
        return True


class _Progress:
    """What the transactions of one send achieved so far, and the SendResult it makes."""

    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.rejected: list[str] = []
        self.pending: list[str] = []
        self.unknown: list[str] = []
        self.responses: list[str] = []
        self.first_temporary: tuple[int, bytes] | None = None
        self.stopped_by: str | None = None  # why the send ended before every recipient was tried

    def add_refusals(self, txn: _Transaction) -> None:
        self.rejected += txn.rejected
        self.pending += txn.pending
        self.first_temporary = self.first_temporary or txn.first_temporary

    def add_delivered(self, txn: _Transaction) -> None:
        assert txn.response is not None
        self.add_refusals(txn)
        self.accepted += txn.accepted
        self.responses.append(txn.response)

    def add_interrupted(self, txn: _Transaction | None, remaining: list[str], error: DeliveryError) -> None:
        """A later transaction failed: its RCPT results stand, the recipients it had accepted share
        the failure's fate, and the ones it never reached stay owed."""
        if txn is None:  # failed before it started (cannot happen today; kept total)
            self.pending += remaining
        else:
            self.add_refusals(txn)
            if error.outcome_unknown:
                self.unknown += txn.accepted
            elif error.transient:
                self.pending += txn.accepted
            else:
                self.rejected += txn.accepted
            self.pending += txn.untried
        self.stopped_by = error.message

    def result(self) -> SendResult:
        reason = self.stopped_by
        if reason is None and self.first_temporary is not None:
            reason = f"SMTP {_reply_line(*self.first_temporary)}"
        return SendResult(
            accepted=self.accepted,
            rejected=self.rejected,
            pending=self.pending,
            response=self.responses[0],
            unknown=self.unknown,
            deferred_reason=reason,
            responses=self.responses,
        )


class _StaleConnection(Exception):
    """A reused connection failed before the server accepted MAIL FROM: safe to retry once."""


class _SmtpClient(smtplib.SMTP):
    """smtplib.SMTP with nodemailer's three timeouts, implicit TLS and a chosen TLS server name."""

    def __init__(self, settings: SmtpSettings, tls_context: ssl.SSLContext) -> None:
        # A placeholder EHLO name keeps smtplib from a getfqdn() DNS lookup; the real one is set
        # once the local address is known.
        super().__init__(local_hostname=settings.ehlo_name or "localhost", timeout=settings.socket_timeout)
        self.settings = settings
        self.tls_context = tls_context
        self.phase = "connect"
        # smtplib's starttls() sends _host as SNI and checks the certificate against it.
        self._host = settings.tls_name

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), self.settings.connection_timeout)
        try:
            # Commands and data go out in few, deliberate writes (pipelining); Nagle's algorithm would
            # hold the tail of each back for the previous write's ACK, a delayed-ACK stall per message.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.settings.implicit_tls:
                sock = self.tls_context.wrap_socket(sock, server_hostname=self.settings.tls_name)
            sock.settimeout(self.settings.greeting_timeout)
        except BaseException:
            sock.close()
            raise
        self.phase = "greeting"
        return sock


class _Connection:
    """One SMTP session: connect, TLS, EHLO and AUTH once, then any number of transactions."""

    def __init__(self, settings: SmtpSettings, tls_context: ssl.SSLContext, auth: _Auth | None = None) -> None:
        self.settings = settings
        self.auth = auth or _Auth(settings)
        self.client = _SmtpClient(settings, tls_context)
        self.messages_sent = 0
        self.last_used = time.monotonic()
        self.mail_accepted = False  # the current transaction's MAIL FROM was accepted
        self.transaction: _Transaction | None = None  # the current (or last) transaction
        self.broken = False  # a reply left the session in a state not worth reusing
        self.closed = False
        # Set by the pool: called at the data write of a send's last transaction, returns the next
        # waiting sender (its envelope built for this connection) to chain after the data, or None.
        self.claim_next: Callable[[_Connection], _Waiter | None] | None = None
        self.chained: _Waiter | None = None  # whose envelope followed the current data

    @property
    def phase(self) -> str:
        return self.client.phase

    def open(self) -> None:
        client, settings = self.client, self.settings
        code, reply = client.connect(settings.host, settings.port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, reply)
        client.sock.settimeout(settings.socket_timeout)
        if not settings.ehlo_name:
            client.local_hostname = _default_ehlo_name(client.sock)
        self._hello()
        if not settings.implicit_tls and not settings.ignore_tls:
            self._upgrade_to_tls()
        if settings.username:
            self._authenticate()

    def _hello(self) -> None:
        self.client.phase = "EHLO"
        code, reply = self.client.ehlo()
        if code != 250:
            self.client.phase = "HELO"
            code, reply = self.client.helo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, reply)

    def _upgrade_to_tls(self) -> None:
        settings = self.settings
        if self.client.has_extn("starttls"):
            self.client.phase = "STARTTLS"
            self.client.starttls(context=self.client.tls_context)
            self._hello()  # capabilities must be asked again over TLS (RFC 3207)
        elif settings.require_tls:
            raise DeliveryError(
                f"SMTP server {settings.address} does not offer STARTTLS and requireTLS=true",
                transient=False,
            )
        elif settings.username and not settings.allow_plaintext_auth:
            raise DeliveryError(
                f"SMTP server {settings.address} does not offer STARTTLS; refusing to send the "
                "credentials in plaintext (set allowPlaintextAuth=true to allow it)",
                transient=False,
            )

    def _authenticate(self) -> None:
        client, settings = self.client, self.settings
        client.phase = "AUTH"
        if not client.has_extn("auth"):
            raise DeliveryError(
                f"SMTP server {settings.address} does not offer AUTH; remove the user name from "
                f"{URI_NAME} or use the server's submission port",
                transient=False,
            )
        offered = client.esmtp_features["auth"].upper().split()
        wanted = [settings.auth_method] if settings.auth_method else ["PLAIN", "LOGIN"]
        usable = [method for method in wanted if method in offered]
        if not usable:
            raise DeliveryError(
                f"SMTP server {settings.address} offers AUTH {' '.join(offered) or '(none)'}, "
                f"not {' or '.join(wanted)} (option 'authMethod')",
                transient=False,
            )
        method = usable[0]
        try:
            if method == XOAUTH2:
                self._authenticate_xoauth2()
                return
            # Secrets read at run time (issue 11): a refused password is read again once; when it
            # changed (rotated in Secret Manager), the new one is tried on this same connection.
            source = self.auth.password
            password = source.get() if source is not None else ""
            code, reply = self._auth_password(method, password)
            if code == 535 and source is not None and source.runtime:
                fresh = source.reread(password)
                if fresh != password:
                    log.info("SMTP server %s refused the password; %s has a new value, trying it",
                             settings.address, source.name)
                    code, reply = self._auth_password(method, fresh)
                if code == 535:
                    raise DeliveryError(
                        f"SMTP {_reply_line(code, reply)} (the password from {source.name} was read again "
                        "and its latest version was refused too)", transient=False, code=code)
        except CredentialError as exc:
            raise DeliveryError(exc.message, transient=exc.transient) from None
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)

    def _auth_password(self, method: str, password: str) -> tuple[int, bytes]:
        return auth_password(self.client, method, self.settings.username or "", password)

    def _authenticate_xoauth2(self) -> None:
        """SASL XOAUTH2 with a cached access token; a refused token is dropped, refreshed once and
        tried again on this connection. Raises DeliveryError (CredentialError from the token
        endpoint is the caller's to convert)."""
        tokens = self.auth.tokens
        assert tokens is not None  # SmtpPool refuses XOAUTH2 without a token source
        token = tokens.token()
        refused: list[tuple[int, bytes]] = []
        code, reply, challenge = self._xoauth2_once(token, refused)
        if code == 235:
            return
        if code in (500, 501) or (len(refused) > 1 and 500 <= code < 600):
            # The line was refused, not the token (or RFC 4954's bare AUTH was): a fresh token would not help.
            raise _xoauth2_line_refused(self.settings, code, reply, token, refused)
        if 500 <= code < 600:
            log.info("SMTP server %s refused the OAuth2 access token (%d); refreshing it once",
                     self.settings.address, code)
            tokens.invalidate(token)
            code, reply, challenge = self._xoauth2_once(tokens.token())
            if code == 235:
                return
        raise _xoauth2_refused(self.settings, code, reply, challenge)

    def _xoauth2_once(self, token: str, refused: list[tuple[int, bytes]] | None = None,
                      ) -> tuple[int, bytes, dict[str, object] | None]:
        return auth_xoauth2(self.client, self.settings.username or "", token, refused)

    @property
    def pipelining(self) -> bool:
        """The server advertised PIPELINING (RFC 2920) in its last EHLO reply."""
        return self.client.has_extn("pipelining")

    def mail_parameters(self, payload: bytes, smtputf8: bool, dsn: DsnRequest | None = None) -> str:
        """The MAIL FROM parameters for this payload (and the document's DSN request); raises
        DeliveryError when the server lacks a capability the message needs. No I/O."""
        client, settings = self.client, self.settings
        # DSN (RFC 3461, issue 12): asked for by the document, so refused rather than dropped when the
        # server does not offer it (the app would wait for reports that never come).
        if dsn is not None and not client.has_extn("dsn"):
            raise DeliveryError(
                f"dsn: SMTP server {settings.address} does not offer DSN (RFC 3461), so the delivery status "
                "notifications the document asks for cannot be requested; remove dsn or use a server that offers it",
                transient=False,
            )
        if smtputf8 and not client.has_extn("smtputf8"):
            raise DeliveryError(
                f"the message needs SMTPUTF8 (non-ASCII addresses) but SMTP server "
                f"{settings.address} does not offer it",
                transient=False,
            )
        eight_bit = not payload.isascii()
        if eight_bit and not client.has_extn("8bitmime"):
            raise DeliveryError(
                f"the message contains 8-bit data but SMTP server {settings.address} does not "
                "offer 8BITMIME",
                transient=False,
            )
        params = []
        if eight_bit:
            params.append("BODY=8BITMIME")
        if smtputf8:
            params.append("SMTPUTF8")
        if client.has_extn("size"):
            params.append(f"SIZE={len(payload)}")
        if dsn is not None:
            params += dsn.mail_parameters()
        return "".join(" " + p for p in params)

    @staticmethod
    def rcpt_command(request: _Request, recipient: str) -> str:
        """`TO:<recipient>` plus the DSN parameters, for RCPT: the same text on every path (lockstep,
        pipelined, chained). mail_parameters has checked the server offers DSN. No I/O."""
        params = request.dsn.rcpt_parameters() if request.dsn is not None else []
        return f"TO:<{recipient}>" + "".join(" " + p for p in params)

    def envelope(self, request: _Request, recipients: list[str]) -> bytes:
        """MAIL FROM, every RCPT TO and DATA as one pipelined write (RFC 2920); raises DeliveryError
        like mail_parameters. No I/O: the previous holder of the connection may build it to chain it
        after its own data."""
        return self._commands(request, recipients, mail=True, data=True)

    def _commands(self, request: _Request, recipients: list[str], *, mail: bool, data: bool) -> bytes:
        lines = []
        if mail:
            params = self.mail_parameters(request.payload, request.smtputf8, request.dsn)
            lines.append(f"MAIL FROM:<{request.envelope_from}>{params}\r\n")
        lines += [f"RCPT {self.rcpt_command(request, recipient)}\r\n" for recipient in recipients]
        if data:
            lines.append("DATA\r\n")
        return "".join(lines).encode("utf-8" if request.smtputf8 else "ascii")

    def transact(self, request: _Request, recipients: list[str], prewritten: bool = False) -> _Transaction:
        """One MAIL FROM .. final reply. RCPTs stop at a "too many recipients" reply (the rest are
        the transaction's .untried); when no recipient was accepted the transaction is reset and
        returned without data. Transport errors and failed MAIL/DATA replies raise; then
        self.transaction says how far it got. prewritten: the envelope was already written on this
        connection (chained after the previous message's data); only its replies are read."""
        client = self.client
        self.mail_accepted = False
        txn = self.transaction = _Transaction(list(recipients))
        if prewritten or self.pipelining:
            self._pipelined_envelope(request, txn, prewritten)
        else:
            self._lockstep_envelope(request, txn)

        if not txn.accepted:
            return txn  # (reset, or the connection is marked broken)

        claimed = None
        if self.claim_next is not None and self.pipelining and not txn.untried:
            claimed = self.claim_next(self)  # the next waiting sender's envelope, or None
        self.chained = claimed
        client.send(request.data + (claimed.envelope if claimed is not None else b""))
        client.phase = "end of DATA"  # the final "." is out: from here on the outcome may be unknown
        code, reply = client.getreply()
        if not 200 <= code < 300:
            raise smtplib.SMTPResponseException(code, reply)
        self.messages_sent += 1
        txn.response = _reply_line(code, reply)
        return txn

    def _lockstep_envelope(self, request: _Request, txn: _Transaction) -> None:
        """MAIL, each RCPT and DATA, each waiting for its reply (a server without PIPELINING)."""
        client = self.client
        params = self.mail_parameters(request.payload, request.smtputf8, request.dsn)
        client.command_encoding = "utf-8" if request.smtputf8 else "ascii"

        client.phase = "MAIL FROM"
        code, reply = client.docmd("MAIL", f"FROM:<{request.envelope_from}>{params}")
        if not 200 <= code < 300:
            raise smtplib.SMTPResponseException(code, reply)
        self.mail_accepted = True

        client.phase = "RCPT TO"
        for recipient in txn.recipients:
            code, reply = client.docmd("RCPT", self.rcpt_command(request, recipient))
            if not txn.record_rcpt(recipient, code, reply):
                break

        if not txn.accepted:
            self._reset()
            return
        client.phase = "DATA"
        code, reply = client.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPResponseException(code, reply)

    def _pipelined_envelope(self, request: _Request, txn: _Transaction, prewritten: bool) -> None:
        """MAIL, every RCPT and DATA in one write (unless already written; more than RCPT_GROUP
        recipients go in groups), then their replies in order. Every reply is classified as the
        lockstep path would, except that RCPT replies after a "too many recipients" settle nothing
        (see _Transaction.record_late_rcpt); no group is sent after that reply."""
        client = self.client
        recipients = txn.recipients
        groups = [recipients[start:start + RCPT_GROUP] for start in range(0, len(recipients), RCPT_GROUP)]
        data_sent = len(groups) == 1
        client.phase = "MAIL FROM"
        if not prewritten:
            client.send(self._commands(request, groups[0], mail=True, data=data_sent))
        code, reply = client.getreply()
        if not 200 <= code < 300:
            raise smtplib.SMTPResponseException(code, reply)  # the caller drops the connection
        self.mail_accepted = True

        client.phase = "RCPT TO"
        counting = True
        index = 0
        for number, group in enumerate(groups):
            if number:
                if not counting:
                    break  # the recipient limit was reached: the rest stay untried
                data_sent = number == len(groups) - 1
                client.send(self._commands(request, group, mail=False, data=data_sent))
            for recipient in group:
                code, reply = client.getreply()
                if counting:
                    counting = txn.record_rcpt(recipient, code, reply)
                else:
                    txn.record_late_rcpt(index, code, reply)
                index += 1

        client.phase = "DATA"
        if not data_sent:
            if not txn.accepted:
                self._reset()
                return
            code, reply = client.docmd("DATA")
        else:
            code, reply = client.getreply()
        if txn.accepted:
            if code != 354:
                raise smtplib.SMTPResponseException(code, reply)
            return
        # No recipient: the server refused DATA (RFC 2920: 503 or 554) and no data is sent. A
        # server that said 354 anyway waits for a message nobody would receive: drop it.
        if code == 354:
            self.broken = True
            return
        self._reset()

    def _reset(self) -> None:
        client = self.client
        client.phase = "RSET"
        try:
            code, _ = client.rset()
            self.broken = code != 250
        except _TRANSPORT_ERRORS:
            self.broken = True  # the refusals are what matter; the connection is discarded

    def looks_alive(self) -> bool:
        """Cheap check without a round trip: an idle server has nothing to say unless it sent a
        421 or closed the connection."""
        sock = self.client.sock
        if sock is None:
            return False
        try:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return False
            if hasattr(select, "poll"):  # unlike select(), not limited to descriptors below 1024
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                return not poller.poll(0)
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_used

    def close(self, polite: bool) -> None:
        """QUIT (when the session is healthy) and close; never raises."""
        client = self.client
        self.closed = True
        try:
            if polite and client.sock is not None:
                client.sock.settimeout(min(self.settings.socket_timeout, QUIT_TIMEOUT_SECONDS))
                client.quit()
        except _TRANSPORT_ERRORS:
            pass
        finally:
            client.close()


@dataclass
class _Request:
    """One send as the wire needs it: the payload serialized once, its data dot-stuffed once."""

    envelope_from: str
    recipients: list[str]
    payload: bytes  # the message as serialized (CRLF), for SIZE= and the 8-bit check
    data: bytes  # dot-stuffed payload plus the final ".\r\n"
    smtputf8: bool
    dsn: DsnRequest | None = None  # RFC 3461 parameters for MAIL FROM and every RCPT TO


class _Waiter:
    """A send waiting for (or holding) one of the pool's maxConnections slots."""

    def __init__(self, request: _Request) -> None:
        self.request = request
        self.granted = threading.Event()  # set once: the slot is this send's
        self.connection: _Connection | None = None  # handed over warm with the slot, if any
        # Written by the previous holder right after its data, once it claimed this waiter; the
        # claim is void (and the waiter gets no connection) unless the holder hands it over.
        self.envelope: bytes | None = None
        self.envelope_written = False  # the connection comes with this send's envelope already sent


class SmtpPool:
    """Thread-safe pool of SMTP connections to one server, at most maxConnections at once.

    Senders get a slot in arrival order (FIFO); a slot comes with a warm connection when one is
    handed over or idle, else the sender connects. After close() the pool keeps no connections:
    later sends still work, one connection each, so a caller holding an old pool (see pool_for)
    never fails because of the swap."""

    def __init__(self, settings: SmtpSettings, credentials: Credentials | None = None) -> None:
        self.settings = settings
        self._tls_context = _build_tls_context(settings)
        self._auth = _Auth(settings, credentials)
        self._idle: list[_Connection] = []
        self._queue: deque[_Waiter] = deque()  # senders waiting for a slot, oldest first
        self._active = 0  # slots held (sends in progress); never above max_connections
        self._lock = threading.Lock()
        self._closed = False

    @property
    def waiting(self) -> int:
        """How many sends are queued for a slot right now."""
        with self._lock:
            return len(self._queue)

    def send(
        self,
        envelope_from: str,
        recipients: list[str],
        message: email.message.EmailMessage | bytes,
        smtputf8: bool = False,
        dsn: DsnRequest | None = None,
    ) -> SendResult:
        """Send `message` to `recipients`. `message` is an EmailMessage (serialized here, without
        its Bcc header) or bytes: an already serialized message used as is (any line endings; it
        must not carry a Bcc header). `dsn`: RFC 3461 parameters for MAIL FROM and every RCPT TO;
        the send fails (permanently) when the server does not offer DSN."""
        recipients = list(recipients)
        _check_envelope(envelope_from, recipients, smtputf8)
        payload = _payload(message, smtputf8)
        request = _Request(envelope_from, recipients, payload, _dot_stuffed(payload) + b".\r\n", smtputf8, dsn)
        settings = self.settings
        waiter = self._acquire(request)
        try:
            result = self._send_in_slot(waiter)
        except DeliveryError as error:
            clean = error
            for secret in self._auth.secrets():
                clean = clean.redacted(secret)
            raise clean from error.__cause__
        if result.deferred_reason:
            for secret in self._auth.secrets():
                result.deferred_reason = _masked(result.deferred_reason, secret)
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close(polite=True)

    # -- slots -------------------------------------------------------------------------------------

    def _acquire(self, request: _Request) -> _Waiter:
        settings = self.settings
        waiter = _Waiter(request)
        with self._lock:
            if not self._queue and self._active < settings.max_connections:
                self._active += 1
                return waiter
            self._queue.append(waiter)
        if waiter.granted.wait(settings.connection_timeout):
            return waiter
        with self._lock:
            still_queued = waiter in self._queue
            if still_queued:
                self._queue.remove(waiter)
        if still_queued:
            raise DeliveryError(
                f"no free SMTP connection to {settings.address} within "
                f"{settings.connection_timeout:g}s (maxConnections={settings.max_connections})",
                transient=True,
            )
        waiter.granted.wait()  # granted (or claimed) just as the wait ran out: the holder hands over
        return waiter

    def _claim_next(self, connection: _Connection) -> _Waiter | None:
        """Called by the holder of `connection` at its last data write: take the oldest waiting
        sender out of the queue, with its envelope built for this connection, if the connection
        will be handed to it afterwards."""
        settings = self.settings
        with self._lock:
            if (not self._queue or self._closed or not settings.pool
                    or connection.messages_sent + 1 >= settings.max_messages):
                return None
            waiter = self._queue[0]
            request = waiter.request
            if len(request.recipients) > RCPT_GROUP:
                return None  # its envelope takes more than one write
            try:
                waiter.envelope = connection.envelope(request, request.recipients)
            except DeliveryError:
                return None  # it will meet that error itself, on its own turn
            self._queue.popleft()
            return waiter

    def _release(self, connection: _Connection | None, chained: _Waiter | None) -> None:
        """End of a send's slot. A chained waiter gets the slot (and the connection, whose stream
        already carries its envelope); else the oldest waiter does; else the connection idles."""
        to_close = None
        with self._lock:
            waiter = chained
            if waiter is None and self._queue:
                waiter = self._queue.popleft()
            if waiter is None:
                self._active -= 1
                if connection is not None:
                    if self._closed:
                        to_close = connection
                    else:
                        connection.last_used = time.monotonic()
                        self._idle.append(connection)
            else:
                waiter.connection = connection
                waiter.envelope_written = chained is not None and connection is not None
        if waiter is not None:
            waiter.granted.set()
        if to_close is not None:
            to_close.close(polite=True)

    # -- one send ----------------------------------------------------------------------------------

    def _send_in_slot(self, waiter: _Waiter) -> SendResult:
        request = waiter.request
        connection = waiter.connection
        prewritten = waiter.envelope_written
        reused = connection is not None
        try:
            if connection is None:
                connection = self._take_idle()
                reused = connection is not None
                if reused:
                    log.debug("reusing SMTP connection to %s", self.settings.address)
            while True:
                if connection is None:
                    connection = self._connect()
                    reused = False
                try:
                    return self._transact(connection, request, reused, prewritten)
                except _StaleConnection:
                    log.debug("reused SMTP connection to %s was closed by the server; reconnecting",
                              self.settings.address)
                    connection, prewritten = None, False
        finally:
            self._finish(connection)

    def _finish(self, connection: _Connection | None) -> None:
        """Keep the connection for the next sender when it is healthy, else close it; then release
        the slot (to the chained waiter if this send claimed one)."""
        chained = None
        keep = None
        if connection is not None:
            chained, connection.chained = connection.chained, None
            settings = self.settings
            if connection.closed:
                pass
            elif connection.broken:
                connection.close(polite=False)
            elif connection.messages_sent >= settings.max_messages:
                log.debug("recycling SMTP connection to %s after %d messages",
                          settings.address, connection.messages_sent)
                connection.close(polite=chained is None)
            elif not settings.pool or self._closed:
                # (a chained envelope is pending: QUIT would be read as message data)
                connection.close(polite=chained is None)
            else:
                keep = connection
        self._release(keep, chained)

    def _connect(self) -> _Connection:
        log.debug("connecting to SMTP server %s", self.settings.address)
        connection = _Connection(self.settings, self._tls_context, self._auth)
        try:
            connection.open()
        except DeliveryError:
            connection.close(polite=False)
            raise
        except _TRANSPORT_ERRORS as exc:
            connection.close(polite=False)
            raise _delivery_error(exc, connection.phase, self.settings) from exc
        connection.claim_next = self._claim_next
        return connection

    def _transact(
        self, connection: _Connection, request: _Request, reused: bool, prewritten: bool
    ) -> SendResult:
        """All transactions of one send on this connection (more than one when the server limits
        the recipients per transaction). On failure the connection is closed."""
        progress = _Progress()
        recipients = request.recipients
        remaining = recipients
        while remaining:
            try:
                txn = connection.transact(request, remaining, prewritten)
            except DeliveryError:
                connection.close(polite=False)
                raise  # capabilities: only the first transaction can fail this way
            except _TRANSPORT_ERRORS as exc:
                connection.close(polite=False)
                first = not progress.responses
                if first and reused and not connection.mail_accepted and _is_connection_loss(exc):
                    raise _StaleConnection() from exc
                error = _delivery_error(exc, connection.phase, self.settings)
                if first:
                    raise error from exc
                log.debug("SMTP transaction %d to %s failed; keeping the %d accepted recipient(s)",
                          len(progress.responses) + 1, self.settings.address, len(progress.accepted))
                progress.add_interrupted(connection.transaction, remaining, error)
                return progress.result()
            except BaseException:
                connection.close(polite=False)  # out of step for certain: never hand it on
                raise
            prewritten = False
            if txn.response is None:  # no recipient accepted in this transaction
                if not progress.responses:
                    connection.close(polite=False)
                    raise _refused_all(recipients, txn)
                progress.add_refusals(txn)
                progress.pending += txn.untried
                if txn.too_many is not None:
                    progress.stopped_by = f"SMTP {_reply_line(*txn.too_many)}"
                break
            progress.add_delivered(txn)
            remaining = txn.untried
            if remaining:
                log.debug("SMTP server %s limits recipients per transaction; %d more in another",
                          self.settings.address, len(remaining))
        return progress.result()

    def _take_idle(self) -> _Connection | None:
        expired: list[_Connection] = []
        found = None
        with self._lock:
            while self._idle:
                candidate = self._idle.pop()  # most recently used first
                if candidate.idle_seconds() <= IDLE_RECONNECT_SECONDS and candidate.looks_alive():
                    found = candidate
                    break
                expired.append(candidate)
        for connection in expired:
            log.debug("dropping idle SMTP connection to %s", self.settings.address)
            connection.close(polite=connection.looks_alive())
        return found


_pool_lock = threading.Lock()
_current: tuple[tuple[object, object], SmtpPool] | None = None


def pool_for(uri: str, password_override: str | None, credentials: Credentials | None = None) -> SmtpPool:
    """The process-wide pool for this configuration: the same (uri, password, credentials) returns
    the same warm pool (and its cached OAuth2 token); a different one builds a new pool and closes
    the old. A bad URI raises SmtpConfigError on every call and leaves the cache as it was."""
    global _current
    key = (uri, password_override, credentials)
    with _pool_lock:
        if _current is not None and _current[0] == key:
            return _current[1]
    pool = SmtpPool(parse_smtp_uri(uri, password_override), credentials)
    with _pool_lock:
        if _current is not None and _current[0] == key:  # another thread built it meanwhile
            winner = _current[1]
        else:
            winner, previous = pool, _current
            _current = (key, pool)
    if winner is not pool:
        pool.close()
        return winner
    if previous is not None:
        previous[1].close()
    return pool


class _Auth:
    """Where AUTH gets its secrets, shared by the connections of one pool (issue 11): the password
    (pinned, or read at run time and re-read once when refused) or, for XOAUTH2, a token source."""

    def __init__(self, settings: SmtpSettings, credentials: Credentials | None = None) -> None:
        credentials = credentials or Credentials()
        self.username = settings.username or ""
        self.password: Secret | None = credentials.password
        if self.password is None and settings.password is not None:
            self.password = PinnedSecret("SMTP_PASSWORD", settings.password)
        self.tokens = None
        if settings.auth_method == XOAUTH2:
            if credentials.password is not None:
                raise SmtpConfigError(
                    f"{URI_NAME}: authMethod=XOAUTH2 takes no password; unset {credentials.password.name}")
            if credentials.oauth2_refresh_token is None:
                raise SmtpConfigError(
                    f"{URI_NAME}: authMethod=XOAUTH2 needs SMTP_OAUTH2_REFRESH_TOKEN or "
                    "SMTP_OAUTH2_REFRESH_TOKEN_SECRET")
            from mailer.oauth2 import TokenSource  # (http.client only for XOAUTH2 deployments)

            assert settings.oauth2_token_url and settings.oauth2_client_id  # parse_smtp_uri checks
            self.tokens = TokenSource(
                settings.oauth2_token_url,
                settings.oauth2_client_id,
                credentials.oauth2_client_secret,
                credentials.oauth2_refresh_token,
                timeout=settings.connection_timeout,
                tls_context=_token_tls_context(settings),
            )
        else:
            # OAuth2 secrets without XOAUTH2 would be ignored, and AUTH would go out without a password.
            for secret in (credentials.oauth2_refresh_token, credentials.oauth2_client_secret):
                if secret is not None:
                    raise SmtpConfigError(
                        f"{URI_NAME}: {secret.name} is set but the URI does not use authMethod=XOAUTH2; add "
                        f"authMethod=XOAUTH2 (with oauth2TokenUrl and oauth2ClientId) or unset {secret.name}")
            if self.password is not None and not settings.username:
                raise SmtpConfigError(
                    f"{URI_NAME}: {self.password.name} is set but the URI has no user name; use smtp://user@host")

    def secrets(self) -> list[str]:
        """Every secret value known right now, to keep them out of errors (whatever a server echoes)."""
        values = []
        if isinstance(self.password, PinnedSecret):
            values.append(self.password.get())
        elif self.password is not None and isinstance(getattr(self.password, "_value", None), str):
            values.append(self.password._value)  # type: ignore[attr-defined]
        if self.tokens is not None:
            values += self.tokens.secrets()
        values = [value for value in values if value]
        # ... and the base64 forms AUTH sent them in, which a server may quote back ("535 bad <blob>"):
        # the value alone (LOGIN), PLAIN's and XOAUTH2's initial responses. Longest first, so a longer
        # form is masked whole before a secret inside it.
        user = self.username
        forms = set(values)
        for value in values:
            forms |= {_b64(value), _b64(f"\0{user}\0{value}"), xoauth2_initial_response(user, value)}
        return sorted(forms, key=len, reverse=True)


def _token_tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """TLS for the token endpoint: always verified (tlsRejectUnauthorized concerns the SMTP server
    only); trusts tlsCaFile besides the system store, like the SMTP connection."""
    context = ssl.create_default_context()
    if settings.tls_ca_file:
        try:
            context.load_verify_locations(cafile=settings.tls_ca_file)
        except (OSError, ssl.SSLError):
            pass  # _build_tls_context reports it, naming the option
    return context


# -- SASL exchanges, shared with ops/check.py (which must authenticate exactly as the function does) --


def auth_password(client: smtplib.SMTP, method: str, username: str, password: str) -> tuple[int, bytes]:
    """AUTH PLAIN (initial response) or AUTH LOGIN (two challenges); the final (code, reply)."""
    # smtplib's own auth() encodes credentials as ASCII; RFC 4616 and real servers take UTF-8.
    if method == "PLAIN":
        return client.docmd("AUTH", "PLAIN " + _b64(f"\0{username}\0{password}"))
    code, reply = client.docmd("AUTH", "LOGIN " + _b64(username))
    if code == 334:
        code, reply = client.docmd(_b64(password))
    return code, reply


def xoauth2_initial_response(username: str, token: str) -> str:
    """SASL XOAUTH2's initial response, base64: `user=<mailbox>^Aauth=Bearer <token>^A^A`."""
    return _b64(f"user={username}\x01auth=Bearer {token}\x01\x01")


def auth_xoauth2(client: smtplib.SMTP, username: str, token: str, refused: list[tuple[int, bytes]] | None = None,
                 ) -> tuple[int, bytes, dict[str, object] | None]:
    """One AUTH XOAUTH2 with an initial response; (code, reply, the error challenge or None). A failure
    comes as a 334 challenge carrying a base64 JSON error (status, schemes, scope); the client answers
    it with an empty line and the server then sends its final reply.

    A long token (Microsoft's are ~2-2.5 KB) makes that AUTH line longer than SMTP's 512 octets. Servers
    commonly take it; one that refuses the line (500/501) gets, once, what RFC 4954 4 prescribes for
    such a response: `AUTH XOAUTH2` alone, then the response on its own line after the "334 " challenge.
    `refused` (when given) gets the refusal of the long line and, if the bare AUTH was refused too, that one."""
    response = xoauth2_initial_response(username, token)
    code, reply = client.docmd("AUTH", "XOAUTH2 " + response)
    if code in (500, 501) and _xoauth2_line_octets(response) > COMMAND_LINE_OCTETS:
        if refused is not None:
            refused.append((code, reply))
        code, reply = client.docmd("AUTH", "XOAUTH2")
        if code == 334:
            code, reply = client.docmd(response)
        elif refused is not None:
            refused.append((code, reply))
    challenge = None
    if code == 334:
        challenge = _xoauth2_challenge(reply)
        code, reply = client.docmd("")
    return code, reply, challenge


def _xoauth2_line_octets(response: str) -> int:
    return len(f"AUTH XOAUTH2 {response}\r\n")


def _xoauth2_line_refused(settings: SmtpSettings, code: int, reply: bytes, token: str,
                          refused: list[tuple[int, bytes]] | None = None) -> DeliveryError:
    """The server refused the AUTH XOAUTH2 line itself (500/501): a configuration problem, permanent; the
    token was never judged, so it is kept (no refresh: with rotating refresh tokens each one costs a
    rotation)."""
    octets = _xoauth2_line_octets(xoauth2_initial_response(settings.username or "", token))
    if octets <= COMMAND_LINE_OCTETS:
        return DeliveryError(
            f"SMTP server {settings.address} refused the AUTH XOAUTH2 command: {_reply_line(code, reply)}",
            transient=False, code=code)
    if refused is not None and len(refused) > 1:  # the bare AUTH was refused: the response never went alone
        (first, first_reply), (bare, bare_reply) = refused[:2]
        return DeliveryError(
            f"SMTP server {settings.address} refused AUTH XOAUTH2 as too long: {_reply_line(first, first_reply)}; "
            f"the {len(token):,}-byte access token makes a {octets:,}-octet AUTH line, and a bare AUTH XOAUTH2 "
            f"(RFC 4954's form for it) was refused too: {_reply_line(bare, bare_reply)}; RFC 4954 expects servers "
            f"to take {SASL_LINE_OCTETS:,} octets: raise the server's line limit for AUTH, or send through the mail "
            "provider's own SMTP server",
            transient=False, code=bare)
    return DeliveryError(
        f"SMTP server {settings.address} refused AUTH XOAUTH2 as too long: {_reply_line(code, reply)}; the "
        f"{len(token):,}-byte access token makes a {octets:,}-octet AUTH line (refused, and again when sent on a "
        f"line of its own after a bare AUTH XOAUTH2); RFC 4954 expects servers to take {SASL_LINE_OCTETS:,} "
        "octets: raise the server's line limit for AUTH, or send through the mail provider's own SMTP server",
        transient=False, code=code)


def _xoauth2_challenge(reply: bytes) -> dict[str, object] | None:
    """The JSON error a server sends as XOAUTH2's 334 challenge ({"status":"401","schemes":...,
    "scope":...}), or None when it is not that."""
    import json

    try:
        decoded = json.loads(base64.b64decode(reply.strip(), validate=True).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _xoauth2_refused(settings: SmtpSettings, code: int, reply: bytes, challenge: dict[str, object] | None) -> DeliveryError:
    """The server refused a freshly refreshed token (or failed otherwise): say what to check."""
    said = ""
    if challenge:
        parts = [f"{key} {challenge[key]}" for key in ("status", "scope") if isinstance(challenge.get(key), str)]
        said = f" (server said {', '.join(parts)})" if parts else ""
    if 400 <= code < 500:
        return DeliveryError(f"SMTP AUTH XOAUTH2 failed for now: {_reply_line(code, reply)}{said}",
                             transient=True, code=code)
    return DeliveryError(
        f"SMTP server {settings.address} refused XOAUTH2 with a freshly refreshed access token: "
        f"{_reply_line(code, reply)}{said}; check that the URI's user is the mailbox the refresh token "
        "was issued for and that its scope allows SMTP",
        transient=False, code=code)


def _build_tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()  # system trust store; honours SSL_CERT_FILE
    if settings.tls_ca_file:
        try:
            context.load_verify_locations(cafile=settings.tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise SmtpConfigError(
                f"{URI_NAME}: option 'tlsCaFile': cannot load CA certificates from "
                f"{settings.tls_ca_file!r}: {reason}"
            ) from None
    if not settings.tls_reject_unauthorized:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning("TLS certificate verification is off for %s (tlsRejectUnauthorized=false)",
                    settings.address)
    return context


def _check_envelope(envelope_from: str, recipients: list[str], smtputf8: bool) -> None:
    if not recipients:
        raise DeliveryError("no envelope recipients to send to", transient=False)
    # Addresses go into SMTP command lines verbatim: anything that could end or extend a command
    # is refused here. Messages name the position only; addresses stay out of errors and logs.
    for label, address in [("sender", envelope_from)] + [
        (f"recipient #{number}", recipient) for number, recipient in enumerate(recipients, 1)
    ]:
        if not isinstance(address, str) or (label != "sender" and not address):
            raise DeliveryError(f"envelope {label} must be a non-empty string", transient=False)
        if _FORBIDDEN_IN_ADDRESS.search(address):
            raise DeliveryError(
                f"envelope {label} contains whitespace, '<', '>' or control characters",
                transient=False,
            )
        if not smtputf8 and not address.isascii():
            raise DeliveryError(
                f"envelope {label} is not ASCII; it can only be sent with smtputf8=True",
                transient=False,
            )


def _payload(message: email.message.EmailMessage | bytes, smtputf8: bool) -> bytes:
    """The bytes to send: an already serialized message as is, else the EmailMessage serialized."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _LINE_ENDINGS.sub(b"\r\n", bytes(message))  # (so SIZE= is the size sent)
    if not isinstance(message, email.message.Message):
        raise DeliveryError(
            f"the message must be an EmailMessage or bytes, not {type(message).__name__}", transient=False
        )
    return _serialize(message, smtputf8)


def _serialize(message: email.message.EmailMessage, smtputf8: bool) -> bytes:
    if any(name.lower() == "bcc" for name in message.keys()):
        message = copy.deepcopy(message)  # the caller's message keeps its Bcc
        del message["Bcc"]
    policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
    try:
        return message.as_bytes(policy=policy)
    except (LookupError, TypeError, ValueError) as exc:
        raise DeliveryError(
            f"the message could not be serialized for SMTP: {type(exc).__name__}", transient=False
        ) from exc


def _dot_stuffed(payload: bytes) -> bytes:
    """CRLF line endings, a final CRLF, and a doubled leading dot on every line (RFC 5321 4.5.2)."""
    normalized = _LINE_ENDINGS.sub(b"\r\n", payload)
    if not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    return _LEADING_DOT.sub(b"..", normalized)


def _reply_line(code: int, text: bytes | str) -> str:
    """"<code> <text>" on one line; a multi-line reply's lines are joined with spaces."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join([str(code), *lines])


def _too_many_recipients(code: int, reply: bytes) -> bool:
    """RFC 5321 4.5.3.1.10: 452 when the server's limit on recipients per transaction is reached;
    552 with enhanced status 5.5.3 is the older (RFC 821) spelling clients should treat the same."""
    if code == 452:
        return True
    return code == 552 and reply.lstrip().startswith(b"5.5.3")


def _refused_all(recipients: list[str], txn: _Transaction) -> DeliveryError:
    """The first transaction accepted no recipient: the send failed."""
    rejected, pending = txn.rejected, txn.pending + txn.untried
    refusal = txn.first_refusal or txn.too_many
    assert refusal is not None
    code, text = refusal
    return DeliveryError(
        f"SMTP server refused all {len(recipients)} recipient(s) ({len(rejected)} permanently, "
        f"{len(pending)} temporarily); first reply: {_reply_line(code, text)}",
        transient=not rejected,
        code=code,
        rejected=rejected,
        pending=pending,
    )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _default_ehlo_name(sock: socket.socket) -> str:
    """The machine's FQDN when it has one, else its address literal (RFC 5321 4.1.3)."""
    hostname = socket.gethostname()
    if "." in hostname and re.fullmatch(r"[A-Za-z0-9.\-]+", hostname):
        return hostname
    address = sock.getsockname()[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


def _timeout_in(exc: BaseException) -> bool:
    """smtplib turns a read timeout into SMTPServerDisconnected; the TimeoutError stays chained."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_connection_loss(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    if _timeout_in(exc):
        return False  # a hung server is not a closed one: don't pay a second timeout
    return isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLEOFError,
                            ssl.SSLZeroReturnError))


def _delivery_error(exc: BaseException, phase: str, settings: SmtpSettings) -> DeliveryError:
    address = settings.address
    outcome_unknown = phase == "end of DATA"
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        if code < 100:  # smtplib's -1: not an SMTP reply at all
            return DeliveryError(
                f"SMTP server {address} sent a malformed reply to {phase}", transient=False
            )
        return DeliveryError(
            f"SMTP {_reply_line(code, exc.smtp_error)}", transient=400 <= code < 500, code=code
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(
            f"TLS certificate verification failed for {address} (checked name "
            f"'{settings.tls_name}'): {exc.verify_message}; set tlsCaFile to the CA that signed "
            "the server certificate, or tlsServername to the name on it",
            transient=False,
        )
    if _timeout_in(exc):
        seconds = {"connect": settings.connection_timeout, "greeting": settings.greeting_timeout}.get(
            phase, settings.socket_timeout
        )
        waiting = {"connect": "while connecting", "greeting": "waiting for the greeting"}.get(
            phase, f"waiting for the reply to {phase.replace('end of ', '')}"
        )
        suffix = f"; {_DATA_OUTCOME_UNKNOWN}" if outcome_unknown else ""
        return DeliveryError(
            f"SMTP connection to {address} timed out after {seconds:g}s {waiting}{suffix}",
            transient=True,
            outcome_unknown=outcome_unknown,
        )
    if outcome_unknown and isinstance(exc, (smtplib.SMTPServerDisconnected, OSError)):
        # OSError covers resets and every ssl.SSLError (TLS EOF, a broken record): no reply came.
        return DeliveryError(
            f"SMTP {address}: connection lost during DATA; {_DATA_OUTCOME_UNKNOWN}",
            transient=True,
            outcome_unknown=True,
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        transient = isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError))
        return DeliveryError(
            f"TLS with {address} failed during {phase}: {reason}", transient=transient
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryError(
            f"SMTP connection to {address} closed unexpectedly during {phase}", transient=True
        )
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return DeliveryError(
            f"SMTP connection to {address} failed during {phase}: {reason}", transient=True
        )
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return DeliveryError(f"SMTP {address}: {detail} (during {phase})", transient=False)
