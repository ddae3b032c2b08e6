"""The inbox page, looked at the way a person does: headless Chromium loads it and the test reads what is
on the page. Mail content is hostile input: it must show as text, never run, never load anything remote."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from local.inbox_web import human_size
from local.mailbox import list_messages

from .conftest import InboxUnderTest, RecordingServer
from .dom import Element
from .test_inbox import rich_message, simple_message

Browser = Callable[[str], Element]
HOSTILE_SUBJECT = "<b>Bold</b> & <img src=x onerror=alert(1)> \"quoted\""


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_list_shows_time_from_to_subject_and_size(inbox: InboxUnderTest, browser: Browser) -> None:
    inbox.send(simple_message("First", to="ada@example.com"))
    inbox.send(simple_message("Second", to="grace@example.com"))
    page = browser(inbox.web.url)
    rows = page.find_all("tr", class_="message")
    stored = list_messages(inbox.folder)
    assert [row.attrs["data-id"] for row in rows] == [m.id for m in stored]  # newest first
    for row, message in zip(rows, stored):
        cells = {cell.attrs["class"]: cell.text for cell in row.find_all("td")}
        assert cells == {
            "time": message.received.strftime("%Y-%m-%d %H:%M:%S"),
            "from": "Mailer <noreply@example.com>",
            "to": message.recipients,
            "subject": message.subject,
            "size": human_size(message.size),
        }
    assert [row.one("a").attrs["href"] for row in rows] == [f"/messages/{m.id}" for m in stored]
    assert [m.subject for m in stored] == ["Second", "First"]


def test_an_empty_inbox_says_so(inbox: InboxUnderTest, browser: Browser) -> None:
    page = browser(inbox.web.url)
    assert page.one(id="empty").text == "No messages yet."
    assert page.find_all("tr", class_="message") == []


def test_html_in_headers_is_shown_as_text(inbox: InboxUnderTest, browser: Browser) -> None:
    message = simple_message(HOSTILE_SUBJECT)
    del message["From"]
    message["From"] = '"<i>Eve</i>" <eve@example.com>'
    inbox.send(message)
    [stored] = list_messages(inbox.folder)

    listing = browser(inbox.web.url)
    row = listing.one("tr", class_="message")
    subject_cell = row.one("td", class_="subject")
    assert subject_cell.text == HOSTILE_SUBJECT
    assert subject_cell.find_all("b") == [] and listing.find_all("img") == []
    assert row.one("td", class_="from").text == '"<i>Eve</i>" <eve@example.com>'
    assert listing.find_all("i") == []

    view = browser(f"{inbox.web.url}messages/{stored.id}")
    assert view.one("h1", id="subject").text == HOSTILE_SUBJECT
    assert view.find_all("b") == [] and view.find_all("img") == [] and view.find_all("i") == []


def test_the_view_shows_text_sandboxed_html_and_attachments(inbox: InboxUnderTest, browser: Browser) -> None:
    inbox.send(rich_message())
    [stored] = list_messages(inbox.folder)
    view_url = f"{inbox.web.url}messages/{stored.id}"
    page = browser(view_url)

    assert page.one("section", id="text").one("pre").text == "plain body\n"
    frame = page.one("section", id="html").one("iframe")
    assert frame.attrs["sandbox"] == ""  # no scripts, no same-origin, no forms, no popups
    assert frame.attrs["src"] == f"/messages/{stored.id}/html"

    links = page.one("section", id="attachments").find_all("a")
    assert [link.text for link in links] == ["logo.svg", "report.csv"]
    assert all("download" in link.attrs for link in links)
    status, headers, body = fetch(inbox.web.url.rstrip("/") + links[1].attrs["href"])
    assert (status, body) == (200, b"month,sent\n05,1024\n")
    assert headers["Content-Type"] == "application/octet-stream"  # never rendered on this origin
    assert headers["Content-Disposition"].startswith('attachment; filename="report.csv"')

    status, headers, body = fetch(f"{view_url}.eml")
    assert status == 200 and body == stored.path.read_bytes()


def test_mail_html_runs_no_script_and_loads_nothing_remote(
    inbox: InboxUnderTest, browser: Browser, remote_server: RecordingServer
) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Tracked"
    message.set_content("text")
    message.add_alternative(
        "<html><head>"
        f'<link rel="stylesheet" href="{remote_server.url}/style.css">'
        "</head><body><p id=\"greeting\">Hello</p>"
        f'<img src="{remote_server.url}/pixel.gif">'
        f'<iframe src="{remote_server.url}/frame"></iframe>'
        "<script>document.body.setAttribute('data-script-ran', 'yes');"
        f"fetch('{remote_server.url}/fetched');</script>"
        "</body></html>",
        subtype="html",
    )
    inbox.send(message)
    [stored] = list_messages(inbox.folder)
    html_url = f"{inbox.web.url}messages/{stored.id}/html"

    status, headers, _ = fetch(html_url)
    assert status == 200
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy.split("; ")

    # Inside the message view (framed) and opened on its own: the html is there, inert.
    browser(f"{inbox.web.url}messages/{stored.id}")
    direct = browser(html_url)
    assert direct.one("p", id="greeting").text == "Hello"
    assert direct.find_all("script"), "the script must be in the page for this test to mean anything"
    assert "data-script-ran" not in direct.one("body").attrs
    assert remote_server.requests == []


@pytest.mark.parametrize(
    "path",
    ["/messages/..%2F..%2Fetc%2Fpasswd", "/messages/../lock", "/messages/nothing-here", "/elsewhere",
     "/messages/{id}/attachments/9", "/messages/{id}/other"],
)
def test_unknown_paths_are_not_found(inbox: InboxUnderTest, path: str) -> None:
    inbox.send(simple_message())
    [stored] = list_messages(inbox.folder)
    status, headers, _ = fetch(inbox.web.url.rstrip("/") + path.format(id=stored.id))
    assert status == 404
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")


# -- bidi isolation and layout, measured by Chromium's layout engine ----------------------------------------
# The served pages forbid scripts (CSP), so the measuring script runs on a file:// copy of the exact markup.

SPOOFED = "invoice\u202egnp.exe"  # shown by a careless client as "invoice" + "exe.png" reversed
PROBE = """<script>
(() => {
  const out = {reversed: [], bdi: [], viewport: innerHeight};
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {  // the page's own text (outside <bdi>) must read left to right
    const parent = node.parentElement;
    if (!parent || parent.closest('bdi, script, style')) continue;
    let last = null;
    for (let i = 0; i < node.data.length; i++) {
      if (/\\s/.test(node.data[i])) continue;
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const rect = range.getBoundingClientRect();
      if (!rect.width) continue;
      if (last && Math.abs(rect.top - last.top) < 2 && rect.left < last.left - 0.5) {
        out.reversed.push(node.data.trim());
        break;
      }
      last = rect;
    }
  }
  for (const bdi of document.querySelectorAll('bdi')) out.bdi.push(getComputedStyle(bdi).unicodeBidi);
  const box = (selector) => {
    const element = document.querySelector(selector);
    if (!element) return null;
    const rect = element.getBoundingClientRect();
    return {top: rect.top, bottom: rect.bottom, height: rect.height};
  };
  out.attachments = box('#attachments');
  out.html = box('#html');
  out.frame = box('#html iframe');
  const frame = document.querySelector('#html iframe');
  out.frameResize = frame ? getComputedStyle(frame).resize : null;
  document.body.setAttribute('data-probe', JSON.stringify(out));
})();
</script>"""


def measure(browser: Browser, markup: str, folder: Path) -> dict:
    """Load `markup` plus the probe in Chromium; what the probe measured."""
    markup = markup.replace('<meta http-equiv="refresh" content="5">', "")
    page = folder / "probe.html"
    page.write_text(markup.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    return json.loads(browser(page.as_uri()).one("body").attrs["data-probe"])


def spoofing_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = f'"Billing {SPOOFED}" <billing@example.com>'
    message["To"] = "ada@example.com"
    message["Subject"] = SPOOFED
    message.set_content("see attachment\n")
    message.add_attachment(b"\x89PNG", maintype="image", subtype="png", filename=SPOOFED)
    return message


def test_bidi_controls_in_mail_stay_inside_their_bdi(inbox: InboxUnderTest, browser: Browser, tmp_path: Path) -> None:
    inbox.send(spoofing_message())
    [stored] = list_messages(inbox.folder)
    assert stored.subject == SPOOFED  # the page gets the override character as sent

    listing = browser(inbox.web.url)
    row = listing.one("tr", class_="message")
    for cell in ("from", "to", "subject"):
        assert [b.text for b in row.one("td", class_=cell).find_all("bdi")] == [row.one("td", class_=cell).text]
    assert row.one("td", class_="subject").one("bdi").text == SPOOFED

    view_url = f"{inbox.web.url}messages/{stored.id}"
    view = browser(view_url)
    assert view.one("h1", id="subject").one("bdi").text == SPOOFED
    assert all(len(cell.find_all("bdi")) == 1 for cell in view.one("table", id="headers").find_all("td"))
    link = view.one("section", id="attachments").one("a")
    assert link.one("bdi").text == SPOOFED
    assert view.one("title").text == f"\u2068{SPOOFED}\u2069"  # a title holds no elements: FSI ... PDI

    # Laid out by Chromium: every bdi isolates, and no text of the page's own is reordered, notably the
    # ", 4 B" after the attachment name on the same line.
    for url in (inbox.web.url, view_url):
        _, _, body = fetch(url)
        measured = measure(browser, body.decode(), tmp_path)
        assert measured["bdi"] and set(measured["bdi"]) == {"isolate"}
        assert measured["reversed"] == [], url
    # The probe sees a spill when there is one: the same view without <bdi> reverses the following text.
    _, _, body = fetch(view_url)
    unisolated = body.decode().replace("<bdi>", "").replace("</bdi>", "")
    assert measure(browser, unisolated, tmp_path)["reversed"] != []


def test_attachments_are_above_a_resizable_html_frame(inbox: InboxUnderTest, browser: Browser, tmp_path: Path) -> None:
    inbox.send(rich_message())
    [stored] = list_messages(inbox.folder)
    view_url = f"{inbox.web.url}messages/{stored.id}"
    page = browser(view_url)
    order = [section.attrs["id"] for section in page.find_all("section")]
    assert order == ["attachments", "text", "html"]
    assert page.one("a", id="html-alone").attrs["href"] == f"/messages/{stored.id}/html"

    _, _, body = fetch(view_url)
    measured = measure(browser, body.decode(), tmp_path)
    viewport = measured["viewport"]
    assert measured["attachments"]["bottom"] <= viewport  # in sight without scrolling
    assert measured["attachments"]["bottom"] <= measured["html"]["top"]
    assert 0.6 * viewport <= measured["frame"]["height"] <= 0.75 * viewport  # most of the window, not more
    assert measured["frameResize"] == "vertical"


def test_the_list_has_from_and_to_columns(inbox: InboxUnderTest, browser: Browser) -> None:
    inbox.send(simple_message("Columns", to="grace@example.com"))
    page = browser(inbox.web.url)
    assert [th.text for th in page.one("table", id="messages").find_all("th")] == ["Time", "From", "To", "Subject", "Size"]
    row = page.one("tr", class_="message")
    assert row.one("td", class_="from").text == "Mailer <noreply@example.com>"
    assert row.one("td", class_="to").text == "grace@example.com"
