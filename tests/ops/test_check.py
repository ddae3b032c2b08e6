"""`make check` (ops/check.py) against real peers: aiosmtpd with STARTTLS, implicit TLS and AUTH
(tests/support/smtp.py), servers set up wrong on purpose (a certificate for another name, a plaintext
server addressed with smtps://, an implicit-TLS port addressed with smtp://, a closed port, a name that
cannot resolve, a port-25 listener that drops connection attempts as a blocked port does, Gmail's 535),
and the session's private Postfix for the capability listing. Every run is checked for the password
(and its base64 forms): it must never appear in the output."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from ops import check
from tests.support.postfix import POSTFIX_PASSWORD, POSTFIX_USER, PostfixServer
from tests.support.smtp import Behaviour, SmtpTestServer, build_uri

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-Never-Print-Me-42"
USER = "mailer"
GMAIL_535 = ("535 5.7.8 Username and Password not accepted. For more information, go to "
             "https://support.google.com/mail/?p=BadCredentials")


def secret_forms(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"\0{USER}\0{secret}".encode()).decode()]


def run(*argv: str, password: str | None = None, env_password: str | None = None,
        secrets: tuple[str, ...] = ()) -> tuple[int, str]:
    """ops.check.main in this process; the password on stdin (--password-stdin) or in SMTP_PASSWORD.
    Fails the test if any form of a given password shows up in the output."""
    out = io.StringIO()
    args = list(argv)
    environ: dict[str, str] = {}
    if password is not None:
        args.append("--password-stdin")
    if env_password is not None:
        environ["SMTP_PASSWORD"] = env_password
    code = check.main(args, stdin=io.StringIO((password or "") + "\n"), stdout=out, environ=environ)
    text = out.getvalue()
    for secret in (*secrets, *(p for p in (password, env_password) if p)):
        for form in secret_forms(secret):
            assert form not in text, "a secret was printed"
    return code, text


def step_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line[8:8 + len(name) + 1] == f"{name} "]


def status_of(text: str, name: str) -> list[str]:
    return [line.split()[0] for line in step_lines(text, name)]


def cause_after(text: str, name: str) -> str:
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line[8:8 + len(name) + 1] == f"{name} " and line.split()[0] == "FAIL":
            following = lines[index + 1] if index + 1 < len(lines) else ""
            assert following.strip().startswith("likely cause:"), text
            return following
    raise AssertionError(f"no failed {name} step in:\n{text}")


@pytest.fixture
def other_name_server(smtp_ca: trustme.CA, smtp_ca_file: str) -> Iterator[Callable[..., SmtpTestServer]]:
    """An aiosmtpd server whose certificate (from the trusted test CA) names only mail.other.example."""
    started: list[SmtpTestServer] = []

    def start(tls: str = "implicit") -> SmtpTestServer:
        server = SmtpTestServer(
            tls=tls, auth=True, require_starttls=True, users={USER: SECRET}, behaviour=Behaviour(),
            smtputf8=True, auth_mechanisms=("PLAIN", "LOGIN"),
            server_cert=smtp_ca.issue_cert("mail.other.example"), ca_file=smtp_ca_file,
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


# -- servers that work ---------------------------------------------------------------------------


def test_starttls_server_every_step_ok_and_a_test_message(smtp_server: Callable[..., SmtpTestServer]) -> None:
    server = smtp_server(tls="starttls", users={USER: SECRET}, pipelining=True)
    code, text = run("--uri", server.uri(USER), "--send-to", "ada@example.com", "--from", "Check <check@example.com>",
                     password=SECRET)
    assert code == 0, text
    assert f"check smtp://{USER}@127.0.0.1:{server.port} (--uri)" in text
    assert status_of(text, "DNS") == ["ok"] and "127.0.0.1 is an address" in step_lines(text, "DNS")[0]
    assert status_of(text, "TCP") == ["ok"] and f"connected to 127.0.0.1:{server.port}" in text
    assert status_of(text, "EHLO") == ["ok", "ok"]  # before TLS (offers STARTTLS), then the capabilities
    assert "offers STARTTLS" in step_lines(text, "EHLO")[0]
    tls = step_lines(text, "TLS")
    assert status_of(text, "TLS") == ["ok"]
    for part in ("STARTTLS: TLSv1.", "subject OU=Testing cert", "issuer OU=Testing CA", "names localhost, 127.0.0.1", "days left"):
        assert part in tls[0], tls
    capabilities = step_lines(text, "EHLO")[1]
    for part in ("PIPELINING yes", "SMTPUTF8 yes", "SIZE 33554432 bytes (32.0 MiB)", "8BITMIME yes", "DSN no", "AUTH LOGIN PLAIN"):
        assert part in capabilities, capabilities
    auth = step_lines(text, "AUTH")
    assert status_of(text, "AUTH") == ["ok"]
    assert f"PLAIN as {USER} (password from --password-stdin): 235" in auth[0]
    assert status_of(text, "send") == ["ok"], text
    assert text.rstrip().splitlines()[-1].startswith("check: ok, 8 steps in")
    # The check's own session authenticated once; the test message came through the function's transport.
    assert [(a.mechanism, a.success) for a in server.auth_attempts] == [("PLAIN", True), ("PLAIN", True)]
    [message] = server.messages
    assert message.rcpt_tos == ["ada@example.com"] and message.mail_from == "check@example.com"
    assert message.message["Subject"].startswith("mailer check: 127.0.0.1 works")
    assert message.message_id in step_lines(text, "send")[0]
    assert message.tls and message.authenticated_as == USER


def test_implicit_tls_login_json_password_from_environment(smtp_server: Callable[..., SmtpTestServer]) -> None:
    server = smtp_server(tls="implicit", users={USER: SECRET})
    code, text = run("--uri", server.uri(USER, authMethod="LOGIN"), "--json", env_password=SECRET)
    assert code == 0, text
    document = json.loads(text)
    assert document["ok"] is True and document["target"] == f"smtps://{USER}@127.0.0.1:{server.port}"
    steps = {step["step"]: step for step in document["steps"]}
    assert [step["step"] for step in document["steps"]] == ["DNS", "TCP", "TLS", "greeting", "EHLO", "AUTH"]
    assert all(step["status"] == "ok" and step["ms"] >= 0 for step in document["steps"])
    tls = steps["TLS"]["data"]
    assert tls["mode"] == "implicit TLS (smtps://)" and tls["verified"] is True and tls["protocol"].startswith("TLSv1.")
    assert tls["certificate"]["names"] == ["localhost", "127.0.0.1"] and tls["certificate"]["days_left"] > 300
    capabilities = steps["EHLO"]["data"]["capabilities"]
    assert capabilities["PIPELINING"] is False and capabilities["SMTPUTF8"] is True and sorted(capabilities["AUTH"]) == ["LOGIN", "PLAIN"]
    assert steps["AUTH"]["data"] == {"method": "LOGIN", "code": 235}
    assert "password from SMTP_PASSWORD" in steps["AUTH"]["detail"]
    assert [(a.mechanism, a.success) for a in server.auth_attempts] == [("LOGIN", True)]


def test_without_a_password_auth_is_skipped_not_failed(smtp_server: Callable[..., SmtpTestServer]) -> None:
    server = smtp_server(tls="starttls", users={USER: SECRET})
    code, text = run("--uri", server.uri(USER))
    assert code == 0, text
    assert status_of(text, "AUTH") == ["skip"] and "--password-stdin" in step_lines(text, "AUTH")[0]
    assert "not checked: AUTH" in text.splitlines()[-1]
    assert server.auth_attempts == []


# -- servers set up wrong, and the cause named -----------------------------------------------------


def test_wrong_password_is_a_535_naming_user_and_password(smtp_server: Callable[..., SmtpTestServer]) -> None:
    server = smtp_server(tls="starttls", users={USER: SECRET})
    wrong = "Wrong-Password-Also-Secret-7"
    code, text = run("--uri", server.uri(USER), password=wrong, secrets=(SECRET,))
    assert code == 1, text
    assert status_of(text, "AUTH") == ["FAIL"] and "535" in step_lines(text, "AUTH")[0]
    assert "refused the user name or password" in cause_after(text, "AUTH")
    assert text.splitlines()[-1].startswith("check: FAILED at AUTH")
    assert [(a.login, a.success) for a in server.auth_attempts] == [(USER, False)]


def test_gmail_535_names_app_password_or_oauth2(smtp_server: Callable[..., SmtpTestServer]) -> None:
    # The reply Gmail gives for an account password (its "BadCredentials" link), played by a real server.
    server = smtp_server(tls="implicit", users={USER: SECRET}, behaviour=Behaviour(auth_reply=GMAIL_535))
    code, text = run("--uri", server.uri(USER), password=SECRET)
    assert code == 1, text
    cause = cause_after(text, "AUTH")
    assert "app password" in cause and "XOAUTH2" in cause, cause


def test_certificate_for_another_name_lists_the_names(other_name_server: Callable[..., SmtpTestServer]) -> None:
    server = other_name_server(tls="starttls")
    code, text = run("--uri", server.uri(USER), password=SECRET)
    assert code == 1, text
    tls = step_lines(text, "TLS")[0]
    assert tls.split()[0] == "FAIL" and "127.0.0.1" in tls and "names mail.other.example" in tls, tls
    cause = cause_after(text, "TLS")
    assert "certificate name mismatch" in cause and "mail.other.example" in cause and "tlsServername" in cause
    assert server.auth_attempts == [] and status_of(text, "AUTH") == []  # no password after a failed TLS


def test_certificate_name_given_with_tls_servername_passes(other_name_server: Callable[..., SmtpTestServer]) -> None:
    server = other_name_server(tls="implicit")
    code, text = run("--uri", server.uri(USER, tlsServername="mail.other.example"), password=SECRET)
    assert code == 0, text
    assert "names mail.other.example" in step_lines(text, "TLS")[0]


def test_untrusted_certificate_names_tls_ca_file(smtp_server: Callable[..., SmtpTestServer]) -> None:
    server = smtp_server(tls="implicit", users={USER: SECRET})
    code, text = run("--uri", server.uri(USER, tlsCaFile=None), password=SECRET)
    assert code == 1, text
    assert "tlsCaFile" in cause_after(text, "TLS")


def test_plaintext_server_addressed_with_smtps(smtp_server: Callable[..., SmtpTestServer]) -> None:
    server = smtp_server(tls="none", auth=False)
    code, text = run("--uri", build_uri("smtps", server.host, server.port, USER), password=SECRET)
    assert code == 1, text
    assert status_of(text, "TLS") == ["FAIL"]
    cause = cause_after(text, "TLS")
    assert f"use smtp:// for {server.port}" in cause and "greeted '220 " in cause, cause


def test_implicit_tls_port_addressed_with_smtp(smtp_server: Callable[..., SmtpTestServer]) -> None:
    server = smtp_server(tls="implicit", users={USER: SECRET})
    uri = build_uri("smtp", server.host, server.port, USER, options={"tlsCaFile": server.ca_file})
    code, text = run("--uri", uri, "--timeout", "1", password=SECRET)
    assert code == 1, text
    assert status_of(text, "greeting") == ["FAIL"] and "no greeting within 1s" in text
    cause = cause_after(text, "greeting")
    assert f"expects TLS from the first byte (implicit TLS): use smtps:// for port {server.port}" in cause, cause


def test_closed_port_is_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    code, text = run("--uri", f"smtp://{USER}@127.0.0.1:{port}", password=SECRET)
    assert code == 1, text
    assert status_of(text, "TCP") == ["FAIL"] and "Connection refused" in step_lines(text, "TCP")[0]
    assert f"nothing listens on port {port} at 127.0.0.1" in cause_after(text, "TCP")


def test_unresolvable_host() -> None:
    code, text = run("--uri", f"smtps://{USER}@smtp.nothing-here.invalid:465", password=SECRET)
    assert code == 1, text
    assert status_of(text, "DNS") == ["FAIL"]
    assert "'smtp.nothing-here.invalid' does not resolve" in cause_after(text, "DNS")
    assert status_of(text, "TCP") == []


@pytest.fixture
def blackholed_port_25() -> Iterator[str]:
    """127.0.0.25:25 answering nothing, as a blocked port 25 does: a listener whose one-slot backlog is
    full (one connection never accepted), so the kernel drops every further SYN and connects time out."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.25", 25))
    except OSError as error:  # not root, or something already listens there
        listener.close()
        pytest.skip(f"cannot bind 127.0.0.25:25 ({error})")
    listener.listen(0)
    filler = socket.create_connection(("127.0.0.25", 25), timeout=2)
    try:
        yield "127.0.0.25"
    finally:
        filler.close()
        listener.close()


