"""`make send` against a running `make demo ARGS=--serve`, and the serve mode's own start and stop."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from local import send
from local.documents import emulator_client
from local.mailbox import list_messages, load_message
from local.state import StackState, read_state
from local.template_seed import TEMPLATES_DIR

from .dom import parse_dom
from .test_demo import REPO_ROOT, refuses_connections

START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30


@dataclass
class ServedStack:
    process: subprocess.Popen[bytes]
    state_dir: Path
    output: Path
    state: StackState

    def send(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()
        code = send.main(["--state-dir", str(self.state_dir), *args], out=out)
        return code, out.getvalue()


def serve(tmp_path: Path, *demo_args: str) -> ServedStack:
    """`python -m local.demo --serve` (plus `demo_args`) on a copy of templates/, once it has written its
    state file."""
    state_dir, output, templates = tmp_path / "demo", tmp_path / "serve.out", tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "local.demo", "--serve", "--no-samples", "--state-dir", str(state_dir),
             "--templates-dir", str(templates), *demo_args],
            cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not (state_dir / "state.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"make demo --serve did not start: {output.read_text()[-1500:]}", pytrace=False)
        time.sleep(0.1)
    return ServedStack(process, state_dir, output, read_state(state_dir))


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedStack]:
    stack = serve(tmp_path_factory.mktemp("served"))
    try:
        yield stack
    finally:
        stop(stack.process)


def test_send_from_flags_prints_success_and_where_to_look(served: ServedStack) -> None:
    code, output = served.send("--to", "ada@example.com", "--to", "grace@example.com", "--subject", "Flags <ok>",
                               "--text", "Hello from flags", "--html", "<p>Hello <em>from</em> flags</p>")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].startswith(f"{served.state.mail_collection}/") and lines[0].endswith(": SUCCESS")
    assert "  accepted  ada@example.com, grace@example.com" in lines
    [link] = [line.split()[-1] for line in lines if line.startswith("  inbox")]
    page = parse_dom(urllib.request.urlopen(link, timeout=10).read().decode())
    assert page.one("h1", id="subject").text == "Flags <ok>"
    assert page.one("section", id="text").one("pre").text.strip() == "Hello from flags"


def test_send_from_a_json_file(served: ServedStack, tmp_path: Path) -> None:
    document = {"to": "ada@example.com", "cc": ["grace@example.com"], "replyTo": "help@example.com",
                "message": {"subject": "From JSON", "text": "A whole document."}}
    path = tmp_path / "mail.json"
    path.write_text(json.dumps(document))
    code, output = served.send("--json", str(path), "--id", "from-json")
    assert code == 0, output
    assert output.splitlines()[0] == f"{served.state.mail_collection}/from-json: SUCCESS"
    [stored] = [m for m in list_messages(Path(served.state.inbox_dir)) if m.subject == "From JSON"]
    headers = dict(load_message(Path(served.state.inbox_dir), stored.id).headers)
    assert (headers["Cc"], headers["Reply-To"]) == ("grace@example.com", "help@example.com")


def test_a_document_with_dsn_is_sent_with_its_dsn_parameters(served: ServedStack, tmp_path: Path) -> None:
    # The local inbox offers DSN (README "Delivery status notifications"), so make send can try it.
    document = {"to": "ada@example.com", "message": {"subject": "With DSN", "text": "Report on delivery."},
                "dsn": {"id": "Order 123+x", "return": "headers", "notify": ["success", "failure"],
                        "recipient": "ada@example.com"}}
    path = tmp_path / "dsn.json"
    path.write_text(json.dumps(document))
    code, output = served.send("--json", str(path), "--id", "with-dsn")
    assert code == 0, output
    [stored] = [m for m in list_messages(Path(served.state.inbox_dir)) if m.subject == "With DSN"]
    data = (Path(served.state.inbox_dir) / f"{stored.id}.eml").read_bytes()
    assert b"X-Inbox-DSN: MAIL RET=HDRS ENVID=Order+20123+2Bx\r\n" in data
    assert b"X-Inbox-DSN: RCPT <ada@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ada@example.com\r\n" in data
    # The message view shows them with the envelope.
    headers = dict(load_message(Path(served.state.inbox_dir), stored.id).headers)
    assert headers["X-Inbox-DSN"] == ("MAIL RET=HDRS ENVID=Order+20123+2Bx, "
                                      "RCPT <ada@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ada@example.com")


def test_send_reports_a_refused_document_and_exits_1(served: ServedStack) -> None:
    code, output = served.send("--to", "ada@example.com", "--text", "no subject")
    assert code == 1
    lines = output.splitlines()
    assert lines[0].endswith(": ERROR")
    assert lines[1].startswith("  error     message.subject:")


def test_send_refuses_an_existing_id(served: ServedStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert served.send("--to", "ada@example.com", "--subject", "x", "--text", "y", "--id", "taken")[0] == 0
    assert served.send("--to", "ada@example.com", "--subject", "x", "--text", "y", "--id", "taken")[0] == 2
    assert capsys.readouterr().err.strip() == f"make send: --id: {served.state.mail_collection}/taken already exists; pick another id"


def test_send_waits_through_a_retry_and_says_why_it_took_two_attempts(served: ServedStack) -> None:
    # The inbox refuses the first copy for a +tempfail recipient; with the sweep running RETRY is not the
    # outcome, so make send waits for the sweep's second attempt.
    code, output = served.send("--to", "ada+tempfail@example.com", "--subject", "Twice", "--text", "t")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].endswith(": SUCCESS")
    assert "  attempts  2 (attempt 1: SMTP 451 4.3.0 Temporary local failure (demo: fails once))" in lines
    assert received_subject(served, output) == "Twice"


def test_send_at_holds_the_email_until_then(served: ServedStack) -> None:
    started = datetime.now(timezone.utc)
    code, output = served.send("--to", "ada@example.com", "--subject", "Later", "--text", "t", "--send-at", "+3",
                               "--id", "send-at")
    assert code == 0, output
    client = emulator_client(served.state.emulator_host, served.state.project, served.state.database)
    try:
        send_at = client.collection(served.state.mail_collection).document("send-at").get().get("sendAt")
    finally:
        client.close()
    assert timedelta(seconds=2.9) < send_at - started < timedelta(seconds=4)
    [link] = [line.split()[-1] for line in output.splitlines() if line.startswith("  inbox")]
    [message] = [m for m in list_messages(Path(served.state.inbox_dir)) if link.endswith("/" + m.id)]
    assert message.stored_at >= send_at
    assert "  attempts" not in output  # one attempt, made by the sweep


def test_send_at_takes_a_time_with_an_offset() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert send.parse_send_at("+90", now) == now + timedelta(seconds=90)
    assert send.parse_send_at("2030-01-01T09:00:00+01:00", now) == datetime(2030, 1, 1, 8, 0, tzinfo=timezone.utc)
    assert send.parse_send_at("2030-01-01T08:00:00Z", now) == datetime(2030, 1, 1, 8, 0, tzinfo=timezone.utc)


def received_subject(served: ServedStack, output: str) -> str:
    [link] = [line.split()[-1] for line in output.splitlines() if line.startswith("  inbox")]
    message_id = link.rsplit("/", 1)[-1]
    return load_message(Path(served.state.inbox_dir), message_id).summary.subject


def test_an_edited_template_shows_in_the_next_email(served: ServedStack) -> None:
    template_file = Path(served.state.templates_dir) / "Generic.yaml"
    original = template_file.read_text()
    code, output = served.send("--to", "ada@example.com", "--template", "Generic", "--data", '{"code": "111111"}')
    assert code == 0, output
    assert received_subject(served, output) == "Your verification code: 111111"
    try:
        template_file.write_text(original.replace("Your verification code: {{code}}", "Edited: {{code}}"))
        code, output = served.send("--to", "ada@example.com", "--template", "Generic", "--data", '{"code": "222222"}')
        assert code == 0, output
        assert received_subject(served, output) == "Edited: 222222"
    finally:
        template_file.write_text(original)


def test_a_broken_template_file_stops_send_naming_the_file(served: ServedStack, capsys: pytest.CaptureFixture[str]) -> None:
    broken = Path(served.state.templates_dir) / "Broken.yaml"
    broken.write_text("subject: Hi\nbody: not a template key\n")
    try:
        code, _ = served.send("--to", "ada@example.com", "--template", "Broken")
    finally:
        broken.unlink()
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"make send: {broken}: body:") and "\n" not in error


@pytest.mark.parametrize(
    ("args", "content", "expected"),
    [
        (["--to", "ada@example.com"], '{"to": "x@example.com"}', "--json: give either --json or flags such as --to"),
        ([], '{"to": ', "is not JSON (line 1, column 8"),
        ([], '["to"]', "must hold one JSON object (a mail document), not list"),
        (["--subject", "no recipient"], None, "--to: at least one recipient is required"),
        (["--to", "ada@example.com", "--data", "{}"], None, "--data: only goes with --template NAME"),
        (["--to", "ada@example.com", "--template", "Generic", "--data", "[1]"], None, "--data: must be a JSON object, not list"),
        (["--to", "ada@example.com", "--send-at", "+soon"], None, "--send-at: '+soon' is not +SECONDS"),
        (["--to", "ada@example.com", "--send-at", "tomorrow"], None, "--send-at: 'tomorrow' is neither +SECONDS nor"),
        (["--to", "ada@example.com", "--send-at", "2030-01-01T09:00:00"], None, "has no offset; add Z"),
    ],
)
def test_arguments_that_make_no_document_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], content: str | None, expected: str
) -> None:
    if content is not None:
        (tmp_path / "mail.json").write_text(content)
        args = [*args, "--json", str(tmp_path / "mail.json")]
    assert send.main(["--state-dir", str(tmp_path), *args], out=io.StringIO()) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("make send: ") and expected in error and "\n" not in error


def test_send_without_a_running_stack_says_how_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert send.main(["--state-dir", str(tmp_path), "--to", "ada@example.com", "--subject", "s", "--text", "t"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"make send: no local stack is running ({tmp_path / 'state.json'} does not exist); "
        "start one with `make demo ARGS=--serve`"
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_stops_everything_and_forgets_its_state(tmp_path: Path, sig: int) -> None:
    stack = serve(tmp_path)
    try:
        output = stack.output.read_text()
        assert stack.state.inbox_url in output and stack.state.function_url in output
        [sweep_line] = [line for line in output.splitlines() if line.startswith("  sweep ")]
        assert stack.state.sweep_url in sweep_line and "every 2 s" in sweep_line and "sweep.log" in sweep_line
        assert stack.state.sweep_seconds == 2
        assert f"FIRESTORE_EMULATOR_HOST={stack.state.emulator_host}" in output
        listening = {
            "emulator": stack.state.emulator_host,
            "emulator admin": urlsplit(stack.state.emulator_admin_url).netloc,
            "function": urlsplit(stack.state.function_url).netloc,
            "sweep": urlsplit(stack.state.sweep_url).netloc,
            "smtp": stack.state.smtp_address,
            "inbox page": urlsplit(stack.state.inbox_url).netloc,
        }
        assert not any(refuses_connections(address) for address in listening.values())
    finally:
        code = stop(stack.process, sig)
    assert code == 0
    assert stack.output.read_text().rstrip().endswith("Stopped.")
    assert not (stack.state_dir / "state.json").exists()
    assert {name: refuses_connections(address) for name, address in listening.items()} == dict.fromkeys(listening, True)
