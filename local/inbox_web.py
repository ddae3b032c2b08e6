"""The inbox as a small web page on 127.0.0.1: a list of received messages and a view of each.

Mail is untrusted input. Everything put into a page is HTML-escaped; a message's html is never part of a
page: it is served on its own URL with a CSP that sandboxes it and blocks scripts and every remote load
(images only as data: URIs), and shown in an <iframe sandbox="">. Attachments are always downloads.
Every piece of mail text on a page (subject, addresses, header values, file names, types) sits in its own
<bdi>, so bidi controls in it (e.g. U+202E in `invoice\u202egnp.exe`) cannot reorder the text around it.

    GET /                              the list (time, from, to, subject, size)
    GET /messages/<id>                 headers, text, html (framed), attachments
    GET /messages/<id>/html            the html body, sandboxed
    GET /messages/<id>/attachments/<n> attachment n, as a download
    GET /messages/<id>.eml             the stored file
"""

from __future__ import annotations

import html
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from local.errors import StartError
from local.mailbox import MessageView, StoredMessage, list_messages, load_message, message_path

LISTEN_HOST = "127.0.0.1"
PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# For a message's html: no scripts, no fetches, no forms, a unique origin even when opened directly.
MAIL_HTML_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'"
LIST_CELL_CHARS = 200  # a 1 MB subject is cut in the list (the message view shows it all)
_ROUTE = re.compile(r"^/messages/(?P<id>[^/]+?)(?P<rest>\.eml|/html|/attachments/(?P<index>\d{1,4}))?$")

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f4f4f4; }
td.size { text-align: right; white-space: nowrap; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: .8rem; border: 1px solid #ddd; }
bdi { unicode-bidi: isolate; }
/* The frame cannot be sized to a cross-origin sandboxed document without scripts: most of the window,
   resizable, scrolling inside; attachments are listed above it so they are never hidden. */
iframe { display: block; width: 100%; height: 70vh; min-height: 12rem; box-sizing: border-box;
         border: 1px solid #ddd; resize: vertical; overflow: auto; }
.muted { color: #777; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _t(value: object, limit: int | None = None) -> str:
    """Untrusted text, escaped and bidi-isolated; cut to `limit` characters (with a note) if given."""
    text = str(value)
    note = ""
    if limit is not None and len(text) > limit:
        note = f' <span class="muted clipped">({len(text):,} characters)</span>'
        text = text[:limit] + "\u2026"
    return f"<bdi>{_e(text)}</bdi>{note}"


def _plain_title(value: str) -> str:
    """A <title> cannot hold a <bdi>: the text inside FSI ... PDI (a PDI ends every override opened in it)."""
    return "\u2068" + value[:LIST_CELL_CHARS] + "\u2069"


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024**2:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024**2:.1f} MB"


def _page(title: str, body: str, *, refresh: bool = False) -> bytes:
    meta = '<meta http-equiv="refresh" content="5">' if refresh else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}<title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    ).encode()


def render_list(messages: list[StoredMessage]) -> bytes:
    rows = "".join(
        f'<tr class="message" data-id="{_e(m.id)}"><td class="time">{_e(m.received.strftime("%Y-%m-%d %H:%M:%S"))}</td>'
        f'<td class="from">{_t(m.sender, LIST_CELL_CHARS)}</td><td class="to">{_t(m.recipients, LIST_CELL_CHARS)}</td>'
        f'<td class="subject"><a href="/messages/{_e(m.id)}">'
        f'{_t(m.subject, LIST_CELL_CHARS) if m.subject else "(no subject)"}</a></td>'
        f'<td class="size">{_e(human_size(m.size))}</td></tr>'
        for m in messages
    )
    table = (
        '<table id="messages"><thead><tr><th>Time</th><th>From</th><th>To</th><th>Subject</th><th>Size</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>"
        if messages
        else '<p id="empty" class="muted">No messages yet.</p>'
    )
    count = f"{len(messages)} message{'s' if len(messages) != 1 else ''}"
    return _page("Inbox", f'<h1>Inbox</h1><p class="muted">{count}; refreshes every 5 s.</p>{table}', refresh=True)


def _section(title: str, element_id: str, content: str) -> str:
    return f'<section id="{element_id}"><h2>{_e(title)}</h2>{content}</section>'


