"""Benchmark: the project's SMTP transport against nodemailer's pool, in one run, against the same sinks.

    .venv/bin/python -m bench.smtp [--messages 200] [--repeat 3] [--rtt 0,50] [--senders 16]

Clients, each in a process of its own so its CPU is its own: this project's SmtpPool (bench/smtp_client.py:
document -> compose -> SmtpPool.send from --senders threads), nodemailer 10.x and nodemailer 8.0.5 (the
version firestore-send-email locks) with pool: true (bench/node/run.js, installed by `make bench-smtp`
into bench/node/node_modules). Every client gets maxConnections=5 (--connections), keeps --senders
messages outstanding, and warms its pool up (connections, STARTTLS, AUTH) before the measured part.

Sinks: an aiosmtpd server in this process (STARTTLS with a throwaway CA, PIPELINING advertised, every
message accepted and dropped), and a private Postfix (tests/support/postfix.py: STARTTLS, AUTH,
Maildir delivery; needs root and Debian's postfix, else skipped with a line saying so). Each sink sits
behind a latency proxy in this process that delays every chunk by half the --rtt each way and counts
the turns of the conversation: client->server bursts separated by server replies, i.e. how many times
the client had to wait for the server. Round trips per message = turns in the measured part / messages.

Per client x sink x RTT x message kind (text only; text+html+attachment) it prints msg/s (median of
the repetitions), p50/p99 latency per message (all repetitions), round trips per message, CPU per
message (Python: time.process_time of the client process, all threads; node: process.cpuUsage) and the
project's ratio to each nodemailer. Figures are this machine's; the ratios are measured in the same run.
Nothing here asserts; it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "node"
HOST = "127.0.0.1"
SENDER, RECIPIENT = "bench@example.com", "ada@example.com"  # ada: one of the test Postfix's mailboxes
GOAL = "goal at 50 ms RTT: the project's msg/s >= 2x nodemailer 10 pool's; CPU per message <= nodemailer 10's"

CLIENTS = {  # name -> (label, how to start it)
    "mailer": "mailer SmtpPool",
    "nodemailer10": "nodemailer 10 pool",
    "nodemailer8": "nodemailer 8.0.5 pool",
}
KINDS = ("text", "rich")
SINKS = ("aiosmtpd", "postfix")


# -- the messages ------------------------------------------------------------------------------------

def message_spec(kind: str) -> dict[str, Any]:
    """The same fields for every client: the mail document's (attachment as base64 text)."""
    import base64

    text = ("Hello Ada,\n\nyour order 10-4711 has shipped and should arrive on Thursday. "
            "You can follow the parcel with the link in your account.\n\n") * 4 + "Thanks,\nthe shop\n"
    spec: dict[str, Any] = {"from": f"Bench Shop <{SENDER}>", "to": RECIPIENT, "subject": "Your order has shipped",
                            "text": text}
    if kind == "rich":
        rows = "".join(f"<tr><td>Item {n}</td><td>{n} x</td><td>{n * 3}.90 EUR</td></tr>\n" for n in range(1, 41))
        spec["html"] = (f"<!doctype html><html><body><h1>Your order has shipped</h1><p>Hello Ada,</p>"
                        f"<table>\n{rows}</table><p>Thanks,<br>the shop</p></body></html>")
        content = random.Random(20261201).randbytes(24 * 1024)
        spec["attachment"] = {"filename": "invoice.pdf", "contentType": "application/pdf",
                              "contentBase64": base64.b64encode(content).decode("ascii")}
    return spec


def kind_label(kind: str, spec: dict[str, Any]) -> str:
    if kind == "text":
        return f"text only ({len(spec['text']) / 1024:.1f} KB)"
    return (f"text + html ({len(spec['html']) / 1024:.1f} KB) + attachment "
            f"({len(spec['attachment']['contentBase64']) * 3 // 4 // 1024} KB)")


# -- the latency proxy ---------------------------------------------------------------------------------

