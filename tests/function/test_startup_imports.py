"""Cold start: what the function loads before it can serve is what every email needs, nothing more.

A fresh interpreter loads functions/main.py the way functions-framework does (create_app), then reports
which of the optional parts were loaded: the OAuth2, template and Secret Manager code, the event
publishers' client libraries, the MIME type table. Each is needed by some documents or stacks only, and
loads on first use; bench.coldstart measures what loading costs, this test keeps the list from growing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"

PROBE = f"""
import json, mimetypes, sys
from functions_framework import create_app
create_app(target="process_mail", source={str(FUNCTIONS / "main.py")!r}, signature_type="cloudevent")
loaded = sorted(name for name in sys.modules if name.startswith((
    "mailer.oauth2", "mailer.templates", "mailer.template_store", "mailer.hbs_compat",
    "google.cloud.pubsub", "google.pubsub", "google.cloud.eventarc", "google.cloud.secretmanager", "handlebars")))
at_start = {{"loaded": loaded, "mime_table": mimetypes.inited}}

# first use: an attachment without a contentType has its type guessed from the file name
from mailer.compose import ComposeDefaults, compose
from mailer.document import parse_mail_document
mail = compose(parse_mail_document({{"to": "ada@example.com", "from": "shop@example.com", "message": {{
    "subject": "Invoice", "text": "attached", "attachments": [{{"filename": "invoice.pdf", "content": "%PDF"}}]}}}}),
    ComposeDefaults(default_from=None, default_reply_to=None, max_message_bytes=1 << 20))
print(json.dumps({{**at_start, "after": mimetypes.inited, "pdf": b"Content-Type: application/pdf" in mail.payload}}))
"""


def test_start_up_loads_only_what_every_email_needs() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=FUNCTIONS, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(FUNCTIONS)})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], "loaded at start-up although only some documents or stacks need it"
    assert report["mime_table"] is False, "the MIME type table (3-8 ms) is built at start-up"
    assert report["after"] is True and report["pdf"] is True, "the table is built on first use and guesses the type"
