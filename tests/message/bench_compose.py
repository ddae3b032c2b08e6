"""CPU per message (time.process_time over `count` messages, after 50 warm-up ones), for a text-only and
a text+html+attachment (50 KB csv) message: compose() plus, for revisions whose ComposedMail has no
`payload`, the serialization the transport then did (message.as_bytes with the SMTP policy).

    .venv/bin/python tests/message/bench_compose.py [count] [functions dir of another revision]
    # e.g. the revision before the MIME writer:
    mkdir /tmp/old && git archive 46fb7d1 functions | tar -x -C /tmp/old
    .venv/bin/python tests/message/bench_compose.py 2000 /tmp/old/functions

nodemailer's figure for the same messages: node tests/message/bench_compose_nodemailer.js 2000.
Not a test (pytest collects test_*.py only).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).resolve().parents[2] / "functions"))

import email.policy  # noqa: E402

from mailer.addresses import parse_mailbox  # noqa: E402
from mailer.compose import ComposeDefaults, compose  # noqa: E402
from mailer.document import parse_mail_document  # noqa: E402

DEFAULTS = ComposeDefaults(
    default_from=parse_mailbox("Shop <shop@example.com>", "DEFAULT_FROM"), default_reply_to=None, max_message_bytes=10 * 1024 * 1024
)
CSV = "".join(f"{n},customer-{n}@example.com,Jörg Müller,{n * 3.25:.2f},2026-12-01\n" for n in range(1100)).encode()[:50_000]
TEXT = "Hello Ada,\n\nyour order 1234 has shipped. Track it at https://example.com/t/1234.\n\nThanks,\nThe Shop\n"
HTML = "<html><body><p>Hello Ada,</p><p>your order <b>1234</b> has shipped. <a href='https://example.com/t/1234'>Track it</a>.</p><p>Thanks,<br>The Shop</p></body></html>"
SHAPES = {
    "text-only": {"to": "Ada Lovelace <ada@example.com>", "message": {"subject": "Your order has shipped", "text": TEXT}},
    "text+html+attachment": {
        "to": "Ada Lovelace <ada@example.com>",
        "message": {"subject": "Your order has shipped", "text": TEXT, "html": HTML, "attachments": [{"filename": "orders.csv", "content": CSV}]},
    },
}


def wire_bytes(mail) -> bytes:
    payload = getattr(type(mail), "__dataclass_fields__", {}).get("payload") and mail.payload
    if payload:
        return payload
    return mail.message.as_bytes(policy=email.policy.SMTPUTF8 if mail.smtputf8 else email.policy.SMTP)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for name, document in SHAPES.items():
        request = parse_mail_document(document)
        for _ in range(50):
            wire_bytes(compose(request, DEFAULTS))
        start = time.process_time()
        for _ in range(count):
            size = len(wire_bytes(compose(request, DEFAULTS)))
        elapsed = time.process_time() - start
        print(f"{name:22} {elapsed / count * 1000:.3f} ms CPU per message over {count} ({size} bytes)")


if __name__ == "__main__":
    main()