class LatencyProxy:
    """TCP proxy on the bench's event loop: each chunk is forwarded half the RTT after it arrived (a delay
    line per direction, order kept), and turns are counted: a client chunk that arrives after server
    bytes were delivered to the client starts a new turn."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.one_way = 0.0  # seconds; set between runs
        self.turns = 0
        self.connections = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self.connections += 1
        state = {"last": "server"}  # the greeting comes first

        def from_client() -> None:
            if state["last"] != "client":
                self.turns += 1
                state["last"] = "client"

        def to_client() -> None:
            state["last"] = "server"

        to_server: asyncio.Queue = asyncio.Queue()
        to_client_q: asyncio.Queue = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._read(client_reader, to_server, from_client)),
            asyncio.create_task(self._deliver(to_server, server_writer, None)),
            asyncio.create_task(self._read(server_reader, to_client_q, None)),
            asyncio.create_task(self._deliver(to_client_q, client_writer, to_client)),
        ]
        try:
            await asyncio.gather(*tasks)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_writer, server_writer):
                writer.close()

    async def _read(self, reader: asyncio.StreamReader, queue: asyncio.Queue, on_chunk) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await reader.read(65536)
            if data and on_chunk is not None:
                on_chunk()
            await queue.put((loop.time() + self.one_way, data))
            if not data:
                return

    async def _deliver(self, queue: asyncio.Queue, writer: asyncio.StreamWriter, on_delivered) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            if on_delivered is not None:
                on_delivered()
            await writer.drain()


# -- the aiosmtpd sink ---------------------------------------------------------------------------------

class _SinkHandler:
    def __init__(self) -> None:
        self.messages = 0

    async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must do this itself
        return [responses[0], "250-PIPELINING", *responses[1:]]  # aiosmtpd reads pipelined commands fine

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.messages += 1
        return f"250 2.0.0 Ok: queued as B{self.messages:06d}"


class Lab:
    """The event loop thread holding the aiosmtpd sink and the proxies."""

    def __init__(self, tls_context: ssl.SSLContext) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="bench-smtp-lab")
        self.tls_context = tls_context
        self.sink_handler = _SinkHandler()
        self.sink_port = 0
        self._servers: list[Any] = []

    def start(self) -> None:
        self.thread.start()
        self.run(self._start_sink())

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    async def _start_sink(self) -> None:
        def factory() -> SMTP:
            return SMTP(self.sink_handler, tls_context=self.tls_context, require_starttls=True,
                        hostname="sink.bench.localhost", enable_SMTPUTF8=True, loop=self.loop)

        server = await self.loop.create_server(factory, HOST, 0)
        self._servers.append(server)
        self.sink_port = server.sockets[0].getsockname()[1]

    def proxy(self, target: tuple[str, int]) -> LatencyProxy:
        proxy = LatencyProxy(target)
        self.run(proxy.start())
        self._servers.append(proxy)
        return proxy

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                if isinstance(server, LatencyProxy):
                    await server.stop()
                else:
                    server.close()

        try:
            self.run(close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


# -- sinks as the clients see them ---------------------------------------------------------------------

@dataclass
class Sink:
    name: str
    label: str
    proxy: LatencyProxy
    user: str | None = None
    password: str | None = None


def start_postfix(ca: trustme.CA, ca_file: str, folder: Path) -> tuple[Any, str | None]:
    """(PostfixServer, None) or (None, why it is skipped)."""
    try:
        from tests.support import postfix
    except ImportError as exc:  # pragma: no cover - dev dependencies missing
        return None, f"cannot import tests.support.postfix ({exc})"
    missing = [path for path in (postfix.POSTFIX, postfix.SASLPASSWD2) if not os.access(path, os.X_OK)]
    if missing:
        return None, f"{', '.join(missing)} not installed ({postfix.MISSING_HINT})"
    if os.geteuid() != 0:
        return None, "Postfix's master must run as root; run the bench as root"
    root = folder / "postfix"
    root.mkdir()
    root.chmod(0o755)
    folder.chmod(0o755)  # Postfix's unprivileged processes must get in
    try:
        return postfix.start_instance(root, ca.issue_cert("localhost", HOST), ca_file), None
    except postfix.PostfixError as exc:
        return None, f"Postfix did not start: {str(exc).splitlines()[0]}"


# -- running one client --------------------------------------------------------------------------------

@dataclass
class Result:
    elapsed: float
    cpu: float
    latencies: list[float]
    turns: int
    messages: int
    runtime: str
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def client_command(client: str, config_path: Path) -> list[str]:
    if client.startswith("mailer"):
        return [sys.executable, "-m", "bench.smtp_client", str(config_path)]
    return ["node", str(NODE_DIR / "run.js"), str(config_path)]


def client_env(client: str, folder: Path) -> dict[str, str] | None:
    """mailer@REV runs the transport and compose of that revision (extracted by extract_baseline)."""
    if not client.startswith("mailer@"):
        return None
    return {**os.environ, "MAILER_FUNCTIONS": str(folder / "baseline" / "functions")}


def extract_baseline(revision: str, folder: Path) -> str:
    """functions/ as of `revision` into folder/baseline; returns the short commit name."""
    commit = subprocess.run(["git", "rev-parse", "--short", f"{revision}^{{commit}}"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    target = folder / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "archive", commit, "functions"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return commit


def run_client(client: str, sink: Sink, message_file: Path, folder: Path, args: argparse.Namespace) -> Result:
    config = {
        "message": str(message_file), "messages": args.messages, "senders": args.senders,
        "connections": args.connections, "warmup": args.warmup,
        "host": HOST, "port": sink.proxy.port, "requireTLS": True, "ca": str(folder / "ca.pem"),
        "user": sink.user, "password": sink.password, "package": client,
        "uri": _uri(sink, folder / "ca.pem", args.connections),
    }
    config_path = folder / f"{client.replace('@', '-')}.json"
    config_path.write_text(json.dumps(config))
    errors = (folder / f"{config_path.stem}.stderr").open("w+")  # a file: a chatty client never blocks on it
    process = subprocess.Popen(client_command(client, config_path), cwd=ROOT, env=client_env(client, folder),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True, bufsize=1)
    try:
        ready = _line(process, 60)
        if ready != "ready":
            raise RuntimeError(_failure(client, ready, process))
        turns = sink.proxy.turns
        process.stdin.write("go\n")
        process.stdin.flush()
        answer = _line(process, 120 + args.messages * 2)
        turns = sink.proxy.turns - turns
        try:
            report = json.loads(answer)
        except ValueError:
            raise RuntimeError(_failure(client, answer, process)) from None
        if "error" in report:
            raise RuntimeError(f"{client}: {report['error']}")
        process.stdin.close()
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        errors.close()
    return Result(report["elapsed"], report["cpu"], report["latencies"], turns, args.messages, report["runtime"],
                  report.get("failed", 0), report.get("failures", []))


def _uri(sink: Sink, ca_file: Path, connections: int) -> str:
    from tests.support.smtp import build_uri

    return build_uri("smtp", HOST, sink.proxy.port, sink.user, sink.password,
                     {"tlsCaFile": str(ca_file), "requireTLS": True, "maxConnections": connections})


def _line(process: subprocess.Popen, timeout: float) -> str:
    """The next stdout line, or "" when the process ended or took longer than `timeout`."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0].strip() if box else ""


