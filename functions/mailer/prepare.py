"""From a mail document's fields to a message ready for the envelope, or a reason it cannot be sent.

    parse -> render the template (if any) -> resolve uids (if any) -> compose

Everything here happens before the document is claimed, so an invalid document costs one status write.
Reads: none for a document without template and uids; a cached template costs none, and uids cost one
batched read (see template_store.py and recipients.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.cloud import firestore

from mailer.addresses import AddressError, parse_mailbox
from mailer.compose import ComposedMail, ComposeDefaults, compose
from mailer.document import MailInputError, MailRequest, parse_mail_document
from mailer.recipients import UID_FIELDS, Unresolved, UserDirectory, all_uids, resolve_recipients, uid_fields
from mailer.settings import Settings

if TYPE_CHECKING:  # the template engine loads on first use: most mail names no template (cold start)
    from mailer.template_store import TemplateStore


class Refusal(Exception):
    """The document cannot be sent as it stands. str(e) is the one-line reason written to delivery.error;
    `unresolved_uids` lists uids that gave no address, for the delivery record."""

    def __init__(self, reason: str, unresolved_uids: Sequence[Unresolved] = ()) -> None:
        super().__init__(reason)
        self.unresolved_uids = list(unresolved_uids)


@dataclass(frozen=True)
class Lookups:
    """What a document may need besides itself; None where the setting is off."""

    templates: TemplateStore | None = None
    users: UserDirectory | None = None


NO_LOOKUPS = Lookups()

# Recipients of one document, after resolving uids: the delivery record keeps a digest per recipient
# (8 bytes, see delivery.Recipients), so this bounds what a document can grow by. Larger audiences are
# several documents (and several SMTP transactions anyway: providers cap recipients per message).
MAX_RECIPIENTS = 10_000


def _check_recipient_count(names: Sequence[str], lists: Sequence[Sequence[object]], what: str) -> None:
    total = sum(len(items) for items in lists)
    if total > MAX_RECIPIENTS:
        largest = max(zip(names, lists), key=lambda pair: len(pair[1]))[0]
        raise MailInputError(
            largest,
            f"{total} {what} in {', '.join(names)} together; at most {MAX_RECIPIENTS} per document: split the audience over several documents",
        )


def lookups_for(client: firestore.Client, settings: Settings) -> Lookups:
    """Lookups in the database of the mail document. The template store lives as long as the instance."""
    templates = None
    if settings.templates_collection:
        from mailer.template_store import store_for

        templates = store_for(client, settings.templates_collection, settings.template_cache_seconds)
    return Lookups(
        templates=templates,
        users=UserDirectory(client, settings.users_collection) if settings.users_collection else None,
    )


@dataclass
class PreparedMail:
    mail: ComposedMail
    unresolved_uids: list[Unresolved] = field(default_factory=list)


def _defaults(settings: Settings) -> ComposeDefaults:
    def mailbox(value: str | None, variable: str):
        if value is None:
            return None
        try:
            return parse_mailbox(value, variable)
        except AddressError as exc:
            raise Refusal(f"function configuration: {exc}") from None

    return ComposeDefaults(
        default_from=mailbox(settings.default_from, "DEFAULT_FROM"),
        default_reply_to=mailbox(settings.default_reply_to, "DEFAULT_REPLY_TO"),
        max_message_bytes=settings.max_message_bytes,
        sendgrid=settings.sendgrid,  # SendGrid fields (X-SMTPAPI) only when mail goes through SendGrid
    )


def _render_template(fields: dict[str, Any], request: MailRequest, templates: TemplateStore | None) -> MailRequest:
    """The request with the template's fields merged over the document's `message`, checked again as
    if the document had carried them (so rendered attachments, subjects and bodies meet the same rules)."""
    ref = request.template
    if ref is None:
        return request
    if templates is None:
        raise MailInputError(
            "template", f"TEMPLATES_COLLECTION is not set, so template {ref.name!r} cannot be rendered; set it or send message fields"
        )
    template = templates.template(ref)
    rendered = template.render(ref.data)
    merged = {key: value for key, value in fields.items() if key != "template"}
    merged["message"] = rendered.merged_into(fields.get("message"))
    try:
        result = parse_mail_document(merged)
    except MailInputError as error:
        from mailer.templates import TemplateError

        raise TemplateError(f"{template.document.label} rendered an invalid {error}") from None
    return result


def _resolve_uids(request: MailRequest, users: UserDirectory | None) -> tuple[MailRequest, list[Unresolved]]:
    fields = uid_fields(request)
    if not fields:
        return request, []
    _check_recipient_count(UID_FIELDS, (request.to_uids, request.cc_uids, request.bcc_uids), "user ids")
    if users is None:
        raise MailInputError(fields[0], "USERS_COLLECTION is not set, so user ids cannot be resolved to addresses; set it or use to, cc and bcc")
    resolved, unresolved = resolve_recipients(request, users.emails(all_uids(request)), users.collection)
    if not (resolved.to or resolved.cc or resolved.bcc):
        raise Refusal(
            f"{fields[0]}: no recipient remains: none of the {len(unresolved)} user ids has a valid email in "
            f"{users.collection!r} (see delivery.unresolvedUids)",
            unresolved,
        )
    return resolved, unresolved


def prepare(
    fields: dict[str, Any], settings: Settings, lookups: Lookups = NO_LOOKUPS, *, message_id: str | None = None
) -> PreparedMail:
    try:
        request = parse_mail_document(fields)
        request = _render_template(fields, request, lookups.templates)
        # Before any read: a document with more addresses than the limit is refused without looking up uids.
        _check_recipient_count(("to", "cc", "bcc"), (request.to, request.cc, request.bcc), "recipients")
        request, unresolved = _resolve_uids(request, lookups.users)
        _check_recipient_count(("to", "cc", "bcc"), (request.to, request.cc, request.bcc), "recipients")
    except MailInputError as exc:
        raise Refusal(str(exc)) from None
    try:
        return PreparedMail(compose(request, _defaults(settings), message_id=message_id), unresolved)
    except MailInputError as exc:
        raise Refusal(str(exc), unresolved) from None
