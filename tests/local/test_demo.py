"""`make demo` end to end: the emulator, the trigger bridge, both functions under functions-framework (the
sweep called by the local scheduler) and the inbox, started from stacks/Pulumi.local.yaml; each sample
document ends as the product promises, the retried and the scheduled ones included."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from local import demo
from local.inbox import TEMPFAIL_REPLY
from local.mailbox import StoredMessage, list_messages, load_message
from local.samples import HTML, INVALID, PLAIN, RETRIED, SCHEDULED, demo_samples
from local.stack import LocalStack
from local.stackfile import LOCAL_STACK_FILE
from local.state import FolderLock

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_SECONDS = 120
# Writes each document sees: the app's create, then the function's claim and outcome (one write for a
# document refused before it is claimed).
WRITES_PER_SENT_DOCUMENT, WRITES_PER_REFUSED_DOCUMENT = 3, 2
# The retried sample: create, claim, RETRY, the sweep's claim, SUCCESS. The scheduled one: create, the
# created event's PENDING-until-sendAt, the sweep's claim, SUCCESS.
WRITES = {RETRIED.doc_id: 5, SCHEDULED.doc_id: 4}


def cells(line: str) -> list[str]:
    """A row of the demo's table, cut into its columns (cells hold single spaces only; error is last)."""
    return re.split(r"\s{2,}", line.strip(), maxsplit=6)


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
        "sweep": urlsplit(stack.sweep_url).netloc,
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
    # delivers none of them, so every document costs exactly one invocation of process_mail; the
    # retry and the scheduled send were the sweep's, called by the scheduler without a failure.
    for result in results:
        path = f"{local_stack.settings.mail_collection}/{result.sample.doc_id}"
        writes = WRITES_PER_SENT_DOCUMENT if result.state == "SUCCESS" else WRITES_PER_REFUSED_DOCUMENT
        wait_until_seen(local_stack, path, WRITES.get(result.sample.doc_id, writes))
        assert local_stack.bridge.invocations[path] == 1, path
    assert local_stack.bridge.failures == []
    assert local_stack.scheduler.sweeps >= 2 and local_stack.scheduler.failed == 0

    # The generated SMTP password reached the function (it logged in) and nothing else.
    password = local_stack._smtp_password.encode()
    written = [path for path in local_stack.state_dir.rglob("*") if path.is_file()]
    assert local_stack.function_log in written
    assert [path for path in written if password in path.read_bytes()] == []


def test_a_transient_failure_is_retried_by_the_sweep_and_sendat_is_kept(local_stack: LocalStack) -> None:
    results = {r.sample.doc_id: r for r in demo.run_samples(local_stack, [RETRIED, SCHEDULED])}
    retried, scheduled = results[RETRIED.doc_id], results[SCHEDULED.doc_id]
    assert all(r.as_expected for r in results.values()), demo.format_table(list(results.values()))

    # The inbox refused the first attempt (451 after DATA) and stored the second: one copy, with the
    # Message-ID the first attempt had, so a receiver that saw both would know them for one message.
    assert (retried.state, retried.attempts) == ("SUCCESS", 2)
    assert retried.first_failure.startswith("attempt 1: ") and TEMPFAIL_REPLY[4:] in retried.first_failure
    assert local_stack.inbox.tempfailed == {retried.received.message_id}
    copies = [m for m in list_messages(local_stack.inbox_dir) if m.subject == RETRIED.expected_subject]
    assert len(copies) == 1
    # ... and not before the backoff: the second attempt came from a sweep after retryBackoffSeconds at most.
    delivery = local_stack.mail(RETRIED.doc_id).get().to_dict()["delivery"]
    [failed] = delivery["attemptHistory"]
    assert retried.received_at > failed["time"]

    # Scheduled: one attempt, made no earlier than sendAt, and by the sweep within a period or two of it.
    assert (scheduled.state, scheduled.attempts) == ("SUCCESS", 1)
    assert scheduled.send_at == scheduled.written_at + timedelta(seconds=SCHEDULED.send_after_seconds)
    late = (scheduled.received_at - scheduled.send_at).total_seconds()
    assert 0 <= late < 2 * local_stack.sweep_seconds + 3, late


def test_without_the_sweep_a_retry_waits_and_a_scheduled_document_stays_pending(tmp_path: Path) -> None:
    # The control for the test above: with no scheduler nothing acts on RETRY or a future sendAt, so it
    # is the sweep that sent them there.
    with LocalStack(tmp_path / "demo", sweep_seconds=None) as stack:
        assert stack.scheduler is None and stack.sweep_url is None
        results = {r.sample.doc_id: r for r in demo.run_samples(stack, [RETRIED, SCHEDULED], timeout=10)}
        assert (results[RETRIED.doc_id].state, results[RETRIED.doc_id].attempts) == ("RETRY", 1)
        assert not results[RETRIED.doc_id].as_expected
        past_send_at = results[SCHEDULED.doc_id].send_at + timedelta(seconds=1) - datetime.now(timezone.utc)
        time.sleep(max(0.0, past_send_at.total_seconds()))
        delivery = stack.mail(SCHEDULED.doc_id).get().to_dict()["delivery"]
        assert delivery["state"] == "PENDING" and delivery["nextAttemptTime"] == results[SCHEDULED.doc_id].send_at
        assert list_messages(stack.inbox_dir) == []


def stored(at: datetime, subject: str = "s") -> StoredMessage:
    name = at.strftime("%Y%m%dT%H%M%S%fZ") + "-0001"
    return StoredMessage(name, Path(name + ".eml"), at, 1, "f", "t", subject, "<id@x>")


