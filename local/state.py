"""Where a running local stack can be found: .demo/state.json, written by `make demo ARGS=--serve`, read by
`make send`. A lock file keeps two stacks from sharing one state folder (and one inbox)."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = REPO_ROOT / ".demo"
STATE_FILE = "state.json"
LOCK_FILE = "lock"


class StateError(RuntimeError):
    """No usable running stack, or the folder is taken. str(e) is one line saying what to do."""


@dataclass(frozen=True)
class StackState:
    pid: int
    emulator_host: str
    emulator_admin_url: str
    function_url: str
    inbox_url: str
    inbox_dir: str
    smtp_address: str
    project: str
    database: str
    mail_collection: str
    templates_collection: str | None
    templates_dir: str  # where `make send` re-reads templates from
    # The sweep (retries, sendAt): when it runs, RETRY is not an outcome yet and `make send` waits on.
    sweep_url: str | None = None
    sweep_seconds: float | None = None


def write_state(folder: Path, state: StackState) -> Path:
    path = folder / STATE_FILE
    partial = folder / f".{STATE_FILE}.part"
    partial.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(partial, path)
    return path


def remove_state(folder: Path) -> None:
    try:
        (folder / STATE_FILE).unlink()
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(folder: Path) -> StackState:
    """The running stack's state; StateError when there is none (or it has died)."""
    path = folder / STATE_FILE
    hint = "start one with `make demo ARGS=--serve`"
    try:
        raw = json.loads(path.read_text())
        state = StackState(**raw)
    except FileNotFoundError:
        raise StateError(f"no local stack is running ({path} does not exist); {hint}") from None
    except (OSError, ValueError, TypeError) as error:
        raise StateError(f"{path} is unreadable ({type(error).__name__}); {hint}") from None
    if not _alive(state.pid):
        raise StateError(f"the local stack recorded in {path} (pid {state.pid}) is not running; {hint}")
    return state


class FolderLock:
    """An exclusive lock on the state folder, held while a stack runs; the kernel drops it if we die."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise StateError(
                f"another local stack (pid {holder}) is using {self.path.parent}; stop it with Ctrl-C "
                f"or pass --state-dir DIR"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None
