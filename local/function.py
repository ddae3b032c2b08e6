"""The functions under the `functions-framework` command, as Cloud Run serves them (gunicorn, HTTP): one
process per entry point, as each is its own deployed function."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from infra.mailer import ENTRY_POINT
from local.errors import StartError
from local.processes import ManagedProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTION_SOURCE = REPO_ROOT / "functions" / "main.py"
LISTEN_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
SWEEP_ENTRY_POINT = "sweep_mail"  # the Pub/Sub-triggered sweep (Cloud Scheduler -> topic -> Eventarc)


def _listening(port: int) -> bool:
    try:
        socket.create_connection((LISTEN_HOST, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def start_function(env: dict[str, str], log_path: Path, port: int = 0, *, target: str = ENTRY_POINT,
                   source: Path = FUNCTION_SOURCE) -> tuple[ManagedProcess, str]:
    """Start functions-framework serving the CloudEvent function `target` of `source` (functions/main.py)
    with `env` (the deployed function's variables); returns it and its URL."""
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
    try:
        process.wait_until(lambda: _listening(port), START_TIMEOUT_SECONDS, f"listened on port {port}")
    except BaseException:
        process.stop()
        raise
    return process, f"http://{LISTEN_HOST}:{port}/"
