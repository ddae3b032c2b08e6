"""Reading the inbox folder: a summary per stored .eml file, and one message taken apart for viewing
(text body, html body with cid: images inlined, attachments)."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote

# Ids are file names made by local.inbox; anything else (paths, dots) is refused before touching disk.
MESSAGE_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,127}$")
STORED_STAMP = "%Y%m%dT%H%M%S%fZ"  # how local.inbox names files: <stamp>-<sequence>.eml
_CID_REFERENCE = re.compile(r"cid:([^\"'\s)>]+)", re.IGNORECASE)


@dataclass(frozen=True)
class StoredMessage:
    id: str
    path: Path
    received: datetime  # when the file was written (local time)
    size: int  # bytes of the .eml file
    sender: str  # From header
    recipients: str  # To header
    subject: str
    message_id: str  # Message-ID header, with <>

    @property
    def stored_at(self) -> datetime | None:
        """When the inbox stored it, to the microsecond (UTC), read from the name local.inbox gives each
        file; None for a file named otherwise."""
        try:
            return datetime.strptime(self.id.split("-", 1)[0], STORED_STAMP).replace(tzinfo=timezone.utc)
        except ValueError:
            return None


@dataclass(frozen=True)
class Attachment:
    index: int
    filename: str
    content_type: str
    size: int
    content_id: str | None  # set for inline parts the html may show via cid:
    data: bytes


@dataclass(frozen=True)
class MessageView:
    summary: StoredMessage
    headers: list[tuple[str, str]]  # what a reader wants to see, in display order
    text: str | None
    html: str | None  # cid: references to inline images replaced by data: URIs
    attachments: list[Attachment]


def _header(message: EmailMessage, name: str) -> str:
    try:
        return ", ".join(str(value) for value in message.get_all(name) or [])
    except (ValueError, TypeError, IndexError, AttributeError):  # malformed: show it undecoded
        return ", ".join(str(raw) for key, raw in message.raw_items() if key.lower() == name.lower())


def _parse(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[return-value]


def _summary(path: Path, message: EmailMessage) -> StoredMessage:
    stat = path.stat()
    return StoredMessage(
        id=path.stem,
        path=path,
        received=datetime.fromtimestamp(stat.st_mtime),
        size=stat.st_size,
        sender=_header(message, "From"),
        recipients=_header(message, "To"),
        subject=_header(message, "Subject"),
        message_id=_header(message, "Message-ID"),
    )


def list_messages(folder: Path) -> list[StoredMessage]:
    """Every stored message, newest first."""
    if not folder.is_dir():
        return []
    paths = sorted(folder.glob("*.eml"), reverse=True)
    return [_summary(path, _parse(path)) for path in paths if MESSAGE_ID.match(path.stem)]


def message_path(folder: Path, message_id: str) -> Path | None:
    if not MESSAGE_ID.match(message_id):
        return None
    path = folder / f"{message_id}.eml"
    return path if path.is_file() else None


def _decoded_text(part: EmailMessage) -> str:
    try:
        text = str(part.get_content())
    except (LookupError, ValueError):  # unknown charset: show what can be shown
        text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    return text.replace("\r\n", "\n")  # stored as on the wire (CRLF); shown as text


def _inline_cid_images(html: str, attachments: list[Attachment]) -> str:
    images = {
        attachment.content_id: f"data:{attachment.content_type};base64,{base64.b64encode(attachment.data).decode()}"
        for attachment in attachments
        if attachment.content_id and attachment.content_type.startswith("image/")
    }
    return _CID_REFERENCE.sub(lambda match: images.get(unquote(match.group(1)), match.group(0)), html)


def load_message(folder: Path, message_id: str) -> MessageView | None:
    """The message with this id taken apart, or None if there is none."""
    path = message_path(folder, message_id)
    if path is None:
        return None
    message = _parse(path)
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    attachments = []
    for part in message.walk():
        if part.is_multipart() or part is text_part or part is html_part:
            continue
        content_id = part.get("Content-ID")
        data = part.get_payload(decode=True) or b""
        attachments.append(
            Attachment(
                index=len(attachments),
                filename=part.get_filename() or f"part-{len(attachments) + 1}",
                content_type=part.get_content_type(),
                size=len(data),
                content_id=str(content_id).strip().strip("<>") if content_id else None,
                data=data,
            )
        )
    html = _decoded_text(html_part) if html_part is not None else None
    headers = [
        (name, value)
        for name in ("From", "To", "Cc", "Reply-To", "Date", "Subject", "Message-ID", "Return-Path", "Delivered-To")
        if (value := _header(message, name))
    ]
    return MessageView(
        summary=_summary(path, message),
        headers=headers,
        text=_decoded_text(text_part) if text_part is not None else None,
        html=_inline_cid_images(html, attachments) if html is not None else None,
        attachments=attachments,
    )