def _failure(client: str, said: str, process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.kill()
    process.wait()
    errors = Path(process.args[-1]).with_suffix(".stderr").read_text(errors="replace").strip().splitlines()
    detail = said or (errors[-1] if errors else "no output")
    try:
        detail = json.loads(said)["error"]
    except (ValueError, KeyError, TypeError):
        pass
    return f"{client} failed: {detail}"


# -- figures ---------------------------------------------------------------------------------------------

def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


@dataclass
class Cell:
    """One client x sink x RTT x kind over the repetitions."""

    results: list[Result] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.results) and self.error is None

    @property
    def rate(self) -> float:
        return statistics.median(r.messages / r.elapsed for r in self.results)

    @property
    def cpu_ms(self) -> float:
        return statistics.median(r.cpu / r.messages * 1000 for r in self.results)

    @property
    def round_trips(self) -> float:
        return statistics.median(r.turns / r.messages for r in self.results)

    def latency(self, fraction: float) -> float:
        return percentile([ms for r in self.results for ms in r.latencies], fraction)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.results)


def print_table(title: str, cells: dict[str, Cell], labels: dict[str, str]) -> None:
    print(f"  {title}")
    print(f"    {'client':<30}{'msg/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'RT/msg':>8}{'CPU ms/msg':>12}")
    for client, cell in cells.items():
        if cell.error:
            print(f"    {labels[client]:<30}  not measured: {cell.error}")
            continue
        failed = f"  ({cell.failed} failed)" if cell.failed else ""
        print(f"    {labels[client]:<30}{cell.rate:>8.1f}{cell.latency(0.5):>9.0f}{cell.latency(0.99):>9.0f}"
              f"{cell.round_trips:>8.2f}{cell.cpu_ms:>12.2f}{failed}")
    ours = cells.get("mailer")
    if ours is not None and ours.ok:
        ratios = [f"vs {labels[other]}: {ours.rate / cell.rate:.2f}x msg/s, {ours.cpu_ms / cell.cpu_ms:.2f}x CPU"
                  for other, cell in cells.items() if other != "mailer" and cell.ok]
        if ratios:
            print(f"    mailer {'; '.join(ratios)}")
    print()