def test_connect_timeout_on_port_25_names_the_block(blackholed_port_25: str) -> None:
    code, text = run("--uri", f"smtp://{USER}@{blackholed_port_25}:25", "--timeout", "1", password=SECRET)
    assert code == 1, text
    assert status_of(text, "TCP") == ["FAIL"] and "timed out" in step_lines(text, "TCP")[0]
    cause = cause_after(text, "TCP")
    assert "port 25 is blocked" in cause and "Google Cloud" in cause and "587" in cause, cause


def test_failed_test_message_names_the_reply(smtp_server: Callable[..., SmtpTestServer]) -> None:
    server = smtp_server(tls="starttls", users={USER: SECRET},
                         behaviour=Behaviour(rcpt_replies={"gone@example.com": "550 5.1.1 No such user"}))
    code, text = run("--uri", server.uri(USER), "--send-to", "gone@example.com", "--from", "check@example.com",
                     password=SECRET)
    assert code == 1, text
    assert status_of(text, "AUTH") == ["ok"] and status_of(text, "send") == ["FAIL"]
    assert "550 5.1.1 No such user" in step_lines(text, "send")[0]
    assert server.messages == []


# -- a stack file --------------------------------------------------------------------------------


def write_stack(folder: Path, name: str, uri: str, extra: str = "") -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"Pulumi.{name}.yaml").write_text(textwrap.dedent(f"""\
        config:
          gcp:project: acme-mailer-check
          mailer:region: us-central1
          mailer:firestoreLocation: nam5
          mailer:smtpConnectionUri: {uri}
          mailer:defaultFrom: "Acme <noreply@acme.example>"
          mailer:smtpPassword:
            secure: v1:c2VjcmV0LWJ1dC1lbmNyeXB0ZWQ=
        """) + extra)


