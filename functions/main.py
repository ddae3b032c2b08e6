"""Cloud Function entry points (functions-framework). Deployed with entry point `process_mail`."""

import functions_framework

from mailer.handler import Handler
from mailer.logs import configure_logging

configure_logging()
_handler = Handler()


@functions_framework.cloud_event
def process_mail(cloud_event):
    """A Firestore document event (Eventarc, protobuf) for the mail collection."""
    _handler.handle_cloud_event(cloud_event)
