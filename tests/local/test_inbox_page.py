"""The inbox page, looked at the way a person does: headless Chromium loads it and the test reads what is
on the page. Mail content is hostile input: it must show as text, never run, never load anything remote."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage

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
