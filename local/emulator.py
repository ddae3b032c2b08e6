"""The Firestore emulator (emulator/start.mjs) as a child process on free loopback ports."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.errors import StartError
from local.processes import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
EMULATOR_DIR = REPO_ROOT / "emulator"
READY_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class EmulatorAddress:
    host: str  # FIRESTORE_EMULATOR_HOST, 127.0.0.1:<grpc port>
    admin_url: str  # http://127.0.0.1:<admin port> (/changes, /stats, /queries, /faults)

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"content-type": "application/json"}
        request = urllib.request.Request(f"{self.admin_url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            # The emulator explains a refused admin call in {"error": ...}; say it, not just the status.
            message = f"emulator admin {method} {path}: HTTP {error.code}: {error.read().decode(errors='replace')[:500]}"
            raise (ValueError if error.code == 400 else RuntimeError)(message) from None

    def stats(self) -> dict[str, Any]:
        """Billed operations since the last reset, as Firestore bills them: commits, writes, reads and
        per-document counts (emulator/README.md)."""
        return self._admin("GET", "/stats")

    def reset_stats(self) -> None:
        """Zero the stats and empty the query log (POST /reset)."""
        self._admin("POST", "/reset")

    def queries(self) -> list[dict[str, Any]]:
        """Every RunQuery since start or the last reset, in arrival order, each as
        {collection, parent, filters: [{field, op}], orderBy: [{field, direction}], limit}
        (emulator/README.md)."""
        return self._admin("GET", "/queries")

    def reset_queries(self) -> None:
        """Empty the query log only (stats keep counting)."""
        self._admin("DELETE", "/queries")

    def inject_fault(self, method: str, code: str | int = "UNAVAILABLE", count: int = 1) -> None:
        """Make the next `count` calls of gRPC method `method` ("Commit", "RunQuery", ...) fail with
        status `code` (a name such as "UNAVAILABLE", or its number) and message "injected fault".
        Faults add up in arming order; clear_faults() disarms them all."""
        self._admin("POST", "/faults", {"method": method, "code": code, "count": count})

    def faults(self) -> list[dict[str, Any]]:
        """Faults still armed: [{method, code, remaining}] (a fault is gone once it fired `count` times)."""
        return self._admin("GET", "/faults")

    def clear_faults(self) -> None:
        self._admin("DELETE", "/faults")


def _ready_line(log_path: Path) -> str | None:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((line for line in lines if line.startswith("READY ")), None)


def parse_ready_line(line: str) -> EmulatorAddress:
    """`READY 127.0.0.1:<grpc port> admin=127.0.0.1:<admin port>` -> the two addresses."""
    words = line.split()
    if len(words) != 3 or not words[2].startswith("admin="):
        raise StartError(f"Firestore emulator printed an unexpected READY line: {line.strip()[:200]!r}")
    return EmulatorAddress(host=words[1], admin_url=f"http://{words[2].removeprefix('admin=')}")


def start_emulator(log_path: Path, port: int = 0, admin_port: int = 0) -> tuple[ManagedProcess, EmulatorAddress]:
    node = shutil.which("node")
    if node is None:
        raise StartError("Firestore emulator: node is not on PATH; install Node.js 20 or newer")
    if not (EMULATOR_DIR / "node_modules" / "@firestore-emulator" / "server").is_dir():
        raise StartError("Firestore emulator: emulator/node_modules is missing; run `make install`")
    process = ManagedProcess(
        "Firestore emulator",
        [node, str(EMULATOR_DIR / "start.mjs"), "--port", str(port), "--admin-port", str(admin_port)],
        log_path,
        cwd=REPO_ROOT,
    )
    try:
        process.wait_until(lambda: _ready_line(log_path) is not None, READY_TIMEOUT_SECONDS, "printed READY")
        return process, parse_ready_line(_ready_line(log_path) or "")
    except BaseException:
        process.stop()
        raise
