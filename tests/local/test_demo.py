"""`make demo` end to end: the emulator, the trigger bridge, the function under functions-framework and the
inbox, started from stacks/Pulumi.local.yaml; each sample document ends as the product promises."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from local import demo
from local.mailbox import list_messages, load_message
from local.samples import HTML, INVALID, PLAIN, demo_samples
from local.stack import LocalStack
from local.stackfile import LOCAL_STACK_FILE
from local.state import FolderLock

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_SECONDS = 120
# Writes each document sees: the app's create, then the function's claim and outcome (one write for a
# document refused before it is claimed).
WRITES_PER_SENT_DOCUMENT, WRITES_PER_REFUSED_DOCUMENT = 3, 2


def refuses_connections(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def addresses(stack: LocalStack) -> dict[str, str]:
    return {
        "emulator": stack.emulator.host,
        "emulator admin": urlsplit(stack.emulator.admin_url).netloc,
        "function": urlsplit(stack.function_url).netloc,
        "smtp": f"{stack.inbox.host}:{stack.inbox.port}",
        "inbox page": urlsplit(stack.web.url).netloc,
    }


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path / "demo")
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def wait_until_seen(stack: LocalStack, path: str, changes: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while stack.bridge.seen[path] < changes:
        assert time.monotonic() < deadline, f"the bridge saw {stack.bridge.seen[path]} changes of {path}, expected {changes}"
        time.sleep(0.02)


def test_every_sample_ends_as_promised_with_one_invocation_each(local_stack: LocalStack) -> None:
    samples = demo_samples(local_stack.templates)
    results = demo.run_samples(local_stack, samples)
    by_id = {result.sample.doc_id: result for result in results}
    assert all(result.as_expected for result in results), demo.format_table(results)

    plain, html, invalid = by_id[PLAIN.doc_id], by_id[HTML.doc_id], by_id[INVALID.doc_id]
    assert (plain.state, plain.received.subject) == ("SUCCESS", "Hello from the mailer demo")
    assert invalid.state == "ERROR" and invalid.error.startswith("message.attachments[0].path:")
    assert invalid.received is None

    view = load_message(local_stack.inbox_dir, html.received.id)
    assert "Hello Grace" in view.text
    assert sorted(a.filename for a in view.attachments) == ["logo.svg", "report.csv"]
    assert "cid:logo" not in view.html and "data:image/svg+xml;base64," in view.html
    headers = dict(view.headers)
    assert headers["Cc"] == "Charles Babbage <charles@example.com>"
    assert headers["From"] == yaml.safe_load(LOCAL_STACK_FILE.read_text())["config"]["mailer:defaultFrom"]
    assert headers["Delivered-To"] == "grace@example.com, charles@example.com"

    sent = [result for result in results if result.state == "SUCCESS"]
    assert sorted(m.id for m in list_messages(local_stack.inbox_dir)) == sorted(r.received.id for r in sent)

    # The deployed trigger is `created`: the bridge reads the function's own status writes and
    # delivers none of them, so every document costs exactly one invocation.
    for result in results:
        path = f"{local_stack.settings.mail_collection}/{result.sample.doc_id}"
        writes = WRITES_PER_SENT_DOCUMENT if result.state == "SUCCESS" else WRITES_PER_REFUSED_DOCUMENT
        wait_until_seen(local_stack, path, writes)
        assert local_stack.bridge.invocations[path] == 1, path
    assert local_stack.bridge.failures == []

    # The generated SMTP password reached the function (it logged in) and nothing else.
    password = local_stack._smtp_password.encode()
    written = [path for path in local_stack.state_dir.rglob("*") if path.is_file()]
    assert local_stack.function_log in written
    assert [path for path in written if password in path.read_bytes()] == []


def test_the_template_sample_runs_once_templates_exist(local_stack: LocalStack) -> None:
    # templates/Generic.yaml and infra.templates are in this checkout, so the demo must exercise them.
    assert "Generic" in local_stack.templates
    [result] = [r for r in demo.run_samples(local_stack, demo_samples(local_stack.templates)) if r.sample.doc_id == "demo-template"]
    assert result.state == "SUCCESS" and result.received.subject == "Your verification code: 424242"


def test_stopping_the_stack_closes_every_port(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "demo")
    stack.start()
    try:
        listening = addresses(stack)
        assert not any(refuses_connections(address) for address in listening.values())
    finally:
        stack.stop()
    assert {name: refuses_connections(address) for name, address in listening.items()} == dict.fromkeys(listening, True)


def run_demo(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.demo", "--state-dir", str(state_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=DEMO_TIMEOUT_SECONDS,
    )


def test_make_demo_prints_the_outcomes_and_runs_again_right_after(tmp_path: Path) -> None:
    for run in (1, 2):
        completed = run_demo(tmp_path / "demo")
        assert completed.returncode == 0, f"run {run}: {completed.stdout[-1500:]} {completed.stderr[-1500:]}"
        lines = completed.stdout.splitlines()
        for sample in (PLAIN, HTML, INVALID):
            [line] = [line for line in lines if line.startswith(sample.doc_id + " ")]
            assert sample.expected_state in line.split() and "(unexpected)" not in line
        assert any(line.startswith("Done in") for line in lines)
        assert completed.stderr.strip() == "", completed.stderr[-1500:]
        # Each run starts from an empty inbox and leaves no state file behind.
        expected_sent = [s for s in demo_samples(["Generic"]) if s.expected_state == "SUCCESS"]
        assert len(list_messages(tmp_path / "demo" / "inbox")) == len(expected_sent)
        assert not (tmp_path / "demo" / "state.json").exists()


def test_a_sample_that_ends_unexpectedly_fails_the_demo(tmp_path: Path) -> None:
    # A stack whose size limit the html sample exceeds: the setting must reach the function, and the
    # demo must say so and exit non-zero.
    config = yaml.safe_load(LOCAL_STACK_FILE.read_text())
    config["config"]["mailer:maxMessageBytes"] = 1024
    stack_file = tmp_path / "Pulumi.small.yaml"
    stack_file.write_text(yaml.safe_dump(config))
    out = io.StringIO()
    code = demo.main(["--state-dir", str(tmp_path / "demo"), "--stack-file", str(stack_file)], out=out)
    lines = out.getvalue().splitlines()
    assert code == 1, out.getvalue()
    [html_line] = [line for line in lines if line.startswith(HTML.doc_id + " ")]
    assert "ERROR (unexpected)" in html_line and "MAX_MESSAGE_BYTES" in html_line
    [plain_line] = [line for line in lines if line.startswith(PLAIN.doc_id + " ")]
    assert "SUCCESS" in plain_line.split() and "(unexpected)" not in plain_line


def test_a_second_stack_on_the_same_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = FolderLock(tmp_path / "demo")
    lock.acquire()  # as a running stack holds it
    try:
        assert demo.main(["--state-dir", str(tmp_path / "demo")], out=io.StringIO()) == 2
    finally:
        lock.release()
    error = capsys.readouterr().err.strip()
    assert error.startswith("make demo: another local stack") and "--state-dir" in error
    assert "\n" not in error


def test_a_missing_stack_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "Pulumi.nothing.yaml"
    assert demo.main(["--state-dir", str(tmp_path / "demo"), "--stack-file", str(missing)], out=io.StringIO()) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"make demo: {missing}: cannot be read (FileNotFoundError)"


@pytest.mark.parametrize(("flag", "part"), [("--smtp-port", "SMTP inbox"), ("--inbox-web-port", "inbox page")])
def test_a_port_in_use_is_one_line_naming_the_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, part: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = demo.main(["--state-dir", str(tmp_path / "demo"), flag, str(port)], out=io.StringIO())
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"make demo: {part}: cannot listen on 127.0.0.1:{port} (Address already in use)"
