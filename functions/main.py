"""Cloud Function entry points (functions-framework).

    process_mail   Firestore "document created" events for the mail collection (Eventarc, protobuf)
    sweep_mail     Pub/Sub "message published" events from the sweep's Cloud Scheduler job
"""

import functions_framework

from mailer.handler import Handler
from mailer.logs import configure_logging
from mailer.status_store import client_for
from mailer.sweep import Sweeper

configure_logging()
_handler = Handler()
_sweeper = Sweeper(_handler, client_for)


@functions_framework.cloud_event
def process_mail(cloud_event):
    """A Firestore document event (Eventarc, protobuf) for the mail collection."""
    _handler.handle_cloud_event(cloud_event)


@functions_framework.cloud_event
def sweep_mail(cloud_event):
    """A tick of the sweep's schedule. The message's content is not used: every call does the same work,
    so a late, repeated or overlapping tick costs a few queries and never sends twice."""
    _sweeper.run()
