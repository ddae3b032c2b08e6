"""A Firestore outage while reading users or templates: nothing is claimed or written, and the handler
raises so that Eventarc delivers the event again (a lasting error would be recorded instead)."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from mailer.events import DocumentState, MailEvent
from mailer.handler import Dependencies, Handler
from mailer.prepare import Lookups
from mailer.recipients import UserDirectory
from mailer.settings import Settings


class UnreachableUsers(UserDirectory):
    """The users collection while Firestore answers UNAVAILABLE (the client's retries exhausted)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(client=None, collection="users")
        self.error = error

    def emails(self, uids):
        raise self.error


def event_for(client, collection: str, doc_id: str, fields: dict) -> MailEvent:
    reference = client.collection(collection).document(doc_id)
    reference.create(fields)
    snapshot = reference.get()
    return MailEvent(id="e1", kind="created", project=client.project, database="(default)", path=f"{collection}/{doc_id}",
                     value=DocumentState(fields=snapshot.to_dict(), update_time=snapshot.update_time), old_value=None)


@pytest.mark.parametrize("error", [gexc.ServiceUnavailable("firestore unavailable"), gexc.RetryError("deadline", None)])
def test_an_outage_raises_for_redelivery_and_writes_nothing(firestore_emulator, firestore_client, unique_collection, error) -> None:
    event = event_for(firestore_client, unique_collection, "doc", {"toUids": ["ada"], "message": {"subject": "s", "text": "t"}})
    settings = Settings("smtp://user@127.0.0.1:2525", default_from="noreply@example.com", users_collection="users")
    handler = Handler(Dependencies(settings=lambda: settings, lookups_for=lambda event, settings: Lookups(users=UnreachableUsers(error))))
    firestore_emulator.reset_stats()
    with pytest.raises(type(error)):
        handler.handle(event)
    assert firestore_emulator.stats()["writes"] == 0
    assert "delivery" not in firestore_client.collection(unique_collection).document("doc").get().to_dict()
