"""The inbox folder is indexed, not re-read: a listing reads each .eml once (its header block only), later
listings read only new or changed files, and viewing a message reads that message alone. Parses are
counted (never timed): a 1.2 MB message among 200 small ones once made every listing take 12-40 s."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from local import mailbox
from local.inbox_web import LIST_CELL_CHARS, render_list
from local.mailbox import list_messages, load_message

from .dom import parse_dom

BIG_SUBJECT = ("word " * 200_000).strip()  # 1 MB, plain ASCII, folded at spaces as the mailer folds it
BIG_UTF8_SUBJECT = ("wörd " * 50_000).strip()  # RFC 2047 encoded words, 250,000 characters


def fold(text: str, words_per_line: int = 12) -> str:
    """Folded at spaces: unfolding (dropping each CRLF) gives `text` back."""
    words = text.split(" ")
    lines = [" ".join(words[i : i + words_per_line]) for i in range(0, len(words), words_per_line)]
    return "\r\n ".join(lines)


def encoded_words(text: str) -> str:
    data = text.encode()
    chunks = [data[i : i + 45] for i in range(0, len(data), 45)]  # splits characters across words
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(chunk).decode()}?=" for chunk in chunks)


def eml(subject_header: str, *, body: bytes = b"body\r\n", index: int = 1) -> bytes:
    head = (
        f"Return-Path: <app@example.com>\r\nDelivered-To: ada@example.com\r\n"
        f"From: =?utf-8?q?Zo=C3=AB?= <zoe@example.com>\r\nTo: ada@example.com\r\n"
        f"Subject: {subject_header}\r\nMessage-ID: <m{index}@example.com>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return head.encode() + body


def store(folder: Path, index: int, data: bytes) -> Path:
    path = folder / f"20261201T120000{index:06d}Z-{index:04d}.eml"
    path.write_bytes(data)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    store(folder, 0, eml(fold(BIG_SUBJECT), body=b"x" * 200_000 + b"\r\n", index=0))  # ~1.2 MB with the subject
    for index in range(1, 201):
        store(folder, index, eml(f"small {index}", index=index))
    return folder


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files a listing reads, in order."""
    seen: list[str] = []
    original = mailbox.parse_summary

    def counting(path: Path, stat: os.stat_result) -> mailbox.StoredMessage:
        seen.append(path.name)
        return original(path, stat)

    monkeypatch.setattr(mailbox, "parse_summary", counting)
    return seen


def test_a_second_listing_reads_no_file(folder: Path, parses: list[str]) -> None:
    assert sum(path.stat().st_size for path in folder.iterdir()) > 1_200_000
    first = list_messages(folder)
    assert len(first) == 201 and sorted(parses) == sorted(path.name for path in folder.iterdir())
    parses.clear()
    second = list_messages(folder)
    assert parses == [] and second == first
    big = next(message for message in first if message.message_id == "<m0@example.com>")
    assert big.subject == BIG_SUBJECT and big.sender == "Zoë <zoe@example.com>"
    assert [m.subject for m in first[:2]] == ["small 200", "small 199"]  # newest first, as before


def test_only_new_or_changed_files_are_read_and_removed_ones_are_dropped(folder: Path, parses: list[str]) -> None:
    list_messages(folder)
    parses.clear()
    new = store(folder, 201, eml("arrived later", index=201))
    changed = next(folder.glob("*-0005.eml"))
    changed.write_bytes(eml("rewritten subject", index=5))
    gone = next(folder.glob("*-0007.eml"))
    gone.unlink()
    listing = list_messages(folder)
    assert sorted(parses) == sorted([new.name, changed.name])
    subjects = {m.id: m.subject for m in listing}
    assert subjects[new.stem] == "arrived later" and subjects[changed.stem] == "rewritten subject"
    assert gone.stem not in subjects and len(listing) == 201


def test_viewing_a_message_reads_that_file_alone(folder: Path, parses: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    full_parses: list[str] = []
    original = mailbox._parse

    def counting(path: Path):
        full_parses.append(path.name)
        return original(path)

    monkeypatch.setattr(mailbox, "_parse", counting)
    big = next(folder.glob("*-0000.eml"))
    view = load_message(folder, big.stem)
    assert view is not None and view.summary.subject == BIG_SUBJECT
    assert full_parses == [big.name] and parses == []  # no listing, no other file
    # The view page, its html frame and its downloads ask again: still one parse.
    assert load_message(folder, big.stem) is view and full_parses == [big.name]


def test_huge_encoded_words_decode_as_the_parser_would(tmp_path: Path) -> None:
    store(tmp_path, 1, eml(encoded_words(BIG_UTF8_SUBJECT)))
    store(tmp_path, 2, eml(encoded_words("Grüße aus Köln") + " und =?iso-8859-1?q?caf=E9?= tail", index=2))
    big, small = sorted(list_messages(tmp_path), key=lambda m: m.id)
    assert big.subject == BIG_UTF8_SUBJECT
    assert small.subject == "Grüße aus Köln und café tail"
    assert mailbox._quick_decode(encoded_words("Grüße aus Köln") + " und =?iso-8859-1?q?caf=E9?= tail") == small.subject


def test_the_list_cuts_a_huge_subject_and_the_view_shows_it_all(folder: Path) -> None:
    page = parse_dom(render_list(list_messages(folder)).decode())
    big = next(row for row in page.find_all("tr", class_="message") if row.attrs["data-id"].endswith("-0000"))
    shown = big.one("td", class_="subject").one("bdi").text
    assert shown == BIG_SUBJECT[:LIST_CELL_CHARS] + "\u2026"
    assert big.one("span", class_="muted clipped").text == f"({len(BIG_SUBJECT):,} characters)"
    view = load_message(folder, big.attrs["data-id"])
    assert view is not None and dict(view.headers)["Subject"] == BIG_SUBJECT
