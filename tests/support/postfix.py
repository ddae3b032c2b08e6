"""A real MTA for tests: a private Debian Postfix instance on 127.0.0.1 (a free port), never port 25.

Fixture (registered as a plugin by tests/conftest.py):

    postfix_server  session  PostfixServer: STARTTLS (certificate from the session `smtp_ca`),
                             AUTH PLAIN/LOGIN only after STARTTLS (Cyrus SASL, its own sasldb),
                             mail for example.com delivered into Maildirs under a temporary folder,
                             nothing relayed anywhere (relayhost empty, default_transport = error)

    uri = postfix_server.uri(POSTFIX_USER, POSTFIX_PASSWORD)
    message = postfix_server.wait_for_message("ada@example.com", message_id)
    postfix_server.log_lines()  # Postfix's own log (maillog_file, no syslog needed)

Mailboxes: MAILBOXES below; any other example.com address is refused at RCPT with Postfix's
"550 5.1.1 ... User unknown in virtual mailbox table". Postfix itself runs as root with its own
config, queue and data directories (postfix -c DIR start / stop), so it needs root and Debian's
postfix + sasl2-bin (tools/ensure-postfix installs them). The instance's files live in a folder
readable by the unprivileged postfix user, removed at session end.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from local.processes import free_port
from tests.support.smtp import build_uri

LISTEN_HOST = "127.0.0.1"
DOMAIN = "example.com"
POSTFIX_USER, POSTFIX_PASSWORD = "mailer", "pf-Secret-9-never-logged"
MAILBOXES = ("ada@example.com", "grace@example.com", "alan@example.com", "jörg@example.com")
RECIPIENT_LIMIT = 2  # smtpd_recipient_limit: recipients Postfix takes per transaction
UNKNOWN_RECIPIENT = "nobody@example.com"  # not a mailbox: refused at RCPT
POSTFIX = "/usr/sbin/postfix"
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
MAIL_OWNER, SETGID_GROUP = "postfix", "postdrop"
MAILBOX_OWNER = "nobody"  # virtual(8) writes Maildirs as this user, never as root
START_TIMEOUT = 20.0
MISSING_HINT = "run tools/ensure-postfix as root (make test does)"


class PostfixError(RuntimeError):
    """Postfix could not be set up, started or stopped; the message carries its own log lines."""


@dataclass
class PostfixServer:
    host: str
    port: int
    ca_file: str
    root: Path  # instance folder: conf/, queue/, data/, mailboxes/, maillog

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.root / "maillog"

    def uri(self, user: str | None = None, password: str | None = None, **options: Any) -> str:
        """smtp:// (STARTTLS) URI for this instance; tlsCaFile is the session CA unless given
        (None leaves it out)."""
        return build_uri("smtp", self.host, self.port, user, password, {"tlsCaFile": self.ca_file, **options})

    def log_lines(self) -> list[str]:
        try:
            return self.log_file.read_text("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return []

    def mailbox(self, address: str) -> Path:
        local, domain = address.rsplit("@", 1)
        return self.root / "mailboxes" / domain / local

    def messages(self, address: str) -> list[email.message.EmailMessage]:
        """Every message delivered to this mailbox so far, oldest first."""
        folder = self.mailbox(address)
        files = [p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()]
        files.sort(key=lambda p: p.name)  # Maildir names start with the delivery time
        # Our messages are UTF-8 throughout (SMTPUTF8 headers included): parse them as text, so
        # non-ASCII headers read back as written rather than as escaped bytes.
        return [email.message_from_string(p.read_bytes().decode("utf-8", "surrogateescape"),  # type: ignore[misc]
                                          policy=email.policy.default)
                for p in files]

    def wait_for_message(self, address: str, message_id: str, timeout: float = 10.0) -> email.message.EmailMessage:
        """Postfix accepts first and delivers a moment later: poll the Maildir for this Message-ID."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages(address):
                if message["Message-ID"] == message_id:
                    return message
            if time.monotonic() > deadline:
                tail = "\n".join(self.log_lines()[-15:])
                raise AssertionError(f"{message_id} never reached the mailbox of {address}; Postfix log tail:\n{tail}")
            time.sleep(0.05)


def _main_cf(root: Path, port: int, uid: int, gid: int) -> str:
    conf = root / "conf"
    return f"""\
compatibility_level = 3.6
queue_directory = {root / "queue"}
data_directory = {root / "data"}
meta_directory = /etc/postfix
mail_owner = {MAIL_OWNER}
setgid_group = {SETGID_GROUP}
maillog_file = {root / "maillog"}
maillog_file_prefixes = {root}
myhostname = mail.test.localhost
mydomain = test.localhost
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
# Nothing ever leaves this machine: no relay host, and every non-example.com transport is an error.
relayhost =
relay_domains =
default_transport = error:5.7.1 this test instance delivers to {DOMAIN} only
local_transport = error:5.7.1 this test instance has no local delivery
alias_maps =
alias_database =
biff = no
smtputf8_enable = yes
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {root / "mailboxes"}
virtual_mailbox_maps = texthash:{conf / "mailboxes"}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtpd_banner = $myhostname ESMTP Postfix (mailer tests)
smtpd_tls_security_level = may
smtpd_tls_chain_files = {conf / "server.pem"}
smtpd_tls_auth_only = yes
smtpd_tls_received_header = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {conf / "sasl"}
smtpd_sasl_local_domain = {DOMAIN}
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient, permit_sasl_authenticated, reject
# Postfix's default is 1000; with a handful of mailboxes a limit of 2 lets a three-recipient email
# meet Postfix's own "452 4.5.3 Error: too many recipients" and the client's further transaction.
smtpd_recipient_limit = {RECIPIENT_LIMIT}
"""