def test_the_expectations_catch_a_wrong_attempt_count_and_an_early_send() -> None:
    written = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    send_at = written + timedelta(seconds=5)

    def result(sample, received_after: float, attempts: int) -> demo.SampleResult:
        message = stored(written + timedelta(seconds=received_after), sample.expected_subject)
        return demo.SampleResult(sample, "SUCCESS", None, message, attempts=attempts, written_at=written,
                                 send_at=send_at if sample.send_after_seconds else None)

    assert result(SCHEDULED, 5.0, 1).as_expected and result(SCHEDULED, 6.5, 1).as_expected
    assert not result(SCHEDULED, 4.999, 1).as_expected  # sent before its sendAt
    assert not result(SCHEDULED, 6.5, 2).as_expected
    assert result(RETRIED, 2.5, 2).as_expected
    assert not result(RETRIED, 0.1, 1).as_expected  # the inbox's 451 did not happen or was not retried
    assert not result(RETRIED, 9.0, 3).as_expected
    table = demo.format_table([result(SCHEDULED, 4.0, 1), result(RETRIED, 2.5, 2)])
    [scheduled_line] = [line for line in table.splitlines() if line.startswith(SCHEDULED.doc_id)]
    assert "SUCCESS (unexpected)" in scheduled_line and "+4.0 s (sendAt +5.0 s)" in scheduled_line


def test_the_settle_timeout_allows_for_backoff_sendat_and_the_sweep_period() -> None:
    samples = demo_samples([])
    # Retried: backoff 2 s + a sweep period; scheduled: 5 s + a sweep period (the longer).
    assert demo.settle_timeout(samples, backoff_seconds=2, backoff_max_seconds=10, sweep_seconds=2) == 20 + 5 + 2
    assert demo.settle_timeout(samples, backoff_seconds=8, backoff_max_seconds=10, sweep_seconds=5) == 20 + 8 + 5
    three = [RETRIED.__class__(**{**RETRIED.__dict__, "expected_attempts": 3})]
    assert demo.settle_timeout(three, backoff_seconds=4, backoff_max_seconds=6, sweep_seconds=1) == 20 + (4 + 1) + (6 + 1)


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
        for sample in (PLAIN, HTML, RETRIED, SCHEDULED, INVALID):
            [line] = [line for line in lines if line.startswith(sample.doc_id + " ")]
            assert sample.expected_state in line.split() and "(unexpected)" not in line
        header = next(line for line in lines if line.startswith("document "))
        assert header.split()[:5] == ["document", "sample", "state", "attempts", "arrived"]
        [retry_line] = [cells(line) for line in lines if line.startswith(RETRIED.doc_id + " ")]
        assert retry_line[2:4] == ["SUCCESS", "2"]
        assert retry_line[6].startswith("(attempt 1: SMTP 451 4.3.0 Temporary local failure (demo: fails once)")
        [scheduled_line] = [cells(line) for line in lines if line.startswith(SCHEDULED.doc_id + " ")]
        assert scheduled_line[2:4] == ["SUCCESS", "1"] and scheduled_line[4].endswith(" s (sendAt +5.0 s)")
        [summary] = [line for line in lines if "documents ended as expected" in line]
        assert "process_mail invocations" in summary and "sweep_mail calls (every 2 s)" in summary
        assert "failed" not in summary
        assert any(line.startswith("Done in") for line in lines)
        assert completed.stderr.strip() == "", completed.stderr[-1500:]
        # Each run starts from an empty inbox and leaves no state file behind.
        expected_sent = [s for s in demo_samples(["Generic"]) if s.expected_state == "SUCCESS"]
        assert len(list_messages(tmp_path / "demo" / "inbox")) == len(expected_sent)
        assert not (tmp_path / "demo" / "state.json").exists()


def test_a_sample_that_ends_unexpectedly_fails_the_demo(tmp_path: Path) -> None:
    # A stack whose size limit the html sample exceeds and that never retries: the settings must reach
    # the functions, and the demo must say so and exit non-zero. Also runs --sweep-seconds.
    config = yaml.safe_load(LOCAL_STACK_FILE.read_text())
    config["config"]["mailer:maxMessageBytes"] = 1024
    config["config"]["mailer:maxAttempts"] = 1
    stack_file = tmp_path / "Pulumi.small.yaml"
    stack_file.write_text(yaml.safe_dump(config))
    out = io.StringIO()
    code = demo.main(["--state-dir", str(tmp_path / "demo"), "--stack-file", str(stack_file),
                      "--sweep-seconds", "0.5"], out=out)
    lines = out.getvalue().splitlines()
    assert code == 1, out.getvalue()
    [html_line] = [line for line in lines if line.startswith(HTML.doc_id + " ")]
    assert "ERROR (unexpected)" in html_line and "MAX_MESSAGE_BYTES" in html_line
    [retry_line] = [cells(line) for line in lines if line.startswith(RETRIED.doc_id + " ")]
    assert retry_line[2:4] == ["ERROR (unexpected)", "1"] and "451 4.3.0" in retry_line[6]
    for sample in (PLAIN, SCHEDULED):
        [line] = [line for line in lines if line.startswith(sample.doc_id + " ")]
        assert "SUCCESS" in line.split() and "(unexpected)" not in line
    assert "sweep_mail calls (every 0.5 s)" in out.getvalue()


@pytest.mark.parametrize("value", ["0", "-1", "0.01", "5000", "soon"])
def test_a_sweep_period_out_of_range_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        demo.parse_args(["--sweep-seconds", value])
    assert exited.value.code == 2
    assert "--sweep-seconds" in capsys.readouterr().err


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
