"""toUids/ccUids/bccUids resolved through the users collection in the Firestore emulator."""

from __future__ import annotations

import pytest

from mailer.document import parse_mail_document
from mailer.prepare import Lookups, Refusal, prepare
from mailer.recipients import UserDirectory, resolve_recipients
from mailer.settings import Settings

SETTINGS = Settings(None, default_from="Acme <noreply@acme.example>")
USERS = {
    "ada": {"email": "ada@example.com", "phone": "+39 000"},
    "bob": {"email": "Bob Stone <bob@example.com>"},
    "noemail": {"name": "No Email"},
    "number": {"email": 42},
    "bad": {"email": "bad@@example.com"},
    "ada-again": {"email": "ADA@example.com"},
    "empty": {"email": ""},
}


class CountingClient:
    """The real client, counting the batched reads made through it."""

    def __init__(self, client) -> None:
        self._client = client
        self.get_all_calls = 0
        self.returned: list = []  # the snapshots the server sent

    def get_all(self, *args, **kwargs):
        self.get_all_calls += 1
        self.returned.extend(self._client.get_all(*args, **kwargs))
        return iter(self.returned)

    def __getattr__(self, name: str):
        return getattr(self._client, name)


@pytest.fixture
def users(firestore_client, unique_collection) -> str:
    for uid, fields in USERS.items():
        firestore_client.collection(unique_collection).document(uid).set(fields)
    return unique_collection


def test_uids_resolve_in_one_batched_read_with_duplicates_removed_and_failures_listed(firestore_emulator, firestore_client, users) -> None:
    client = CountingClient(firestore_client)
    directory = UserDirectory(client, users)
    request = parse_mail_document({
        "to": "carol@example.com",
        "toUids": ["ada", "noemail", "ghost"],
        "ccUids": ["bob", "ada"],
        "bccUids": ["number", "bad", "ada-again", "empty"],
        "message": {"subject": "s", "text": "t"},
    })
    firestore_emulator.reset_stats()
    emails = directory.emails(["ada", "noemail", "ghost", "bob", "ada", "number", "bad", "ada-again", "empty"])
    resolved, unresolved = resolve_recipients(request, emails, users)

    assert client.get_all_calls == 1
    assert firestore_emulator.stats()["reads"] == 8  # one per distinct uid, the missing one included
    assert [m.wire_addr_spec() for m in resolved.to] == ["carol@example.com", "ada@example.com"]
    assert [(m.display_name, m.wire_addr_spec()) for m in resolved.cc] == [("Bob Stone", "bob@example.com")]
    assert resolved.bcc == []  # ADA@example.com is ada@example.com, already in to
    assert (resolved.to_uids, resolved.cc_uids, resolved.bcc_uids) == ([], [], [])
    assert [u.as_map() for u in unresolved] == [
        {"uid": "noemail", "reason": "the user document has no email field"},
        {"uid": "ghost", "reason": f"no document 'ghost' in the users collection '{users}'"},
        {"uid": "number", "reason": "the user document's email is a number, not a string"},
        {"uid": "bad", "reason": "the user document's email is not a valid email address"},
        {"uid": "empty", "reason": "the user document's email is empty"},
    ]
    assert "bad@@" not in str(unresolved)  # the stored value is not repeated to the mail document's writer


def test_only_the_email_field_leaves_the_database(firestore_client, users) -> None:
    client = CountingClient(firestore_client)
    assert UserDirectory(client, users).emails(["ada"]) == {"ada": "ada@example.com"}
    assert [snapshot.to_dict() for snapshot in client.returned] == [{"email": "ada@example.com"}]  # no phone


def test_a_document_with_uids_is_sent_to_their_addresses(firestore_client, users) -> None:
    prepared = prepare({"toUids": ["ada", "ghost"], "message": {"subject": "s", "text": "t"}}, SETTINGS,
                       Lookups(users=UserDirectory(firestore_client, users)))
    assert prepared.mail.recipients == ["ada@example.com"]
    assert prepared.mail.message["To"] == "ada@example.com"
    assert [u.uid for u in prepared.unresolved_uids] == ["ghost"]


def test_no_recipient_left_is_a_refusal_that_lists_every_uid(firestore_client, users) -> None:
    with pytest.raises(Refusal) as raised:
        prepare({"toUids": ["ghost"], "bccUids": ["noemail"], "message": {"subject": "s", "text": "t"}}, SETTINGS,
                Lookups(users=UserDirectory(firestore_client, users)))
    assert str(raised.value) == (
        f"toUids: no recipient remains: none of the 2 user ids has a valid email in '{users}' (see delivery.unresolvedUids)"
    )
    assert [u.uid for u in raised.value.unresolved_uids] == ["ghost", "noemail"]


def test_uids_without_a_users_collection_name_the_setting() -> None:
    with pytest.raises(Refusal) as raised:
        prepare({"ccUids": ["ada"], "message": {"subject": "s", "text": "t"}}, SETTINGS, Lookups())
    assert str(raised.value) == (
        "ccUids: USERS_COLLECTION is not set, so user ids cannot be resolved to addresses; set it or use to, cc and bcc"
    )
