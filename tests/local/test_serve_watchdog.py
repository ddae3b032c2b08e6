"""`make demo ARGS=--serve` end to end: the shipped example document is sent, an inbox fault is switched
on and off at run time with `make send ARGS="--inbox-fault SPEC"`, and a killed function stops the stack
with one line naming it (never a stack that keeps running mute)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from local import send
from local.function import REPO_ROOT
from local.mailbox import list_messages, load_message

from .test_send import serve, stop

EXAMPLE = REPO_ROOT / "local" / "examples" / "mail.json"


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def function_pid(demo_pid: int, target: str) -> int:
    for child in children(demo_pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--target" in command and command[command.index(b"--target") + 1] == target.encode():
            return child
    raise AssertionError(f"no {target} process under {demo_pid}")


def test_example_document_runtime_faults_and_a_killed_function(tmp_path: Path) -> None:
    stack = serve(tmp_path, "--inbox-fault", "data:554")
    process, state_dir, output, state, run = stack.process, stack.state_dir, stack.output, stack.state, stack.send
    try:
        assert "faults    make send ARGS=\"--inbox-fault data:451" in output.read_text()
        assert "(now: data:554;" in output.read_text()

        # The fault given at start: a permanent refusal after DATA, so the document ends in ERROR, exit 1.
        code, text = run("--json", str(EXAMPLE), "--id", "refused")
        assert code == 1, text
        assert text.splitlines()[0].endswith("/refused: ERROR") and "554" in text

        # Cleared at run time, the shipped example goes through with its to, cc, subject, text and html.
        assert run("--inbox-fault", "none") == (0, "inbox faults: none\n")
        code, text = run("--json", str(EXAMPLE), "--id", "example")
        assert code == 0, text
        [stored] = list_messages(Path(state.inbox_dir))
        view = load_message(Path(state.inbox_dir), stored.id)
        assert view.summary.subject == "Your order #1042 has shipped"
        assert dict(view.headers)["Cc"] == "team@example.com"
        assert view.text and "order #1042" in view.text and view.html and "<strong>order #1042</strong>" in view.html

        # A fault set together with a document: set first, then the document meets it.
        code, text = run("--inbox-fault", "rcpt:550", "--to", "ada@example.com", "--subject", "s", "--text", "t")
        assert code == 1 and text.startswith("inbox faults: rcpt:550\n") and ": ERROR" in text, text
        run("--inbox-fault", "none")

        # The function dies: the watchdog stops everything and names it.
        os.kill(function_pid(process.pid, "process_mail"), signal.SIGKILL)
        assert process.wait(timeout=30) == 1
    finally:
        if process.poll() is None:
            stop(process)
    lines = output.read_text().splitlines()
    assert "make demo: function process_mail exited with code -9; stopping (log: " in "\n".join(lines)
    [line] = [line for line in lines if line.startswith("make demo: function process_mail")]
    assert line.endswith("function.log)")
    assert lines[-1].startswith("Done in") and lines[-1].endswith("everything is stopped.")
    assert not (state_dir / "state.json").exists()


def test_send_inbox_fault_needs_a_running_stack_and_a_valid_spec(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert send.main(["--state-dir", str(tmp_path), "--inbox-fault", "rcpt:451"]) == 2
    assert "no local stack is running" in capsys.readouterr().err
    assert send.main(["--state-dir", str(tmp_path), "--inbox-fault", "rcpt:200"]) == 2
    assert capsys.readouterr().err.strip() == "make send: --inbox-fault: 'rcpt:200': the code must be 400 to 599"
