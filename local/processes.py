"""Child processes of the local stack (the emulator, functions-framework): each in its own process group,
with its output in a log file, stopped as a group; and stopped by the kernel if this process dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from local.errors import StartError

STOP_GRACE_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the child when its parent dies (even by SIGKILL), so a
    crashed demo leaves no server behind. The function pointer is resolved before forking, so the
    child does nothing but one system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for servers that cannot report the port they bound)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """One child process group with stdout and stderr in `log_path`; stdin stays an open pipe (the
    emulator exits when it closes)."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(
                    command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_parent_death_signal(),
                )
            except OSError as error:
                raise StartError(f"{name}: cannot run {command[0]} ({error.strerror})") from None

    def log_tail(self, lines: int = 1) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def failed(self, reason: str) -> StartError:
        tail = self.log_tail()
        detail = f"; last log line: {tail[:300]}" if tail else ""
        return StartError(f"{self.name} {reason} (log: {self.log_path}){detail}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            code = self.process.poll()
            if code is not None:
                raise self.failed(f"exited with code {code} before {what}")
            if time.monotonic() > deadline:
                raise self.failed(f"did not {what} within {timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Close stdin, SIGTERM the whole group, SIGKILL it after a grace period; idempotent."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()
        # Workers of a server (gunicorn) may outlive their master for a moment.
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
