"""Delivery status notifications (RFC 3461): what a mail document's `dsn` asks of the SMTP envelope.

The document's shape is nodemailer's (firebase/extensions #2532 proposes passing it through):

    dsn: {id: "order-123", return: "headers" | "full", notify: ["success", "failure", "delay"] | "never",
          recipient: "ada@example.com"}

becomes ``MAIL FROM:<...> RET=HDRS ENVID=order-123`` and ``RCPT TO:<...> NOTIFY=SUCCESS,FAILURE,DELAY
ORCPT=rfc822;ada@example.com`` when the server's EHLO offers DSN; the transport refuses the send when it
does not (a silent drop would leave the app waiting for reports that never come). Values are xtext-encoded
(RFC 3461 4): every character outside "!".."~", and "+" and "=", becomes "+XX".

Pure data and string functions: no I/O, no imports beyond the standard library's basics.
"""

from __future__ import annotations

from dataclasses import dataclass

# nodemailer takes "headers"/"hdrs" and "full"/"body" (case-insensitive) for RET.
RETURNS = {"full": "FULL", "body": "FULL", "headers": "HDRS", "hdrs": "HDRS"}
NOTIFY_VALUES = ("never", "success", "failure", "delay")
MAX_ENVID_CHARS = 100  # RFC 3461 4.4: the ENVID value (as xtext) is at most 100 characters
MAX_ORCPT_CHARS = 500  # RFC 3461 4.2: the ORCPT value (addr-type ";" xtext) is at most 500 characters


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except "+" and "=" as is, every other octet as "+XX" (upper-case hex).
    Callers pass ASCII only (ENVID and rfc822 addresses are US-ASCII)."""
    return "".join(
        char if "!" <= char <= "~" and char not in "+=" else f"+{ord(char):02X}"
        for char in value
    )


@dataclass(frozen=True)
class DsnRequest:
    """The DSN parameters of one send, already validated (see document.parse_dsn)."""

    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None  # printable ASCII, as the document gave it
    notify: tuple[str, ...] = ()  # upper-case: ("NEVER",) or a subset of SUCCESS, FAILURE, DELAY
    orcpt: str | None = None  # the original recipient's ASCII address, sent as ORCPT=rfc822;<xtext>

    def mail_parameters(self) -> list[str]:
        """Parameters for MAIL FROM (RFC 3461 4.3, 4.4)."""
        params = []
        if self.ret:
            params.append(f"RET={self.ret}")
        if self.envid is not None:
            params.append(f"ENVID={xtext(self.envid)}")
        return params

    def rcpt_parameters(self) -> list[str]:
        """Parameters for every RCPT TO (RFC 3461 4.1, 4.2)."""
        params = []
        if self.notify:
            params.append("NOTIFY=" + ",".join(self.notify))
        if self.orcpt is not None:
            params.append(f"ORCPT=rfc822;{xtext(self.orcpt)}")
        return params
