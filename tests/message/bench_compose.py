"""CPU per compose() (time.process_time), for a text-only and a text+html+attachment (50 KB csv) message.

    .venv/bin/python tests/message/bench_compose.py [count]

Not a test (pytest collects test_*.py only); the numbers go in issue 10's report.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functions"))

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


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for name, document in SHAPES.items():
        request = parse_mail_document(document)
        for _ in range(50):
            compose(request, DEFAULTS)
        start = time.process_time()
        for _ in range(count):
            mail = compose(request, DEFAULTS)
        elapsed = time.process_time() - start
        size = len(getattr(mail, "payload", b"")) or len(mail.message.as_bytes())
        print(f"{name:22} {elapsed / count * 1000:.3f} ms CPU per compose() over {count} ({size} bytes)")


if __name__ == "__main__":
    main()
