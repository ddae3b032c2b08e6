"""The benchmarks still run: bench.smtp and bench.coldstart at tiny sizes (they assert nothing themselves).

Figures are not checked beyond being there and plausible; the harness is: every client sends through
the latency proxy to each sink, the proxy counts round trips, the tables and ratios come out.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "bench" / "node" / "node_modules"
ROW = re.compile(r"^\s{4}(?P<label>\S.*?)\s+(?P<rate>\d+\.\d)\s+(?P<p50>\d+)\s+(?P<p99>\d+)\s+(?P<rt>\d+\.\d\d)"
                 r"\s+(?P<cpu>\d+\.\d\d)$")
# The label the bench gives nodemailer 10.x: its version as bench/node/package-lock.json pins it.
NODEMAILER10 = "nodemailer {} pool".format(
    json.loads((ROOT / "bench" / "node" / "package-lock.json").read_text())["packages"]["node_modules/nodemailer10"]["version"])
TINY = ["--messages", "5", "--repeat", "1", "--warmup", "5", "--senders", "5"]


def bench(*args: str, timeout: float = 90) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rows(output: str) -> dict[str, list[dict[str, float]]]:
    """Client label -> its table rows (one per table it appears in)."""
    found: dict[str, list[dict[str, float]]] = {}
    for line in output.splitlines():
        match = ROW.match(line)
        if match:
            values = {k: float(v) for k, v in match.groupdict().items() if k != "label"}
            found.setdefault(match["label"], []).append(values)
    return found


@pytest.fixture(scope="module")
def nodemailer() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    assert (NODE_MODULES / "nodemailer10").is_dir() and (NODE_MODULES / "nodemailer8").is_dir(), \
        "bench/node/node_modules is missing: run `make bench/node/node_modules/.installed`"


def test_every_client_sends_both_messages_to_the_aiosmtpd_sink(nodemailer: None) -> None:
    output = bench("bench.smtp", *TINY, "--rtt", "0", "--sinks", "aiosmtpd")
    found = rows(output)
    assert set(found) == {"mailer SmtpPool", NODEMAILER10, "nodemailer 8.0.5 pool"}, output
    for label, tables in found.items():
        assert len(tables) == 2, f"{label}: one row per message kind expected\n{output}"
        for row in tables:
            assert row["rate"] > 0 and row["rt"] > 0 and row["cpu"] > 0, f"{label}: {row}\n{output}"
    assert "not measured" not in output and "failed" not in output, output
    assert output.count(f"mailer vs {NODEMAILER10}:") == 2, output
    # The proxy counts turns: nodemailer 8 has no pipelining, so MAIL, RCPT, DATA and the data each wait
    # (a connection its pool opens only in the measured part adds its own turns: with 5 messages, up to 1 each).
    assert all(3.9 <= row["rt"] <= 6.5 for row in found["nodemailer 8.0.5 pool"]), output


def test_postfix_behind_the_latency_proxy(nodemailer: None) -> None:
    output = bench("bench.smtp", *TINY, "--rtt", "40", "--sinks", "postfix", "--kinds", "rich",
                   "--clients", "mailer,nodemailer10")
    assert "private Postfix" in output and "Postfix skipped" not in output, output
    found = rows(output)
    assert set(found) == {"mailer SmtpPool", NODEMAILER10}, output
    for label, (row,) in found.items():
        # Every message waits at least one emulated round trip for its final reply.
        assert row["p50"] >= 40 and row["rt"] >= 0.9, f"{label}: {row}\n{output}"
    assert "goal check" not in output  # only printed for a 50 ms RTT


def test_cold_start_prints_the_ratio_and_contributors() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    assert (ROOT / "bench" / "extension" / "node_modules" / "firebase-admin").is_dir(), \
        "bench/extension/node_modules is missing: run `make bench/extension/node_modules/.installed`"
    output = bench("bench.coldstart", "--runs", "1", "--top", "3")
    assert re.search(r"ready after \d+ ms", output), output
    # the anchor, timed in the same runs: the extension's load, and with the gRPC client its first event loads
    assert re.search(r"the extension, timed in the same runs .*: \d+ ms -> ratio \d+\.\d\dx", output), output
    assert re.search(r"like for like, the extension with the Firestore gRPC client .*: \d+ ms -> ratio \d+\.\d\dx",
                     output), output
    # the floor (functions-framework alone, then with the Firestore client) is timed in the same runs
    assert re.search(r"functions-framework alone \d+ ms; with google.cloud.firestore imported \d+ ms", output), output
    assert re.search(r"this function adds [+-]\d+ ms to that floor", output), output
    assert re.search(r"interpreter: .*Python 3\.\d+", output), output
    assert "mailer.handler" in output or "functions_framework" in output, output


def test_help_describes_each_benchmark() -> None:
    assert "goal at 50 ms RTT" in bench("bench.smtp", "--help")
    assert "430-450 ms" in bench("bench.coldstart", "--help")