# One line per service; chroot off everywhere (column 5) so no copies of system files are needed.
_MASTER_CF = """\
{listen} inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""

_SASL_CONF = """\
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: {sasldb}
"""


def _run(command: list[str], what: str, server: PostfixServer | None = None, stdin: str | None = None) -> None:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        said = " | ".join(line for line in (done.stdout + done.stderr).splitlines() if line.strip())
        logged = "\n".join(server.log_lines()[-20:]) if server else ""
        raise PostfixError(f"{what} failed (exit {done.returncode})" + (f": {said}" if said else "")
                           + (f"\nPostfix log:\n{logged}" if logged else ""))


def write_instance(root: Path, cert: trustme.LeafCert, port: int) -> None:
    """Lay out config, TLS key, SASL database and mailbox map of a private instance under `root`."""
    mail_owner = pwd.getpwnam(MAIL_OWNER)
    mailbox_owner = pwd.getpwnam(MAILBOX_OWNER)
    conf = root / "conf"
    (conf / "sasl").mkdir(parents=True)
    for name in ("queue", "data"):
        (root / name).mkdir()
    os.chown(root / "data", mail_owner.pw_uid, mail_owner.pw_gid)
    mailboxes = root / "mailboxes"
    mailboxes.mkdir()
    os.chown(mailboxes, mailbox_owner.pw_uid, mailbox_owner.pw_gid)

    (conf / "main.cf").write_text(_main_cf(root, port, mailbox_owner.pw_uid, mailbox_owner.pw_gid))
    (conf / "master.cf").write_text(_MASTER_CF.format(listen=f"{LISTEN_HOST}:{port}"))
    # Maildir (trailing slash) per address, relative to virtual_mailbox_base.
    (conf / "mailboxes").write_text(
        "".join(f"{address} {address.split('@')[1]}/{address.split('@')[0]}/\n" for address in MAILBOXES)
    )
    server_pem = conf / "server.pem"
    server_pem.write_bytes(cert.private_key_pem.bytes() + b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    server_pem.chmod(0o600)  # smtpd reads it as root before dropping privileges

    sasldb = conf / "sasl" / "sasldb2"
    (conf / "sasl" / "smtpd.conf").write_text(_SASL_CONF.format(sasldb=sasldb))
    _run([SASLPASSWD2, "-f", str(sasldb), "-c", "-p", "-u", DOMAIN, POSTFIX_USER],
         "saslpasswd2 (creating the test SASL user)", stdin=POSTFIX_PASSWORD)
    # smtpd checks passwords after dropping to the postfix user.
    os.chown(sasldb, 0, mail_owner.pw_gid)
    sasldb.chmod(0o640)


def _wait_until_listening(server: PostfixServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((server.host, server.port), timeout=2) as sock:
                if sock.recv(512).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    tail = "\n".join(server.log_lines()[-20:])
    raise PostfixError(f"Postfix did not greet on {server.address} within {START_TIMEOUT:g}s; Postfix log:\n{tail}")


def _master_pid(server: PostfixServer) -> int | None:
    try:
        return int((server.root / "queue" / "pid" / "master.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_instance(server: PostfixServer) -> None:
    """`postfix stop` on this instance only; if its master outlives that, kill that one pid."""
    pid = _master_pid(server)
    subprocess.run([POSTFIX, "-c", str(server.root / "conf"), "stop"], capture_output=True, timeout=60)
    if pid is None:
        return
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, 9)


def start_instance(root: Path, cert: trustme.LeafCert, ca_file: str) -> PostfixServer:
    port = free_port(LISTEN_HOST)
    write_instance(root, cert, port)
    server = PostfixServer(LISTEN_HOST, port, ca_file, root)
    conf = str(root / "conf")
    _run([POSTFIX, "-c", conf, "check"], "postfix check", server)
    try:
        _run([POSTFIX, "-c", conf, "start"], "postfix start", server)
        _wait_until_listening(server)
    except BaseException:
        stop_instance(server)
        raise
    return server


def _check_prerequisites() -> None:
    missing = [path for path in (POSTFIX, SASLPASSWD2) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: {MISSING_HINT}", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the Postfix tests must run as root (Postfix's master runs as root)", pytrace=False)
    try:
        pwd.getpwnam(MAIL_OWNER), grp.getgrnam(SETGID_GROUP)
    except KeyError as exc:
        pytest.fail(f"user/group {exc} missing: {MISSING_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def postfix_server(smtp_ca: trustme.CA, smtp_ca_file: str) -> Iterator[PostfixServer]:
    """A private Postfix on 127.0.0.1 for the whole session; stopped (and its folder removed) at the end."""
    _check_prerequisites()
    # Not under pytest's basetemp: that is 0700, and Postfix's unprivileged processes must get in.
    root = Path(tempfile.mkdtemp(prefix="mailer-postfix-"))
    root.chmod(0o755)
    try:
        failure = None
        try:
            server = start_instance(root, smtp_ca.issue_cert("localhost", "127.0.0.1"), smtp_ca_file)
        except PostfixError as exc:
            failure = str(exc)
        if failure is not None:  # outside the except: the report is Postfix's lines, not a traceback chain
            pytest.fail(failure, pytrace=False)
        try:
            yield server
        finally:
            stop_instance(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)