def render_message(view: MessageView) -> bytes:
    base = f"/messages/{_e(view.summary.id)}"
    headers = "".join(f"<tr><th>{_e(name)}</th><td>{_t(value)}</td></tr>" for name, value in view.headers)
    subject = view.summary.subject
    parts = [
        '<p><a href="/">&larr; Inbox</a></p>',
        f'<h1 id="subject">{_t(subject) if subject else "(no subject)"}</h1>',
        f'<table id="headers">{headers}</table>',
    ]
    # Attachments first: short, and never pushed out of sight by a long text or the html frame.
    if view.attachments:
        items = "".join(
            f'<li><a download href="{base}/attachments/{a.index}">{_t(a.filename)}</a> '
            f'<span class="muted">{_t(a.content_type)}, {_e(human_size(a.size))}'
            f'{", inline cid:" + _t(a.content_id) if a.content_id else ""}</span></li>'
            for a in view.attachments
        )
        parts.append(_section("Attachments", "attachments", f"<ul>{items}</ul>"))
    if view.text is not None:
        parts.append(_section("Text", "text", f"<pre>{_e(view.text)}</pre>"))
    if view.html is not None:
        frame = f'<iframe sandbox="" referrerpolicy="no-referrer" title="HTML body" src="{base}/html"></iframe>'
        own_tab = (f'<p class="muted">The frame scrolls and its corner drags to resize; '
                   f'<a id="html-alone" href="{base}/html" target="_blank" rel="noopener noreferrer">'
                   f"open the html on its own</a> (sandboxed there too).</p>")
        parts.append(_section("HTML", "html", own_tab + frame))
    parts.append(f'<p class="muted"><a href="{base}.eml" download>Download .eml</a> ({_e(human_size(view.summary.size))})</p>')
    return _page(_plain_title(subject) if subject else "(no subject)", "".join(parts))


def _ascii_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "attachment"


class _InboxHandler(BaseHTTPRequestHandler):
    server: InboxWebServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the demo's output stays short; nothing here is worth a log line

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        folder = self.server.folder
        if path == "/":
            return self._send(HTTPStatus.OK, render_list(list_messages(folder)), "text/html; charset=utf-8")
        match = _ROUTE.match(path)
        rest = match["rest"] if match else None
        if match is not None and rest == ".eml":  # the stored file as it is: nothing to parse
            path_on_disk = message_path(folder, match["id"])
            if path_on_disk is not None:
                return self._send(HTTPStatus.OK, path_on_disk.read_bytes(), "message/rfc822",
                                  download=f"{match['id']}.eml")
        view = load_message(folder, match["id"]) if match and rest != ".eml" else None
        if match is None or view is None:
            return self._send(HTTPStatus.NOT_FOUND, _page("Not found", "<h1>Not found</h1>"), "text/html; charset=utf-8")
        if rest is None:
            return self._send(HTTPStatus.OK, render_message(view), "text/html; charset=utf-8")
        if rest == "/html":
            return self._send(HTTPStatus.OK, (view.html or "").encode(), "text/html; charset=utf-8",
                              policy=MAIL_HTML_POLICY)
        index = int(match["index"])
        if index >= len(view.attachments):
            return self._send(HTTPStatus.NOT_FOUND, _page("Not found", "<h1>Not found</h1>"), "text/html; charset=utf-8")
        attachment = view.attachments[index]
        # Always a download, never rendered: an html attachment must not run on this origin.
        return self._send(HTTPStatus.OK, attachment.data, "application/octet-stream", download=attachment.filename)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, *, policy: str = PAGE_POLICY,
              download: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", policy)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        if download is not None:
            self.send_header(
                "Content-Disposition",
                f"attachment; filename=\"{_ascii_filename(download)}\"; filename*=UTF-8''{quote(download, safe='')}",
            )
        self.end_headers()
        self.wfile.write(body)


class InboxWebServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, port: int = 0) -> None:
        self.folder = folder
        super().__init__((LISTEN_HOST, port), _InboxHandler)


class InboxWeb:
    """The web page in a background thread. Use as a context manager or call start()/stop()."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        try:
            self._server = InboxWebServer(folder, port)
        except OSError as error:
            raise StartError(f"inbox page: cannot listen on {LISTEN_HOST}:{port} ({error.strerror})") from None
        self.port: int = self._server.server_address[1]
        self.url = f"http://{LISTEN_HOST}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="inbox-web", daemon=True)

    def __enter__(self) -> InboxWeb:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def message_url(self, message_id: str) -> str:
        return f"{self.url}messages/{quote(message_id)}"
