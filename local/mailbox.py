"""Reading the inbox folder: a summary per stored .eml file, and one message taken apart for viewing
(text body, html body with cid: images inlined, attachments).

Listing is cheap however big the folder or its messages: a summary comes from the file's header block
only, header values too long for email.policy.default's parser (which takes ~30 s on a 1 MB Subject) are
decoded by a linear RFC 2047 decoder, and summaries are kept in memory keyed by (name, size, mtime, inode),
so each file is read once per process and a listing only parses files that are new or changed."""

from __future__ import annotations

import base64
import binascii
import email
import email.parser
import email.policy
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote

# Ids are file names made by local.inbox; anything else (paths, dots) is refused before touching disk.
MESSAGE_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,127}$")
STORED_STAMP = "%Y%m%dT%H%M%S%fZ"  # how local.inbox names files: <stamp>-<sequence>.eml
_CID_REFERENCE = re.compile(r"cid:([^\"'\s)>]+)", re.IGNORECASE)
FULL_HEADER_PARSE_CHARS = 8192  # longer header values skip email.policy.default's (superlinear) parser
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_READ_CHUNK = 64 * 1024
_VIEWS_KEPT = 4  # recently viewed messages kept taken apart: the view, its html frame, its downloads


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


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"[ \t]+")


def _word_bytes(encoding: str, text: str) -> bytes:
    if encoding in "bB":
        return base64.b64decode(text + "=" * (-len(text) % 4))
    return binascii.a2b_qp(text.replace("_", " "))


def _quick_decode(raw: str) -> str:
    """A header value unfolded and RFC 2047-decoded in linear time (for values too long for policy.default).
    Adjacent encoded words in one charset are joined before decoding, as a character may be split across
    them; the whitespace between encoded words is dropped (RFC 2047 section 6.2)."""
    if any("\udc80" <= char <= "\udcff" for char in raw):  # raw 8-bit bytes (SMTPUTF8): read as UTF-8
        raw = raw.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    text = _FOLD.sub("", raw).strip()
    pieces: list[str] = []
    pending: tuple[str, bytearray] | None = None  # charset and bytes of adjacent encoded words

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            charset, data = pending
            try:
                pieces.append(bytes(data).decode(charset, "replace"))
            except LookupError:
                pieces.append(bytes(data).decode("utf-8", "replace"))
            pending = None

    position = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        if not (pending is not None and _BETWEEN_WORDS.fullmatch(between)):
            flush()
            pieces.append(between)
        charset = match.group(1).split("*", 1)[0].lower()  # drop an RFC 2231 language tag
        try:
            data = _word_bytes(match.group(2), match.group(3))
        except (ValueError, binascii.Error):
            flush()
            pieces.append(match.group(0))
        else:
            if pending is not None and pending[0] != charset:
                flush()
            if pending is None:
                pending = (charset, bytearray())
            pending[1].extend(data)
        position = match.end()
    flush()
    pieces.append(text[position:])
    return "".join(pieces)


def _decode(name: str, raw: str) -> str:
    if len(raw) <= FULL_HEADER_PARSE_CHARS:
        try:
            return str(email.policy.default.header_fetch_parse(name, raw))
        except (ValueError, TypeError, IndexError, AttributeError):  # malformed: show it undecoded
            return _FOLD.sub("", str(raw)).strip()
    return _quick_decode(raw)


# The DSN parameters (RFC 3461) the inbox received, which it writes after Return-Path and Delivered-To.
DSN_TRACE_HEADER = "X-Inbox-DSN"


def _header(message: EmailMessage, name: str) -> str:
    return ", ".join(_decode(key, raw) for key, raw in message.raw_items() if key.lower() == name.lower())


def _parse(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[return-value]


def _read_header_block(path: Path) -> bytes:
    """The bytes up to the blank line ending the header block (the whole file if there is none)."""
    data = b""
    with path.open("rb") as file:
        while chunk := file.read(_READ_CHUNK):
            searched_from = max(0, len(data) - 3)
            data += chunk
            end = _HEADER_END.search(data, searched_from)
            if end is not None:
                return data[: end.end()]
    return data


def _summary(path: Path, headers: EmailMessage, stat: os.stat_result) -> StoredMessage:
    return StoredMessage(
        id=path.stem,
        path=path,
        received=datetime.fromtimestamp(stat.st_mtime),
        size=stat.st_size,
        sender=_header(headers, "From"),
        recipients=_header(headers, "To"),
        subject=_header(headers, "Subject"),
        message_id=_header(headers, "Message-ID"),
    )


def parse_summary(path: Path, stat: os.stat_result) -> StoredMessage:
    """One file's summary from its header block. The only place a listing reads a file (tests count calls)."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(_read_header_block(path))
    return _summary(path, headers, stat)  # type: ignore[arg-type]


_FileKey = tuple[int, int, int]  # size, mtime_ns, inode: a replaced or rewritten file is read again


def _file_key(stat: os.stat_result) -> _FileKey:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


class _Index:
    """Summaries of one folder's files, read once each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[_FileKey, StoredMessage]] = {}

    def summary(self, path: Path, stat: os.stat_result) -> StoredMessage:
        key = _file_key(stat)
        known = self.entries.get(path.name)
        if known is not None and known[0] == key:
            return known[1]
        summary = parse_summary(path, stat)
        self.entries[path.name] = (key, summary)
        return summary


_indexes: dict[Path, _Index] = {}
_indexes_lock = threading.Lock()


def _index(folder: Path) -> _Index:
    with _indexes_lock:
        return _indexes.setdefault(folder.absolute(), _Index())


def list_messages(folder: Path) -> list[StoredMessage]:
    """Every stored message, newest first. Only files new or changed since the last call are read."""
    if not folder.is_dir():
        return []
    index = _index(folder)
    with index.lock:
        summaries = []
        seen = set()
        for entry in os.scandir(folder):
            stem, dot, extension = entry.name.rpartition(".")
            if not dot or extension != "eml" or not MESSAGE_ID.match(stem):
                continue
            try:
                stat = entry.stat()
                summaries.append(index.summary(folder / entry.name, stat))
            except FileNotFoundError:  # deleted while listing
                continue
            seen.add(entry.name)
        for gone in index.entries.keys() - seen:
            del index.entries[gone]
    return sorted(summaries, key=lambda summary: summary.id, reverse=True)


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


_views: OrderedDict[tuple[Path, _FileKey], MessageView] = OrderedDict()
_views_lock = threading.Lock()


def load_message(folder: Path, message_id: str) -> MessageView | None:
    """The message with this id taken apart (only this file is read), or None if there is none. The last
    few views are kept, so the view page, its html frame and its downloads parse the file once."""
    path = message_path(folder, message_id)
    if path is None:
        return None
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    key = (path.absolute(), _file_key(stat))
    with _views_lock:
        if key in _views:
            _views.move_to_end(key)
            return _views[key]
    view = _take_apart(path, stat)
    with _views_lock:
        _views[key] = view
        while len(_views) > _VIEWS_KEPT:
            _views.popitem(last=False)
    return view


def _take_apart(path: Path, stat: os.stat_result) -> MessageView:
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
        for name in ("From", "To", "Cc", "Reply-To", "Date", "Subject", "Message-ID", "Return-Path", "Delivered-To",
                     DSN_TRACE_HEADER)
        if (value := _header(message, name))
    ]
    return MessageView(
        summary=_summary(path, message, stat),
        headers=headers,
        text=_decoded_text(text_part) if text_part is not None else None,
        html=_inline_cid_images(html, attachments) if html is not None else None,
        attachments=attachments,
    )