def test_stack_settings_encrypted_password_and_size_limit(
    smtp_server: Callable[..., SmtpTestServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server(tls="starttls", users={USER: SECRET})
    monkeypatch.setattr(check, "STACKS_DIR", tmp_path / "stacks")
    monkeypatch.setattr(check, "REPO_ROOT", tmp_path)
    write_stack(tmp_path / "stacks", "staging", server.uri(USER), "  mailer:maxMessageBytes: 67108864\n")

    code, text = run("--stack", "staging")
    assert code == 0, text
    assert f"(stack staging, {Path('stacks/Pulumi.staging.yaml')})" in text.splitlines()[0]
    auth = step_lines(text, "AUTH")[0]
    assert auth.split()[0] == "skip" and "encrypted in Pulumi.staging.yaml" in auth and "pulumi config get" in auth
    capabilities = step_lines(text, "EHLO")[-1]
    assert capabilities.split()[0] == "warn"
    assert "note: the server takes at most 33554432 bytes (32.0 MiB) but mailer:maxMessageBytes is 67108864 bytes" in text

    code, text = run("--stack", "staging", "--send-to", "ada@example.com", env_password=SECRET)
    assert code == 0, text
    assert status_of(text, "AUTH") == ["ok"] and status_of(text, "send") == ["ok"]
    [message] = server.messages
    assert message.mail_from == "noreply@acme.example"  # the stack's mailer:defaultFrom

    code, text = run("--stack", "nope")
    assert code == 2 and "no stack file stacks/Pulumi.nope.yaml; stacks here: staging" in text


def test_stack_with_a_bad_setting_exits_2_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "STACKS_DIR", tmp_path / "stacks")
    monkeypatch.setattr(check, "REPO_ROOT", tmp_path)
    write_stack(tmp_path / "stacks", "bad", "smtp://mailer@smtp.example.com:465")
    code, text = run("--stack", "bad")
    assert code == 2
    assert "mailer:smtpConnectionUri uses smtp:// with port 465" in text and "use smtps:// for 465" in text


# -- Postfix ---------------------------------------------------------------------------------------


def test_postfix_capabilities_auth_and_delivery(postfix_server: PostfixServer) -> None:
    code, text = run("--uri", postfix_server.uri(POSTFIX_USER), "--send-to", "grace@example.com",
                     "--from", "check@example.com", "--json", env_password=POSTFIX_PASSWORD)
    document = json.loads(text)
    assert code == 0 and document["ok"], text
    steps = document["steps"]
    assert [step["step"] for step in steps] == ["DNS", "TCP", "greeting", "EHLO", "TLS", "EHLO", "AUTH", "send"]
    assert "ESMTP Postfix (mailer tests)" in steps[2]["detail"]
    assert "offers STARTTLS" in steps[3]["detail"]
    capabilities = steps[5]["data"]["capabilities"]
    assert capabilities["PIPELINING"] is True and capabilities["8BITMIME"] is True and capabilities["DSN"] is True
    assert capabilities["SMTPUTF8"] is True and capabilities["ENHANCEDSTATUSCODES"] is True
    assert isinstance(capabilities["SIZE"], int) and capabilities["SIZE"] > 0
    assert {"PLAIN", "LOGIN"} <= set(capabilities["AUTH"])
    assert steps[6]["data"]["method"] == "PLAIN"
    message_id = steps[7]["data"]["message_id"]
    received = postfix_server.wait_for_message("grace@example.com", message_id)
    assert received["Subject"].startswith("mailer check: 127.0.0.1 works")


def test_postfix_wrong_password(postfix_server: PostfixServer) -> None:
    code, text = run("--uri", postfix_server.uri(POSTFIX_USER), password="not-" + POSTFIX_PASSWORD,
                     secrets=(POSTFIX_PASSWORD,))
    assert code == 1 and status_of(text, "AUTH") == ["FAIL"] and "535" in text, text


# -- the command ---------------------------------------------------------------------------------


def command(*argv: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "SMTP_PASSWORD"}
    return subprocess.run([sys.executable, "-m", "ops.check", *argv], cwd=ROOT, env={**environment, **(env or {})},
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_command_line_help_exit_codes_and_no_secret(smtp_server: Callable[..., SmtpTestServer]) -> None:
    shown = command("--help")
    assert shown.returncode == 0 and "--password-stdin" in shown.stdout and "Exit codes" in shown.stdout
    assert "$SMTP_OAUTH2_REFRESH_TOKEN and $SMTP_OAUTH2_CLIENT_SECRET" in shown.stdout  # how XOAUTH2 is checked
    assert command().returncode == 2  # neither --stack nor --uri
    assert command("--uri", "http://x").returncode == 2
    server = smtp_server(tls="starttls", users={USER: SECRET})
    done = command("--uri", server.uri(USER), "--password-stdin", stdin=SECRET + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    failed = command("--uri", server.uri(USER), env={"SMTP_PASSWORD": SECRET + "x"})
    assert failed.returncode == 1 and "FAIL  AUTH" in failed.stdout
    for output in (done.stdout + done.stderr, failed.stdout + failed.stderr):
        for form in secret_forms(SECRET) + secret_forms(SECRET + "x"):
            assert form not in output


def test_redactor_masks_the_password_and_its_base64() -> None:
    redact = check.Redactor()
    redact.add(SECRET)
    echoed = f"535 bad {SECRET} / {base64.b64encode(SECRET.encode()).decode()}"
    assert SECRET not in redact(echoed) and redact(echoed).count(check.MASK) == 2


def test_uri_with_a_password_is_never_shown(smtp_server: Callable[..., SmtpTestServer]) -> None:
    server = smtp_server(tls="implicit", users={USER: SECRET})
    code, text = run("--uri", server.uri(USER, SECRET), "--json", secrets=(SECRET,))
    assert code == 0 and "password from the URI" in text, text


def test_a_server_that_echoes_the_password_is_masked(smtp_server: Callable[..., SmtpTestServer]) -> None:
    # A broken server that quotes the credentials back in its refusal: the output shows ****** instead.
    encoded = base64.b64encode(f"\0{USER}\0{SECRET}".encode()).decode()
    server = smtp_server(tls="implicit", users={USER: SECRET},
                         behaviour=Behaviour(auth_reply=f"535 5.7.8 bad credentials {SECRET} ({encoded})"))
    code, text = run("--uri", server.uri(USER), password=SECRET)
    assert code == 1 and f"535 5.7.8 bad credentials {check.MASK} ({check.MASK})" in text, text


def test_stack_with_a_provider_preset_checks_the_resolved_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No connection here (the hosts are the providers' own): the URI the program would hand the function.
    monkeypatch.setattr(check, "STACKS_DIR", tmp_path / "stacks")
    monkeypatch.setattr(check, "REPO_ROOT", tmp_path)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    base = textwrap.dedent("""\
        config:
          gcp:project: acme-mailer-check
          mailer:region: us-central1
          mailer:firestoreLocation: nam5
          mailer:defaultFrom: "Acme <noreply@acme.example>"
          mailer:resourcePrefix: acme-mail
        """)
    (stacks / "Pulumi.gmail.yaml").write_text(base + "  mailer:smtpProvider: gmail\n  mailer:smtpUser: acme.mailer@gmail.com\n")
    target = check.stack_target("gmail", SECRET, "SMTP_PASSWORD")
    settings = target.settings
    assert (settings.scheme, settings.host, settings.port, settings.username) == ("smtps", "smtp.gmail.com", 465, "acme.mailer@gmail.com")
    assert check.shown_uri(settings) == "smtps://acme.mailer%40gmail.com@smtp.gmail.com:465" and target.provider == "gmail"
    # Gmail's 535 for an account password names the app password, from the preset alone.
    assert "app password" in check.cause_for_auth(535, "535 5.7.8 Username and Password not accepted", settings, "gmail", "")

    (stacks / "Pulumi.m365.yaml").write_text(base + "".join(f"  {line}\n" for line in (
        "mailer:smtpProvider: microsoft365",
        "mailer:smtpUser: mailer@acme.example",
        "mailer:oauth2TokenUrl: https://login.microsoftonline.com/acme.example/oauth2/v2.0/token",
        "mailer:oauth2ClientId: 00000000-1111-2222-3333-444444444444",
    )))
    target = check.stack_target("m365", None, None)
    settings = target.settings
    assert (settings.scheme, settings.host, settings.port, settings.auth_method) == ("smtp", "smtp.office365.com", 587, "XOAUTH2")
    assert settings.oauth2_client_id == "00000000-1111-2222-3333-444444444444"
    assert target.oauth2_note is not None and "--secret acme-mail-oauth2-refresh-token --project acme-mailer-check" in target.oauth2_note


def test_a_resolver_that_does_not_answer_fails_dns_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one stand-in here: a resolver that hangs cannot be started per process (it is resolv.conf's).
    release = threading.Event()

    def hanging_lookup(*_: object, **__: object) -> list[object]:
        release.wait(10)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(check.socket, "getaddrinfo", hanging_lookup)
    started = time.monotonic()
    try:
        code, text = run("--uri", f"smtps://{USER}@smtp.slow-dns.example:465", "--timeout", "0.5", password=SECRET)
    finally:
        release.set()
    assert code == 1 and time.monotonic() - started < 5, text
    assert "FAIL  DNS" in text and "no answer within 0.5s" in text and "resolver does not answer" in text
