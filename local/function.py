"""The functions under the `functions-framework` command, as Cloud Run serves them (gunicorn, HTTP): one
process per entry point, as each is its own deployed function."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from infra.mailer import ENTRY_POINT
from infra.sweep import ENTRY_POINT as SWEEP_ENTRY_POINT  # the Pub/Sub-triggered sweep
from local.errors import StartError
from local.processes import ManagedProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTION_SOURCE = REPO_ROOT / "functions" / "main.py"
LISTEN_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0


def _listening(port: int) -> bool:
    try:
        socket.create_connection((LISTEN_HOST, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def launch_function(env: dict[str, str], log_path: Path, port: int = 0, *, target: str = ENTRY_POINT,
                    source: Path = FUNCTION_SOURCE) -> tuple[ManagedProcess, int]:
    """Start functions-framework serving the CloudEvent function `target` of `source` (functions/main.py)
    with `env` (the deployed function's variables), without waiting for it; returns it and its port.
    Call from a thread that outlives the process: Linux sends the parent-death signal when the thread
    that started a child ends, not only the process."""
    command = Path(sys.executable).parent / "functions-framework"
    if not command.exists():
        raise StartError(f"function: {command} is missing; run `make install`")
    port = port or free_port(LISTEN_HOST)
    process = ManagedProcess(
        f"function {target} (functions-framework)",
        [str(command), "--target", target, "--source", str(source), "--signature-type",
         "cloudevent", "--host", LISTEN_HOST, "--port", str(port)],
        log_path,
        env=env,
        cwd=REPO_ROOT,
    )
    return process, port


def wait_until_serving(process: ManagedProcess, port: int) -> str:
    """Wait until a launched function listens; returns its URL. Stops it and raises StartError if it
    exits or does not listen in time."""
    try:
        process.wait_until(lambda: _listening(port), START_TIMEOUT_SECONDS, f"listened on port {port}")
    except BaseException:
        process.stop()
        raise
    return f"http://{LISTEN_HOST}:{port}/"


def start_function(env: dict[str, str], log_path: Path, port: int = 0, *, target: str = ENTRY_POINT,
                   source: Path = FUNCTION_SOURCE) -> tuple[ManagedProcess, str]:
    """launch_function, then wait_until_serving: the running function and its URL."""
    process, port = launch_function(env, log_path, port, target=target, source=source)
    return process, wait_until_serving(process, port)
