"""Recipients by user id: toUids, ccUids and bccUids resolved through the users collection's `email`.

One batched read (BatchGetDocuments, `email` field only) per email for all its uids, one read per
distinct uid. A uid whose document is missing, has no `email`, or holds something that is not a valid
address is left out and listed, with the reason, in `delivery.unresolvedUids`; the reason never repeats
the stored value. Addresses are then de-duplicated across to, cc and bcc (case-insensitively, first
occurrence kept, so someone in both to and bcc is only in to).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from google.api_core import exceptions as gexc
from google.cloud import firestore

from mailer.addresses import AddressError, Mailbox, firestore_type_name, parse_mailbox
from mailer.document import MailInputError, MailRequest

UID_FIELDS = ("toUids", "ccUids", "bccUids")
_PERMANENT = (gexc.PermissionDenied, gexc.Unauthenticated, gexc.InvalidArgument, gexc.NotFound, gexc.FailedPrecondition)
_NO_DOCUMENT = object()


@dataclass(frozen=True)
class Unresolved:
    uid: str
    reason: str

    def as_map(self) -> dict[str, str]:
        return {"uid": self.uid, "reason": self.reason}


class UserDirectory:
    """Reads users' `email` fields from one collection."""

    def __init__(self, client: firestore.Client, collection: str) -> None:
        self.collection = collection
        self._client = client

    def emails(self, uids: Iterable[str]) -> dict[str, object]:
        """uid -> the stored `email` value (None when absent), for the uids that have a document."""
        references = [self._client.collection(self.collection).document(uid) for uid in dict.fromkeys(uids)]
        if not references:
            return {}
        try:
            snapshots = list(self._client.get_all(references, field_paths=["email"]))
        except _PERMANENT as error:
            raise MailInputError(
                "toUids",
                f"reading the users collection {self.collection!r} failed: {type(error).__name__} ({error.message}); "
                "check USERS_COLLECTION and that the function's service account may read it",
            ) from None
        return {snapshot.id: (snapshot.to_dict() or {}).get("email") for snapshot in snapshots if snapshot.exists}


def uid_fields(request: MailRequest) -> list[str]:
    """The uid fields the request uses, in document order."""
    lists = (request.to_uids, request.cc_uids, request.bcc_uids)
    return [name for name, uids in zip(UID_FIELDS, lists) if uids]


def all_uids(request: MailRequest) -> list[str]:
    return list(dict.fromkeys([*request.to_uids, *request.cc_uids, *request.bcc_uids]))


def _mailbox(uid: str, stored: object, collection: str) -> Mailbox | Unresolved:
    if stored is _NO_DOCUMENT:
        return Unresolved(uid, f"no document {uid!r} in the users collection {collection!r}")
    if stored is None:
        return Unresolved(uid, "the user document has no email field")
    if stored == "":
        return Unresolved(uid, "the user document's email is empty")
    if not isinstance(stored, str):
        return Unresolved(uid, f"the user document's email is a {firestore_type_name(stored)}, not a string")
    try:
        return parse_mailbox(stored, "email")
    except AddressError:
        # The stored value is not repeated: whoever wrote the mail document may not read users.
        return Unresolved(uid, "the user document's email is not a valid email address")


def resolve_recipients(
    request: MailRequest, emails: Mapping[str, object], collection: str
) -> tuple[MailRequest, list[Unresolved]]:
    """The request with its uids turned into addresses (and every recipient list de-duplicated),
    plus the uids that gave no address, each once, in order of first appearance."""
    found: dict[str, Mailbox] = {}
    unresolved: list[Unresolved] = []
    for uid in all_uids(request):
        result = _mailbox(uid, emails.get(uid, _NO_DOCUMENT), collection)
        if isinstance(result, Unresolved):
            unresolved.append(result)
        else:
            found[uid] = result

    seen: set[str] = set()

    def distinct(mailboxes: Sequence[Mailbox], uids: Sequence[str]) -> list[Mailbox]:
        kept = []
        for mailbox in [*mailboxes, *(found[uid] for uid in uids if uid in found)]:
            key = mailbox.wire_addr_spec().lower()
            if key not in seen:
                seen.add(key)
                kept.append(mailbox)
        return kept

    resolved = replace(
        request,
        to=distinct(request.to, request.to_uids),
        cc=distinct(request.cc, request.cc_uids),
        bcc=distinct(request.bcc, request.bcc_uids),
        to_uids=[],
        cc_uids=[],
        bcc_uids=[],
    )
    return resolved, unresolved
