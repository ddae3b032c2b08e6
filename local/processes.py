"""Child processes of the local stack (the emulator, functions-framework): each in its own process group,
with its output in a log file, stopped as a group; and stopped by the kernel if this process dies.
"""

from __future__ import annotations

import os
import shutil
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


# Asks Linux to SIGTERM the program when its parent dies (even by SIGKILL), so a crashed demo leaves no
# server behind, then becomes the program. This runs after exec, in a small launcher, rather than as a
# preexec_fn: a preexec_fn forces a plain fork(), which runs gRPC's fork handlers in the child; they
# restart a poller whose epoll descriptor close_fds then closes, and the child aborts before exec.
# Without preexec_fn, subprocess spawns with vfork and no fork handlers run.
_PARENT_DEATH_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "parent = int(sys.argv[1])\n"
    f"ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM)\n"
    "if os.getppid() != parent: sys.exit(1)  # the parent died before the request took hold\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _with_parent_death_signal(command: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-c", _PARENT_DEATH_LAUNCHER, str(os.getpid()), *command]


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
        if shutil.which(command[0]) is None:
            raise StartError(f"{name}: cannot run {command[0]} (not found)")
        with open(log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(
                    _with_parent_death_signal(command), cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
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
