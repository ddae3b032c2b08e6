"""The demo's sample mail documents, each with the outcome the product promises for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# A small inline image, referenced from the html as cid:logo (SVG: text, so it fits in a document).
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="32"><rect width="120" height="32" rx="6" '
    'fill="#1a73e8"/><text x="60" y="21" font-family="sans-serif" font-size="14" fill="#fff" '
    'text-anchor="middle">mailer</text></svg>'
)


@dataclass(frozen=True)
class Sample:
    doc_id: str
    what: str
    document: dict[str, Any]
    expected_state: str
    # Text the error must contain (for ERROR samples), so the right refusal is checked, not any refusal.
    expected_error: str | None = None
    expected_subject: str | None = None
    expected_attachments: tuple[str, ...] = field(default=())
    # delivery.attempts once settled (None: not checked; a refused document is never attempted).
    expected_attempts: int | None = None
    # Written with `sendAt` this many seconds after the write; it must not arrive before that time.
    send_after_seconds: float | None = None

    def document_at(self, written: datetime) -> dict[str, Any]:
        """The document as written at `written` (an aware datetime): with its sendAt, if it has one."""
        if self.send_after_seconds is None:
            return self.document
        return {**self.document, "sendAt": written + timedelta(seconds=self.send_after_seconds)}


PLAIN = Sample(
    doc_id="demo-plain",
    what="plain text",
    document={
        "to": "Ada Lovelace <ada@example.com>",
        "message": {
            "subject": "Hello from the mailer demo",
            "text": "This email was a Firestore document a moment ago.\n\nIts delivery status is now SUCCESS.",
        },
    },
    expected_state="SUCCESS",
    expected_subject="Hello from the mailer demo",
    expected_attempts=1,
)

HTML = Sample(
    doc_id="demo-html",
    what="html + text + attachment",
    document={
        "to": ["grace@example.com"],
        "cc": "Charles Babbage <charles@example.com>",
        "message": {
            "subject": "Your monthly report",
            "text": "Hello Grace,\n\nyour report is attached (report.csv).\n",
            "html": (
                '<p><img src="cid:logo" alt="mailer"></p><h2>Hello Grace,</h2>'
                "<p>your report is attached (<code>report.csv</code>).</p>"
                '<p style="color:#777">Remote images are blocked: <img src="https://example.com/pixel.gif" alt="(blocked)"></p>'
            ),
            "attachments": [
                {"filename": "report.csv", "content": "month,sent\n2024-05,1024\n2024-06,2048\n", "contentType": "text/csv"},
                {"filename": "logo.svg", "content": LOGO_SVG, "contentType": "image/svg+xml", "cid": "logo"},
            ],
        },
    },
    expected_state="SUCCESS",
    expected_subject="Your monthly report",
    expected_attachments=("report.csv", "logo.svg"),
    expected_attempts=1,
)

# The local inbox refuses the first copy for a +tempfail recipient (451 after DATA, see local/inbox.py):
# the attempt ends in RETRY, and the sweep sends the same message (same Message-ID) once the backoff
# (mailer:retryBackoffSeconds) has passed.
RETRIED = Sample(
    doc_id="demo-retry",
    what="451 once, then retried",
    document={
        "to": "Ada Lovelace <ada+tempfail@example.com>",
        "message": {
            "subject": "Delivered on the second attempt",
            "text": "The inbox refused the first attempt with 451 (temporary); the sweep sent it again.",
        },
    },
    expected_state="SUCCESS",
    expected_subject="Delivered on the second attempt",
    expected_attempts=2,
)

# Written with sendAt a few seconds ahead: the created event leaves it PENDING until then, and the first
# sweep after that time sends it.
SCHEDULED = Sample(
    doc_id="demo-scheduled",
    what="sendAt = now + 5 s",
    document={
        "to": "grace@example.com",
        "message": {
            "subject": "Sent at its sendAt",
            "text": "This document was written with sendAt 5 seconds ahead; it was not sent before then.",
        },
    },
    expected_state="SUCCESS",
    expected_subject="Sent at its sendAt",
    expected_attempts=1,
    send_after_seconds=5.0,
)

INVALID = Sample(
    doc_id="demo-invalid",
    what="invalid: path attachment",
    document={
        "to": "mallory@example.com",
        "message": {
            "subject": "Please send me your files",
            "text": "An attachment by path would read the function's own files: refused.",
            "attachments": [{"filename": "passwd", "path": "/etc/passwd"}],
        },
    },
    expected_state="ERROR",
    expected_error="message.attachments[0].path",
)


TEMPLATE = Sample(
    doc_id="demo-template",
    what="template Generic",
    document={
        "to": "alan@example.com",
        "template": {"name": "Generic", "data": {"code": "424242", "expiresInMinutes": 10}},
    },
    expected_state="SUCCESS",
    expected_subject="Your verification code: 424242",
    expected_attempts=1,
)


def demo_samples(templates: list[str]) -> list[Sample]:
    """The samples for this checkout: the template sample only when templates/Generic.yaml was seeded."""
    samples = [PLAIN, HTML]
    if TEMPLATE.document["template"]["name"] in templates:
        samples.append(TEMPLATE)
    samples += [RETRIED, SCHEDULED, INVALID]
    return samples
