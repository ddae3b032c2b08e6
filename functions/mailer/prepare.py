"""From a mail document's fields to a message ready for the envelope, or a reason it cannot be sent.

Everything here happens before the document is claimed, so an invalid document costs one status write.
"""

from __future__ import annotations

from typing import Any

from mailer.addresses import AddressError, parse_mailbox
from mailer.compose import ComposedMail, ComposeDefaults, compose
from mailer.document import MailInputError, MailRequest, parse_mail_document
from mailer.settings import Settings


class Refusal(Exception):
    """The document cannot be sent as it stands. str(e) is the one-line reason written to delivery.error."""


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
    )


def _resolve(request: MailRequest, settings: Settings) -> MailRequest:
    # Templates and uid recipients arrive with the templates work; until then they are refused
    # by name rather than sent half-rendered or dropped.
    if request.template is not None:
        raise Refusal(f"template: rendering templates is not supported yet (template {request.template.name!r})")
    if request.to_uids or request.cc_uids or request.bcc_uids:
        raise Refusal("toUids: resolving recipients by uid is not supported yet; use to, cc or bcc")
    return request


def prepare(fields: dict[str, Any], settings: Settings) -> ComposedMail:
    try:
        request = _resolve(parse_mail_document(fields), settings)
        return compose(request, _defaults(settings))
    except MailInputError as exc:
        raise Refusal(str(exc)) from None