# -- main -----------------------------------------------------------------------------------------------

def _csv(kind: type, allowed: tuple[str, ...] | None = None):
    def parse(text: str) -> list:
        values = [kind(item) for item in text.split(",") if item.strip()]
        if allowed is not None:
            for value in values:
                if value not in allowed:
                    raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(allowed)}")
        return values
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.smtp", description=__doc__.split("\n\n")[0],
                                     epilog=GOAL)
    parser.add_argument("--messages", type=int, default=200, help="measured messages per run (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per client x sink x RTT x kind (default 3)")
    parser.add_argument("--rtt", type=_csv(float), default=[0.0, 50.0], help="round-trip times in ms (default 0,50)")
    parser.add_argument("--connections", type=int, default=5, help="maxConnections of every pool (default 5)")
    parser.add_argument("--senders", type=int, default=16,
                        help="messages outstanding at a time: threads (Python), concurrent sendMail (node) (default 16)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="unmeasured messages, sent as the measured ones are, that open the pool first (default 10)")
    parser.add_argument("--clients", type=_csv(str, tuple(CLIENTS)), default=list(CLIENTS),
                        help="default mailer,nodemailer10,nodemailer8")
    parser.add_argument("--sinks", type=_csv(str, SINKS), default=list(SINKS), help="default aiosmtpd,postfix")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the transport and compose of git revision REV (e.g. HEAD), as client mailer@REV")
    parser.add_argument("--kinds", type=_csv(str, KINDS), default=list(KINDS), help="text,rich (default both)")
    args = parser.parse_args(argv)
    if min(args.messages, args.repeat, args.connections, args.senders, args.warmup) < 1:
        parser.error("--messages, --repeat, --connections, --senders and --warmup must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = tree_state()  # before the run: what the mailer clients load
    labels = dict(CLIENTS)
    unavailable: dict[str, str] = {}
    for client in args.clients:
        if client.startswith("nodemailer"):
            if shutil.which("node") is None:
                unavailable[client] = "node is not installed"
            elif not (NODE_DIR / "node_modules" / client / "package.json").is_file():
                unavailable[client] = "bench/node/node_modules missing (make bench-smtp runs npm ci there)"
            else:
                version = json.loads((NODE_DIR / "node_modules" / client / "package.json").read_text())["version"]
                labels[client] = f"nodemailer {version} pool"

    with tempfile.TemporaryDirectory(prefix="mailer-bench-smtp-") as tmp:
        folder = Path(tmp)
        if args.baseline:
            try:
                commit = extract_baseline(args.baseline, folder)
            except subprocess.CalledProcessError as exc:
                print(f"--baseline {args.baseline}: {(exc.stderr or b'').decode(errors='replace').strip()}",
                      file=sys.stderr)
                return 2
            name = f"mailer@{args.baseline}"
            args.clients.insert(args.clients.index("mailer") + 1 if "mailer" in args.clients else 0, name)
            labels[name] = f"mailer SmtpPool at {commit}"
            labels["mailer"] = "mailer SmtpPool (this tree)"
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", HOST).configure_cert(tls_context)
        specs = {kind: message_spec(kind) for kind in args.kinds}
        for kind, spec in specs.items():
            (folder / f"{kind}.json").write_text(json.dumps(spec))

        lab = Lab(tls_context)
        lab.start()
        sinks: list[Sink] = []
        skipped: list[str] = []
        postfix_server = None
        try:
            if "aiosmtpd" in args.sinks:
                sinks.append(Sink("aiosmtpd", "aiosmtpd sink (STARTTLS, PIPELINING advertised)",
                                  lab.proxy((HOST, lab.sink_port))))
            if "postfix" in args.sinks:
                postfix_server, why = start_postfix(ca, str(folder / "ca.pem"), folder)
                if postfix_server is None:
                    skipped.append(f"Postfix skipped: {why}")
                else:
                    from tests.support.postfix import POSTFIX_PASSWORD, POSTFIX_USER

                    sinks.append(Sink("postfix", "private Postfix (STARTTLS, AUTH, Maildir)",
                                      lab.proxy((postfix_server.host, postfix_server.port)),
                                      POSTFIX_USER, POSTFIX_PASSWORD))
            results = measure(args, sinks, specs, folder, unavailable, labels)
        finally:
            lab.stop()
            if postfix_server is not None:
                from tests.support.postfix import stop_instance

                stop_instance(postfix_server)

    report(args, sinks, specs, results, labels, skipped, state)
    return 0


def measure(args: argparse.Namespace, sinks: list[Sink], specs: dict[str, dict], folder: Path,
            unavailable: dict[str, str], labels: dict[str, str]) -> dict[tuple, Cell]:
    cells: dict[tuple, Cell] = {}
    runnable = [c for c in args.clients if c not in unavailable]
    for client, why in unavailable.items():
        for rtt in args.rtt:
            for sink in sinks:
                for kind in specs:
                    cells[(rtt, sink.name, kind, client)] = Cell(error=why)
    total = len(args.rtt) * len(sinks) * len(specs) * args.repeat * len(runnable)
    done, started = 0, time.monotonic()
    for rtt in args.rtt:
        for sink in sinks:
            sink.proxy.one_way = rtt / 2000
            for kind in specs:
                for repetition in range(args.repeat):
                    for client in runnable:  # interleaved, so drift on a shared machine hits every client alike
                        cell = cells.setdefault((rtt, sink.name, kind, client), Cell())
                        done += 1
                        if cell.error:
                            continue
                        try:
                            result = run_client(client, sink, folder / f"{kind}.json", folder, args)
                            cell.results.append(result)
                            said = (f"{result.messages / result.elapsed:.1f} msg/s, "
                                    f"{result.turns / result.messages:.2f} RT/msg")
                        except (RuntimeError, OSError) as exc:
                            cell.error = str(exc)
                            said = f"failed: {exc}"
                        sys.stderr.write(f"  [{done}/{total} {time.monotonic() - started:.0f} s] {rtt:g} ms, "
                                         f"{sink.name}, {kind}, {labels[client]} #{repetition + 1}: {said}\n")
                        sys.stderr.flush()
    return cells


def tree_state() -> str:
    """Which revision of functions/ "mailer" ran, and whether it had uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "functions"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"HEAD {commit}" + (" with uncommitted changes" if dirty else "")


def report(args: argparse.Namespace, sinks: list[Sink], specs: dict[str, dict], cells: dict[tuple, Cell],
           labels: dict[str, str], skipped: list[str], state: str) -> None:
    runtimes = sorted({r.runtime for cell in cells.values() for r in cell.results})
    print(f"SMTP benchmark: {args.messages} messages x {args.repeat} runs per cell, maxConnections={args.connections}, "
          f"{args.senders} messages outstanding, after {args.warmup} warm-up messages")
    print(f"  clients: {'; '.join(runtimes) or 'none ran'}; mailer: functions/ of this tree, {state}")
    print("  msg/s: median of the runs; p50/p99: latency per message over all runs (start of compose/sendMail to "
          "the server's reply); RT/msg: client->server bursts separated by server replies, counted at the proxy, "
          "per message; CPU: the client process's, per message")
    for line in skipped:
        print(f"  {line}")
    print(f"  {GOAL}")
    print()
    for rtt in args.rtt:
        for sink in sinks:
            for kind, spec in specs.items():
                row = {client: cells[(rtt, sink.name, kind, client)] for client in args.clients
                       if (rtt, sink.name, kind, client) in cells}
                print_table(f"RTT {rtt:g} ms, {sink.label}, {kind_label(kind, spec)}", row, labels)
    at_50 = [rtt for rtt in args.rtt if rtt == 50]
    if at_50 and "mailer" in args.clients and "nodemailer10" in args.clients:
        print("  goal check at 50 ms RTT (mailer / nodemailer 10; with 1 round trip per message against nodemailer "
              "10's 2 the ratio tops out near 2x, so it shows how little besides the RTT each turn costs):")
        for sink in sinks:
            for kind in specs:
                ours, theirs = cells.get((50, sink.name, kind, "mailer")), cells.get((50, sink.name, kind, "nodemailer10"))
                if ours is None or theirs is None or not (ours.ok and theirs.ok):
                    print(f"    {sink.name}, {kind}: not measured")
                    continue
                speed, cpu = ours.rate / theirs.rate, ours.cpu_ms / theirs.cpu_ms
                print(f"    {sink.name}, {kind}: {speed:.2f}x msg/s ({'met' if speed >= 2 else 'not met'}: >= 2x), "
                      f"{cpu:.2f}x CPU per message ({'met' if cpu <= 1 else 'not met'}: <= 1x)")


if __name__ == "__main__":
    sys.exit(main())
