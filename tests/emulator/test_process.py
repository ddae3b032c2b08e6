"""The emulator process: loopback only, clean exits on SIGTERM and on its parent going away."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.support.firestore import EMULATOR_DIR, launched_emulator

EXIT_TIMEOUT_S = 10
LISTEN = "0A"  # TCP state code in /proc/net/tcp


def listening_addresses(port: int) -> list[str]:
    """Local addresses of every listening TCP socket on `port`, read from /proc/net/tcp{,6}."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == LISTEN and int(port_hex, 16) == port:
                addresses.append(decode_proc_address(address))
    return addresses


def decode_proc_address(hex_address: str) -> str:
    # /proc stores each 32-bit word of the address in host (little-endian) byte order.
    words = [bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8)]
    raw = b"".join(words)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in raw[12:])
    return ":".join(raw[i:i + 2].hex() for i in range(0, 16, 2))


def test_grpc_and_admin_listen_on_loopback_only(firestore_emulator):
    grpc_port = int(firestore_emulator.host.rsplit(":", 1)[1])
    admin_port = int(firestore_emulator.admin_url.rsplit(":", 1)[1])

    assert listening_addresses(grpc_port) == ["127.0.0.1"]
    assert listening_addresses(admin_port) == ["127.0.0.1"]


def test_sigterm_stops_it_cleanly():
    with launched_emulator() as (process, _):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=EXIT_TIMEOUT_S) == 0


def test_it_exits_when_its_parent_closes_stdin():
    with launched_emulator() as (process, _):
        process.stdin.close()
        assert process.wait(timeout=EXIT_TIMEOUT_S) == 0


def test_a_bad_port_is_refused_with_a_one_line_error():
    result = subprocess.run(
        ["node", str(EMULATOR_DIR / "start.mjs"), "--port", "http", "--admin-port", "0"],
        capture_output=True, text=True, timeout=EXIT_TIMEOUT_S, stdin=subprocess.DEVNULL,
    )

    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--port" in result.stderr
